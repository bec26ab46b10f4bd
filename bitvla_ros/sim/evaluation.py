"""Evaluation results: success per task with a confidence interval, per env seed and pooled over the
seeds, latency, and a bar chart."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at small n and at 0 or n successes)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def summarize(episodes: list[dict]) -> dict:
    """Per task and overall: trials, successes, rate, 95% CI, mean steps of successes."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for e in episodes:
        by_task[e["instruction"]].append(e)
    rows = {}
    for name, eps in list(by_task.items()) + [("all tasks", episodes)]:
        k, n = sum(e["success"] for e in eps), len(eps)
        lo, hi = wilson_interval(k, n)
        steps = [e["steps"] for e in eps if e["success"]]
        rows[name] = {"trials": n, "successes": k, "rate": k / n if n else 0.0, "ci95": [lo, hi],
                      "mean_steps_success": float(np.mean(steps)) if steps else None}
    return rows


def summarize_by_seed(episodes: list[dict]) -> dict[str, dict]:
    """{seed: summarize(that seed's episodes)}, seeds in the order they ran (keys are strings, as in JSON)."""
    seeds = list(dict.fromkeys(e["seed"] for e in episodes))
    return {str(s): summarize([e for e in episodes if e["seed"] == s]) for s in seeds}


def seed_table(per_seed: dict[str, dict], pooled: dict) -> dict:
    """{task: {"seed S": row, ..., "pooled": row}}: the layout of a grouped chart and of `bitvla compare`."""
    return {task: {**{f"seed {s}": rows[task] for s, rows in per_seed.items() if task in rows}, "pooled": row}
            for task, row in pooled.items()}


def format_summary(rows: dict) -> str:
    lines = [f"{'task':50s} {'success':>9s} {'rate':>6s} {'95% CI':>15s} {'steps':>6s}"]
    for name, r in rows.items():
        steps = f"{r['mean_steps_success']:.0f}" if r["mean_steps_success"] is not None else "-"
        lines.append(f"{name[:50]:50s} {r['successes']:>4d}/{r['trials']:<4d} {r['rate'] * 100:5.1f}% "
                     f"[{r['ci95'][0] * 100:5.1f}, {r['ci95'][1] * 100:5.1f}] {steps:>6s}")
    return "\n".join(lines)


def latency_stats(seconds: list[float]) -> dict:
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1e3
    return {"count": int(ms.size), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on robots and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rate_bars(rows: list[dict]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Success rates in % and their 95% intervals as matplotlib's (below, above) error bars."""
    rates = np.array([r["rate"] for r in rows]) * 100
    return rates, [rates - np.array([r["ci95"][0] for r in rows]) * 100,
                   np.array([r["ci95"][1] for r in rows]) * 100 - rates]


def save_rate_chart(fig, ax, path: Path, title: str, groups: list[str], top: float = 105) -> Path:
    """Axes, labels and file shared by the success charts; closes the figure."""
    ax.set_xticks(range(len(groups)), [wrap_label(g) for g in groups], fontsize=8)
    ax.set_ylim(0, top)
    ax.set_ylabel("success rate (%), 95% CI")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path


def success_chart(rows: dict, path: Path, title: str) -> Path:
    names = list(rows)
    rates, err = rate_bars([rows[n] for n in names])
    fig, ax = pyplot().subplots(figsize=(max(5, 1.6 * len(names)), 4), dpi=120)
    colors = ["#4c72b0"] * (len(names) - 1) + ["#55a868"]
    ax.bar(range(len(names)), rates, yerr=err, capsize=4, color=colors)
    for i, n in enumerate(names):
        ax.text(i, 2, f"{rows[n]['successes']}/{rows[n]['trials']}", ha="center", color="white", fontsize=9)
    return save_rate_chart(fig, ax, path, title, names)


def grouped_rate_chart(table: dict, path: Path, title: str) -> Path:
    """Grouped bars: one group per task, one bar per label (run, seed), 95% Wilson intervals."""
    tasks, labels = list(table), list(dict.fromkeys(label for row in table.values() for label in row))
    width = 0.8 / len(labels)
    fig, ax = pyplot().subplots(figsize=(max(6, 1.2 * len(tasks) * len(labels) / 2 + 2), 4.2), dpi=120)
    for j, label in enumerate(labels):
        present = [i for i, t in enumerate(tasks) if label in table[t]]
        rows = [table[tasks[i]][label] for i in present]
        rates, err = rate_bars(rows)
        x = np.array(present) + (j - (len(labels) - 1) / 2) * width
        ax.bar(x, rates, width * 0.95, yerr=err, capsize=3, label=label)
        for xi, r in zip(x, rows):
            ax.text(xi, 2, f"{r['successes']}/{r['trials']}", ha="center", fontsize=7, rotation=90,
                    color="white" if r["rate"] >= 0.15 else "black")  # readable on an empty bar too
    ax.legend(fontsize=8, loc="upper center", ncol=len(labels))
    return save_rate_chart(fig, ax, path, title, tasks, top=118)  # headroom for the legend


def wrap_label(text: str, width: int = 18) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])
