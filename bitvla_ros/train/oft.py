"""`bitvla train`: OFT fine-tuning of BitVLA on recorded datasets (docs/model.md).

L1 regression on normalized action chunks from two cameras and proprio; AdamW (weight decay
0.01); linear warm-up then cosine decay; the OFT image augmentation; the ternary layers train in
QAT mode (fake-quant, straight-through). Writes to the run folder: checkpoints (master weights in
the published layout + optimizer state; `resume` continues from the latest), metrics.jsonl,
loss.png, and the final packed model in `model/` with its tokenizer, statistics and model card.
Runs as one process or under torchrun (DDP).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from bitvla_ros.data import EpisodeDataset, chunked_samples, open_datasets
from bitvla_ros.data.stats import compute_statistics_of
from bitvla_ros.model.bitvla import BitVLA
from bitvla_ros.model.checkpoint import load_published, save_packed
from bitvla_ros.model.runtime import RuntimeSettings
from bitvla_ros.model.config import BitVLAConfig, preset, with_vocab
from bitvla_ros.model.normalize import NormStats
from bitvla_ros.model.processor import BitVLAProcessor
from bitvla_ros.model.tokenizer import SYSTEM_PROMPT, build_tokenizer, load_tokenizer, save_tokenizer, token_ids, vocab_size
from bitvla_ros.train import checkpoints
from bitvla_ros.train.batches import EncodedSamples, SampleEncoder, collate
from bitvla_ros.train.distributed import init_runtime, shutdown
from bitvla_ros.train.plots import loss_curve
from bitvla_ros.train.schedule import lr_factor
from bitvla_ros.train.settings import TrainConfig


def _tokenizer(cfg: TrainConfig, tasks: list[str], run: Path):
    if cfg.init:
        return load_tokenizer(cfg.init)
    saved = run / "tokenizer" / "tokenizer.json"
    if saved.is_file():  # a resumed run keeps its tokenizer
        return load_tokenizer(saved)
    corpus = [SYSTEM_PROMPT, "User: ", "Assistant: "] + [f"What action should the robot take to {t.lower()}?"
                                                          for t in tasks]
    return build_tokenizer(corpus, vocab_size=cfg.vocab_size)


def _model_config(cfg: TrainConfig, dataset: EpisodeDataset, tok) -> BitVLAConfig:
    base = replace(preset(cfg.preset), num_images=len(dataset.camera_names), proprio_dim=len(dataset.state_names),
                   action_dim=len(dataset.action_names), center_crop=cfg.image_aug)
    if cfg.fp_vision:
        base = replace(base, vision=replace(base.vision, weight_bits=32, act_bits=32))
    return with_vocab(base, vocab_size(tok), token_ids(tok))


def check_fits(config: BitVLAConfig, dataset: EpisodeDataset) -> None:
    wanted = (len(dataset.camera_names), len(dataset.state_names), len(dataset.action_names))
    have = (config.num_images, config.proprio_dim, config.action_dim)
    if wanted != have:
        raise ValueError(f"the model takes {have[0]} images, {have[1]}-D proprio and {have[2]}-D actions; "
                         f"the dataset has {wanted[0]} cameras, {wanted[1]} state and {wanted[2]} action dims")


def _optimizer(cfg: TrainConfig):
    def make(model):
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
        rest = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    return make


@torch.no_grad()
def _validate(model, loader, device) -> float:
    model.eval()
    total, n = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        target = batch.pop("actions")
        total += F.l1_loss(model(**batch), target, reduction="sum").item()
        n += target.numel()
    model.train()
    return total / max(1, n)


def train(cfg: TrainConfig) -> Path:
    rt = init_runtime(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rt.rank)
    run = Path(cfg.output).expanduser()
    datasets = open_datasets(cfg.dataset)
    dataset = datasets[0]
    train_eps, val_eps = [], []
    for ds in datasets:  # the last `val_episodes` of every dataset are held out
        episodes = [e.index for e in ds.episodes]
        if cfg.val_episodes >= len(episodes):
            raise ValueError(f"val_episodes={cfg.val_episodes} leaves no training episodes out of {len(episodes)} "
                             f"in {ds.root}")
        train_eps.append(episodes[: len(episodes) - cfg.val_episodes])
        val_eps.append(episodes[len(train_eps[-1]):])
    stats = compute_statistics_of(datasets, action_mask=dataset.action_mask, episodes=train_eps)
    norm = NormStats.load(stats)
    tok = _tokenizer(cfg, sorted({t for ds in datasets for t in ds.tasks}), run)
    initial = load_published(cfg.init) if cfg.init else None
    config = initial.config if initial is not None else _model_config(cfg, dataset, tok)
    check_fits(config, dataset)
    runtime = RuntimeSettings.from_dataset(dataset)  # rate and names of the demonstrations, beside the weights
    processor = BitVLAProcessor(config, tok)
    if rt.main:
        run.mkdir(parents=True, exist_ok=True)
        save_tokenizer(tok, run / "tokenizer")
        (run / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    make_optimizer = _optimizer(cfg)
    latest = checkpoints.latest_checkpoint(run) if cfg.resume else None
    if latest is not None:
        model, optimizer, step = checkpoints.load_checkpoint(latest, make_optimizer)
        model.to(rt.device)
        if rt.main:
            print(f"resuming {run} from step {step} ({latest.name})")
    else:
        model = initial if initial is not None else BitVLA(config)
        model.to(rt.device).train()
        optimizer, step = make_optimizer(model), 0
    net = torch.nn.parallel.DistributedDataParallel(model) if rt.world > 1 else model

    samples = chunked_samples(datasets, config.action_chunk, train_eps)
    encoder = SampleEncoder(processor, norm, cfg.image_aug)
    data = EncodedSamples(samples, encoder)
    # A shuffled pass per epoch, split between the processes (each reads its own share): one process
    # with batch N*B sees, step by step, the samples N processes with batch B see together.
    sampler = torch.utils.data.distributed.DistributedSampler(data, num_replicas=rt.world, rank=rt.rank, seed=cfg.seed)
    if len(sampler) < cfg.batch_size:
        raise ValueError(f"{len(data)} samples give {len(sampler)} per process, fewer than batch_size "
                         f"{cfg.batch_size}; record more episodes, or lower the batch size")
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=cfg.num_workers, collate_fn=lambda items: collate(processor, items),
                                         persistent_workers=cfg.num_workers > 0)
    val_loader = None
    if cfg.val_episodes and rt.main:
        val = EncodedSamples(chunked_samples(datasets, config.action_chunk, val_eps),
                             SampleEncoder(processor, norm, image_aug=False))
        val_loader = torch.utils.data.DataLoader(val, batch_size=cfg.batch_size,
                                                 collate_fn=lambda items: collate(processor, items))

    if rt.main:
        n_params = sum(p.numel() for p in model.parameters())
        n_eps = sum(len(e) for e in train_eps)
        n_tasks = len({t for ds in datasets for t in ds.tasks})
        print(f"training {n_params / 1e6:.2f} M params on {len(samples)} samples from {n_eps} episodes "
              f"({n_tasks} tasks), {rt.world} process(es) on {rt.device}; steps {step} -> {cfg.steps}")
    bar = tqdm(total=cfg.steps, initial=step, disable=not rt.main, desc="train", unit="step", dynamic_ncols=True)
    # elapsed_s counts training time across resumes: start is moved back by the time already spent
    spent = checkpoints.rewind_metrics(run, step) if rt.main and latest is not None else 0.0
    epoch, start, losses = step // len(loader), time.perf_counter() - spent, []  # a resumed run goes on shuffling
    while step < cfg.steps:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for batch in loader:
            if step >= cfg.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, cfg.warmup, cfg.steps)
            batch = {k: v.to(rt.device) for k, v in batch.items()}
            target = batch.pop("actions")
            with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.device.type == "cuda"):
                loss = F.l1_loss(net(**batch).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            if rt.main and (step % cfg.log_every == 0 or step == cfg.steps):
                mean = sum(losses) / len(losses)
                bar.set_postfix(loss=f"{mean:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
                checkpoints.append_metrics(run, {"step": step, "loss": mean, "lr": optimizer.param_groups[0]["lr"],
                                                 "elapsed_s": time.perf_counter() - start})
                losses = []
            if rt.main and (step % cfg.save_every == 0 or step == cfg.steps):
                record = {"step": step}
                if val_loader is not None:
                    record["val_loss"] = _validate(model, val_loader, rt.device)
                    checkpoints.append_metrics(run, record)
                saved = checkpoints.save_checkpoint(run, step, model, optimizer, stats, run / "tokenizer",
                                                    keep=cfg.keep_checkpoints)
                runtime.save(saved)  # a checkpoint distilled or converted later keeps them
                loss_curve(checkpoints.read_metrics(run), run / "loss.png", title=f"bitvla train: {run.name}")
        epoch += 1
    bar.close()
    out = run / "model"
    if rt.main:
        export_packed(model, out, stats, run / "tokenizer", cfg, step, time.perf_counter() - start)
        runtime.save(out)
        print(f"done: {step} steps; packed model in {out}; loss curve {run / 'loss.png'}")
    shutdown()
    return out


def export_packed(model: BitVLA, out: Path, stats: dict, tokenizer_dir: Path, cfg: TrainConfig, step: int,
                  seconds: float) -> None:
    """The deployable result: packed weights (bf16 elsewhere), tokenizer, statistics, training facts."""
    deployed = copy.deepcopy(model).cpu().eval().to_deploy("reference", dtype=torch.bfloat16)
    save_packed(deployed, out, stats=stats, tokenizer_dir=tokenizer_dir)
    facts = {"steps": step, "train_seconds": round(seconds, 1), "config": asdict(cfg),
             "parameters": sum(p.numel() for p in model.parameters())}
    (out / "training.json").write_text(json.dumps(facts, indent=2) + "\n")

