"""Pictures a person would rather look at than read: the loss curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def loss_curve(records: list[dict], path: Path, title: str = "training loss") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in records if "loss" in r])
    loss = np.array([r["loss"] for r in records if "loss" in r])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if len(loss):
        ax.plot(steps, loss, lw=0.6, alpha=0.35, label="L1 per step")
        window = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.6, label=f"mean of {window}")
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if val:
        ax.plot(*zip(*val), "o-", lw=1.2, label="validation L1")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("L1 on normalized actions")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if len(loss) or val:  # a checkpoint can come before the first logged step
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
