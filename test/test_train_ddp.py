"""`bitvla train` under `torchrun --nproc-per-node 2` (Gloo on CPU) on a LeRobot v3.0 dataset: the
ranks read disjoint samples, end with identical weights, and match one process with the same
total batch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_helpers import make_writer, record

HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp") / "toy"
    with make_writer(root, "v3.0") as w:
        for seed in range(3):
            record(w, seed, length=12, task=["put the bowl on the stove", "open the drawer"][seed % 2])
    return root


def run(cmd: list[str], out: Path, config: dict) -> None:
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run([*cmd, str(HERE / "ddp_helpers.py"), json.dumps({**config, "output": str(out / "run")}),
                           str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.skipif(not TORCHRUN.exists() and not shutil.which("torchrun"), reason="torchrun is not installed")
def test_two_processes_split_the_samples_and_agree(dataset, tmp_path, report):
    steps, per_rank = 3, 2
    config = {"dataset": str(dataset), "preset": "tiny", "steps": steps, "warmup": 1, "image_aug": False,
              "save_every": 100, "log_every": 1, "num_workers": 0, "threads": 1, "lr": 1e-3}
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    run([torchrun, "--standalone", "--nproc-per-node", "2"], tmp_path / "ddp", {**config, "batch_size": per_rank})
    run([sys.executable], tmp_path / "one", {**config, "batch_size": 2 * per_rank})

    # (the loop reads one batch past its last step before it stops: only the trained ones count)
    seen = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text())[:steps * per_rank] for r in (0, 1)]
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())[:steps * 2 * per_rank]
    assert len(seen[0]) == len(seen[1]) == steps * per_rank and len(single) == 2 * steps * per_rank
    assert not set(seen[0]) & set(seen[1])  # each rank its own share
    for s in range(steps):  # step by step, the two ranks read what the single process read
        both = seen[0][s * per_rank:(s + 1) * per_rank] + seen[1][s * per_rank:(s + 1) * per_rank]
        assert sorted(both) == sorted(single[s * 2 * per_rank:(s + 1) * 2 * per_rank])

    w0, w1, w = (torch.load(p, weights_only=True) for p in (tmp_path / "ddp" / "rank0.pt",
                                                           tmp_path / "ddp" / "rank1.pt", tmp_path / "one" / "rank0.pt"))
    assert w0.keys() == w1.keys() == w.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # DDP keeps the replicas identical
    init = torch.load(tmp_path / "one" / "init0.pt", weights_only=True)
    trained = max((w[k].float() - init[k].float()).abs().max().item() for k in w)
    moved = max((w0[k].float() - w[k].float()).abs().max().item() for k in w)
    assert moved < 0.02 * trained  # training moved the weights, and both runs moved them alike
    for k in w:
        torch.testing.assert_close(w0[k], w[k], rtol=1e-4, atol=1e-5, msg=f"{k}: DDP and one process differ "
                                   f"(largest difference over all weights {moved:.2e}, training moved {trained:.2e})")
    report(f"DDP (2 x batch 2) vs one process (batch 4), 3 steps: largest weight difference {moved:.2e}; training moved weights up to {trained:.2e}")
