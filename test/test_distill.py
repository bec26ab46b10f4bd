"""`bitvla distill` on a tiny encoder: the distilled 1.58-bit student ends closer to the
full-precision teacher than naive post-training ternarization, on held-out images."""

import json

import cv2
import numpy as np
import torch

import tiny
from bitvla_ros.cli import main
from bitvla_ros.model.checkpoint import load_packed, load_published
from bitvla_ros.train.distill import alignment_loss, teacher_and_student


def _pictures(folder, n=24):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(n):
        a, b, c = rng.uniform(0.05, 0.3, 3)
        img = np.stack([np.sin(a * xx + i) * 100 + 128, np.cos(b * yy) * 100 + 128, (c * (xx + yy) * 7) % 256], -1)
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), img.astype(np.uint8))
    return folder


def test_teacher_is_full_precision_and_student_starts_as_its_ternarization():
    model = tiny.model(seed=2)
    teacher, student = teacher_and_student(model.vision)
    assert not teacher.config.quantized and student.config.quantized
    assert all(not p.requires_grad for p in teacher.parameters())
    pixels = torch.rand(2, 3, 56, 56) * 2 - 1
    _, s = student(pixels, output_hidden_states=True)
    _, t = teacher(pixels, output_hidden_states=True)
    assert alignment_loss(t, t).item() == 0.0 and alignment_loss(s, t).item() > 0


def test_distilled_student_beats_naive_ternarization(tmp_path, report):
    folder = tiny.write_published_checkpoint(tmp_path / "fp", tiny.model(seed=4))
    images = _pictures(tmp_path / "pictures")
    torch.manual_seed(0)
    assert main(["distill", "--model", str(folder), "--output", str(tmp_path / "run"), "--images", str(images),
                 "--steps", "80", "--batch-size", "8", "--lr", "3e-3", "--warmup", "5", "--save-every", "40"]) == 0
    result = json.loads((tmp_path / "run" / "agreement.json").read_text())
    naive, distilled = result["naive_ternarization"], result["distilled"]
    report(f"tiny encoder, held-out features vs FP teacher: naive ternarization cosine {naive['cosine']:.4f} / "
           f"rel. MSE {naive['relative_mse']:.4f}; distilled cosine {distilled['cosine']:.4f} / "
           f"rel. MSE {distilled['relative_mse']:.4f}")
    assert distilled["cosine"] > naive["cosine"] and distilled["relative_mse"] < 0.8 * naive["relative_mse"]
    assert (tmp_path / "run" / "loss.png").is_file()
    assert load_published(tmp_path / "run" / "master").config.vision.quantized
    packed = load_packed(tmp_path / "run" / "model")
    assert packed.vision.layers[0].mlp.fc1.deployed  # the distilled encoder ships packed
    assert main(["distill", "--model", str(folder), "--output", str(tmp_path / "run"), "--images", str(images),
                 "--steps", "90", "--batch-size", "8", "--save-every", "40", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 90


def test_distill_with_the_task_loss_on_a_dataset(tmp_path):
    from data_helpers import make_writer, record

    folder = tiny.write_published_checkpoint(tmp_path / "fp", tiny.model(seed=4))
    datasets = []
    for k in range(2):  # --dataset repeats, as in `bitvla train`
        datasets += ["--dataset", str(tmp_path / f"ds{k}")]
        with make_writer(tmp_path / f"ds{k}", image_format="png") as w:
            record(w, k, length=12, task="put the bowl on the stove")
    assert main(["distill", "--model", str(folder), "--output", str(tmp_path / "run"), *datasets,
                 "--steps", "4", "--batch-size", "4", "--save-every", "4"]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("task_loss" in m for m in metrics)
    assert json.loads((tmp_path / "run" / "distill_config.json").read_text())["dataset"] == datasets[1::2]


def test_zero_steps_writes_the_naive_ternarization_baseline(tmp_path):
    fp = tiny.model(seed=4)
    folder = tiny.write_published_checkpoint(tmp_path / "fp", fp)
    assert main(["distill", "--model", str(folder), "--output", str(tmp_path / "run"),
                 "--images", str(_pictures(tmp_path / "pictures", n=6)), "--steps", "0"]) == 0
    result = json.loads((tmp_path / "run" / "agreement.json").read_text())
    assert result["distilled"] == result["naive_ternarization"] and result["steps"] == 0
    naive = load_published(tmp_path / "run" / "master")
    assert naive.config.vision.quantized  # the same weights, now read through the W1.58-A8 quantizers
    for name, w in fp.vision.state_dict().items():
        assert torch.equal(naive.vision.state_dict()[name], w), name
