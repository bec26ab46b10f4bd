"""`bitvla train`: a few OFT steps on a small recorded dataset, checkpoints, resume, and the export."""

import json

import numpy as np
import pytest
import torch

from data_helpers import make_writer, record
from bitvla_ros.cli import main
from bitvla_ros.model.checkpoint import load_packed
from bitvla_ros.model.predict import BitVLAPredictor
from bitvla_ros.train.augment import augment, random_crop
from bitvla_ros.train.schedule import lr_factor


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "toy"
    with make_writer(root, "v3.0") as w:  # the recorder's default: LeRobot v3.0, cameras as MP4
        for seed in range(4):
            record(w, seed, length=14, task=["put the bowl on the stove", "open the drawer"][seed % 2])
    return root


def test_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 10, 100) == 0.0 and lr_factor(5, 10, 100) == 0.5 and lr_factor(10, 10, 100) == 1.0
    assert lr_factor(55, 10, 100) == pytest.approx(0.5) and lr_factor(100, 10, 100) == pytest.approx(0.0)


def test_augmentation_keeps_shape_and_changes_pixels():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    out = augment(img, rng)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    flat = np.full((20, 20, 3), 77, np.uint8)
    assert np.array_equal(random_crop(flat, rng), flat)  # a crop of a flat image is flat


def test_train_checkpoints_resumes_and_exports_a_working_model(dataset, tmp_path):
    run = tmp_path / "run"
    common = ["train", "--dataset", str(dataset), "--output", str(run), "--preset", "tiny", "--batch-size", "4",
              "--warmup", "2", "--save-every", "3", "--log-every", "1", "--num-workers", "0", "--val-episodes", "1"]
    assert main(common + ["--steps", "3"]) == 0
    assert (run / "checkpoints" / "step_0000003" / "trainer_state.pt").is_file()
    with open(run / "metrics.jsonl", "a") as f:  # a run killed after logging step 4, before its checkpoint
        f.write(json.dumps({"step": 4, "loss": 9.0, "lr": 0.0, "elapsed_s": 1e6}) + "\n")
    assert main(common + ["--steps", "6", "--resume"]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run continued at step 4; the killed run's step 4 is gone
    elapsed = [m["elapsed_s"] for m in metrics if "loss" in m]
    assert elapsed == sorted(elapsed) and elapsed[-1] < 1e6  # training time keeps counting across the resume
    assert any("val_loss" in m for m in metrics)
    assert (run / "loss.png").stat().st_size > 1000
    model = load_packed(run / "model")
    assert model.deployed and model.config.num_images == 2 and model.config.action_dim == 7
    stats = json.loads((run / "model" / "dataset_statistics.json").read_text())
    assert list(stats) == ["toy_no_noops"] and stats["toy_no_noops"]["action"]["mask"][-1] is False
    from bitvla_ros.data.reader import EpisodeDataset
    from bitvla_ros.model.runtime import RuntimeSettings

    runtime, recorded = RuntimeSettings.load(run / "model"), EpisodeDataset(dataset)
    assert runtime.rate_hz == recorded.fps and runtime.action_names == recorded.action_names  # travels with it
    assert runtime.proprio_names == recorded.state_names
    assert RuntimeSettings.load(run / "checkpoints" / "step_0000006") == runtime
    predictor = BitVLAPredictor.from_pretrained(run / "model", backend="reference")
    images = [np.zeros((32, 40, 3), np.uint8)] * 2
    chunk = predictor.predict(images, "open the drawer", np.zeros(8))
    assert chunk.actions.shape == (8, 7) and np.isfinite(chunk.actions).all()


def test_train_keeps_the_latest_checkpoints_or_every_one(dataset, tmp_path):
    run = tmp_path / "run"
    common = ["train", "--dataset", str(dataset), "--output", str(run), "--preset", "tiny", "--batch-size", "2",
              "--warmup", "1", "--save-every", "1", "--num-workers", "0"]

    def kept():
        return sorted(d.name for d in (run / "checkpoints").iterdir())

    assert main(common + ["--steps", "3", "--keep-checkpoints", "0"]) == 0
    assert kept() == ["step_0000001", "step_0000002", "step_0000003"]  # every one, for `bitvla select`
    assert main(common + ["--steps", "5", "--resume"]) == 0
    assert kept() == ["step_0000004", "step_0000005"]  # the default: the latest two


def test_training_reduces_the_loss(dataset, tmp_path):
    run = tmp_path / "fit"
    torch.manual_seed(0)
    assert main(["train", "--dataset", str(dataset), "--output", str(run), "--preset", "tiny", "--batch-size", "8",
                 "--steps", "40", "--warmup", "5", "--lr", "3e-3", "--save-every", "40", "--log-every", "5",
                 "--num-workers", "0", "--no-image-aug"]) == 0
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_clear_error_for_a_missing_dataset(tmp_path, capsys):
    assert main(["train", "--dataset", str(tmp_path / "nope"), "--output", str(tmp_path / "run")]) == 2
    assert "bitvla train:" in capsys.readouterr().err


def test_train_on_two_datasets_recorded_alike(dataset, tmp_path, capsys):
    other = tmp_path / "other"
    with make_writer(other) as w:  # v2.1, trained on together with the v3.0 one
        record(w, 9, length=12, task="turn on the stove")
    run = tmp_path / "two"
    assert main(["train", "--dataset", str(dataset), "--dataset", str(other), "--output", str(run), "--preset", "tiny",
                 "--batch-size", "4", "--steps", "2", "--save-every", "2", "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "from 5 episodes (3 tasks)" in out
    stats = json.loads((run / "model" / "dataset_statistics.json").read_text())
    assert stats["toy_no_noops"]["num_trajectories"] == 5
    mismatched = tmp_path / "mismatched"
    with make_writer(mismatched, action_names=["a", "b", "c", "d", "e", "f", "g"]) as w:
        record(w, 1, length=12)
    assert main(["train", "--dataset", str(dataset), "--dataset", str(mismatched), "--output", str(tmp_path / "x"),
                 "--preset", "tiny", "--steps", "1", "--num-workers", "0"]) == 2
    assert "differ in action_names" in capsys.readouterr().err
