"""Run by test_train_ddp.py, alone or under `torchrun`: `bitvla train`'s loop (train/oft.py) as is,
watched from outside. Each process writes, in OUT, the sample indices it read and its first and
final (master) weights: rank{R}.json, init{R}.pt and rank{R}.pt.

    python ddp_helpers.py CONFIG_JSON OUT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bitvla_ros.train import batches, oft  # noqa: E402


def main(config: str, out: str) -> None:
    out = Path(out)
    rank = int(os.environ.get("RANK", "0"))
    seen, captured = [], {}
    real_getitem = batches.EncodedSamples.__getitem__

    def getitem(self, index):
        seen.append(int(index))
        return real_getitem(self, index)

    batches.EncodedSamples.__getitem__ = getitem
    real_optimizer = oft._optimizer

    def optimizer(cfg):
        make = real_optimizer(cfg)

        def wrapped(model):  # the model being trained, on every rank
            captured["model"] = model
            torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, out / f"init{rank}.pt")
            return make(model)
        return wrapped

    oft._optimizer = optimizer
    real_shutdown = oft.shutdown

    def shutdown():
        torch.save({k: v.detach().cpu() for k, v in captured["model"].state_dict().items()}, out / f"rank{rank}.pt")
        (out / f"rank{rank}.json").write_text(json.dumps(seen))
        real_shutdown()

    oft.shutdown = shutdown
    oft.train(oft.TrainConfig(**json.loads(config)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
