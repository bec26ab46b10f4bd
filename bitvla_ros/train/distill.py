"""`bitvla distill`: distillation-aware training of the 1.58-bit vision encoder (docs/distillation/).

The teacher is the encoder in full precision (quantization off); the student is the same encoder
with W1.58-A8 linears, initialised from the teacher. The loss is

    task_weight · L1(actions)  +  align_weight · Σ_l ‖h_s^l − h_t^l‖² / ‖h_t^l‖²  (mean over layers)

where h^l are the hidden states after every encoder layer (the last one is what the projector
reads). The paper states only that student and teacher latent representations are aligned; we
align every layer, each normalised by the teacher's energy so that deep layers with large
activations do not drown the early ones. The task loss needs a VLA checkpoint and a recorded
dataset; with images alone (a dataset's frames or any folder of pictures) it is alignment only.
Only the student encoder trains; the rest of the VLA stays as it is.

Writes like `bitvla train`: checkpoints (+ resume), metrics.jsonl, loss.png, and the VLA with the
distilled encoder in published (master) and packed form.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bitvla_ros.model.runtime import copy_runtime
from bitvla_ros.model.checkpoint import load_published, save_packed, save_published
from bitvla_ros.model.vision import VisionEncoder
from bitvla_ros.train import checkpoints
from bitvla_ros.train.augment import augment
from bitvla_ros.train.plots import loss_curve
from bitvla_ros.train.schedule import lr_factor
from bitvla_ros.train.settings import DistillConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


# --- teacher, student, losses ----------------------------------------------------------------------

def teacher_and_student(encoder: VisionEncoder) -> tuple[VisionEncoder, VisionEncoder]:
    """Full-precision teacher and W1.58-A8 student, both with the given encoder's weights."""
    fp = replace(encoder.config, weight_bits=32, act_bits=32)
    q = replace(encoder.config, weight_bits=1, act_bits=8)
    n = len(encoder.layers)
    teacher, student = VisionEncoder(fp, num_layers=n), VisionEncoder(q, num_layers=n)
    teacher.load_state_dict(encoder.state_dict())
    student.load_state_dict(encoder.state_dict())
    teacher.requires_grad_(False)
    return teacher.eval(), student


def alignment_loss(student_states: list[torch.Tensor], teacher_states: list[torch.Tensor]) -> torch.Tensor:
    """Mean over encoder layers of the relative squared error (the embeddings, identical in both
    models' full-precision patch stem, are skipped)."""
    losses = [((s - t) ** 2).mean() / (t ** 2).mean().clamp(min=1e-8)
              for s, t in zip(student_states[1:], teacher_states[1:])]
    return torch.stack(losses).mean()


@torch.no_grad()
def feature_agreement(student: VisionEncoder, teacher: VisionEncoder, pixels: torch.Tensor) -> dict:
    """How close the student's final features are to the teacher's: cosine (per token) and MSE."""
    s, t = student(pixels), teacher(pixels)
    cos = F.cosine_similarity(s, t, dim=-1).mean().item()
    mse = F.mse_loss(s, t).item()
    rel = (((s - t) ** 2).mean() / (t ** 2).mean()).item()
    return {"cosine": cos, "mse": mse, "relative_mse": rel}


# --- images --------------------------------------------------------------------------------------

def load_images(sources: list[str], limit: int = 20000, seed: int = 0) -> list[np.ndarray]:
    """RGB uint8 images from folders of pictures and/or recorded datasets (every camera, frames
    subsampled evenly so that at most `limit` are held)."""
    from bitvla_ros.data import EpisodeDataset

    images: list[np.ndarray] = []
    for src in sources:
        path = Path(src).expanduser()
        if (path / "meta" / "info.json").is_file():
            ds = EpisodeDataset(path)
            per_episode = max(1, limit // max(1, len(ds.episodes) * len(ds.camera_names)))
            for e in ds.episodes:
                frames = ds.frames(e.index)
                for t in np.linspace(0, len(frames) - 1, min(per_episode, len(frames))).astype(int):
                    images.extend(frames.image(cam, int(t)) for cam in ds.camera_names)
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                img = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if img is not None:
                    images.append(np.ascontiguousarray(img[..., ::-1]))
        else:
            raise FileNotFoundError(f"{path} is neither a recorded dataset nor a folder of images")
    if not images:
        raise ValueError(f"no images found in {sources}")
    rng = np.random.default_rng(seed)
    if len(images) > limit:
        images = [images[i] for i in rng.choice(len(images), limit, replace=False)]
    return images


def pixel_batch(images: list[np.ndarray], preprocess, rng: np.random.Generator, batch: int, aug: bool) -> torch.Tensor:
    idx = rng.integers(0, len(images), batch)
    return torch.stack([preprocess(augment(images[i], rng) if aug else images[i]) for i in idx])


# --- the loop ------------------------------------------------------------------------------------

def distill(cfg: DistillConfig) -> Path:
    from bitvla_ros.model.processor import BitVLAProcessor
    from bitvla_ros.model.tokenizer import load_tokenizer

    torch.manual_seed(cfg.seed)
    run = Path(cfg.output).expanduser()
    run.mkdir(parents=True, exist_ok=True)
    vla = load_published(cfg.model)
    processor = BitVLAProcessor(vla.config, load_tokenizer(cfg.model))
    teacher, student = teacher_and_student(vla.vision)
    resume_from = checkpoints.latest_checkpoint(run) if cfg.resume else None

    task, datasets = None, []
    if cfg.dataset:
        from bitvla_ros.data import chunked_samples, open_datasets
        from bitvla_ros.model.normalize import NormStats
        from bitvla_ros.train.batches import EncodedSamples, SampleEncoder, collate
        from bitvla_ros.train.oft import check_fits

        datasets = open_datasets(cfg.dataset)
        check_fits(vla.config, datasets[0])
        stats = NormStats.load(cfg.model)  # the model's own statistics, as it was trained with them
        samples = EncodedSamples(chunked_samples(datasets, vla.config.action_chunk),
                                 SampleEncoder(processor, stats, image_aug=True))
        sampler = torch.utils.data.RandomSampler(samples, replacement=True, num_samples=10**9)
        task = iter(torch.utils.data.DataLoader(samples, batch_size=cfg.batch_size, sampler=sampler,
                                                collate_fn=lambda items: collate(processor, items)))
    sources = cfg.images or [str(ds.root) for ds in datasets]
    images = load_images(sources, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    held_out = pixel_batch(images, processor.preprocess_image, np.random.default_rng(10_000 + cfg.seed),
                           min(cfg.eval_images, 256), aug=False)
    baseline = feature_agreement(student, teacher, held_out)  # = naive post-training ternarization

    # The VLA used for the task loss sees the student encoder; everything else is frozen.
    vla_q = copy.deepcopy(vla)
    vla_q.config = replace(vla.config, vision=replace(vla.config.vision, weight_bits=1, act_bits=8))
    vla_q.vision = student
    vla_q.requires_grad_(False)
    student.requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    step = 0
    if resume_from is not None:
        state = torch.load(resume_from / checkpoints.STATE_FILE, map_location="cpu", weights_only=True)
        student.load_state_dict(load_published(resume_from).vision.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        rng = np.random.default_rng([cfg.seed, step])
        print(f"resuming {run} from step {step}")
    (run / "distill_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    print(f"distilling a {len(student.layers)}-layer encoder ({sum(p.numel() for p in student.parameters()) / 1e6:.2f} M "
          f"params) on {len(images)} images{' + the task loss' if task else ''}; before: "
          f"cosine {baseline['cosine']:.4f}, relative MSE {baseline['relative_mse']:.4f} (naive ternarization)")

    bar = tqdm(total=cfg.steps, initial=step, desc="distill", unit="step", dynamic_ncols=True)
    spent = checkpoints.rewind_metrics(run, step) if resume_from is not None else 0.0
    start = time.perf_counter() - spent  # elapsed_s counts across resumes
    while step < cfg.steps:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg.warmup, cfg.steps)
        pixels = pixel_batch(images, processor.preprocess_image, rng, cfg.batch_size, aug=True)
        _, s_states = student(pixels, output_hidden_states=True)
        with torch.no_grad():
            _, t_states = teacher(pixels, output_hidden_states=True)
        align = alignment_loss(s_states, t_states)
        loss = cfg.align_weight * align
        record = {"step": step + 1, "align_loss": align.item()}
        if task is not None:
            batch = next(task)
            target = batch.pop("actions")
            task_loss = F.l1_loss(vla_q(**batch), target)
            loss = loss + cfg.task_weight * task_loss
            record["task_loss"] = task_loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        record["loss"] = loss.item()
        bar.update(1)
        bar.set_postfix(align=f"{align.item():.4f}")
        if step % 10 == 0 or step == cfg.steps:
            checkpoints.append_metrics(run, record | {"elapsed_s": time.perf_counter() - start})
        if step % cfg.save_every == 0 or step == cfg.steps:
            agreement = feature_agreement(student, teacher, held_out)
            checkpoints.append_metrics(run, {"step": step, **{f"held_out_{k}": v for k, v in agreement.items()}})
            checkpoints.save_checkpoint(run, step, vla_q, optimizer, json.loads((Path(cfg.model) /
                                        "dataset_statistics.json").read_text()), Path(cfg.model))
            loss_curve(checkpoints.read_metrics(run), run / "loss.png", title=f"bitvla distill: {run.name}")
    bar.close()
    final = feature_agreement(student, teacher, held_out)
    report = {"naive_ternarization": baseline, "distilled": final, "steps": step,
              "seconds": round(time.perf_counter() - start, 1)}
    (run / "agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    out = run / "model"
    save_published(vla_q, run / "master", step=step,
                   stats=json.loads((Path(cfg.model) / "dataset_statistics.json").read_text()), tokenizer_dir=cfg.model)
    packed = copy.deepcopy(vla_q).eval().to_deploy("reference", dtype=torch.bfloat16)
    save_packed(packed, out, stats=Path(cfg.model) / "dataset_statistics.json", tokenizer_dir=cfg.model)
    copy_runtime(cfg.model, out)
    print(f"held-out features vs the full-precision teacher: cosine {baseline['cosine']:.4f} -> {final['cosine']:.4f}, "
          f"relative MSE {baseline['relative_mse']:.4f} -> {final['relative_mse']:.4f}; model in {out}")
    return out

