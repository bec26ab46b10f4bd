"""`bitvla select`: choose a model's knobs (checkpoint, execute_steps) on validation states only.

Each candidate (a model folder or training checkpoint, times an `execute_steps` value) is evaluated
by `bitvla eval` on the same validation init states and env seeds; the one with the most pooled
successes is chosen, ties going to the candidate listed first (list the default you would pick
without data first). Choosing on the states and seeds that are then reported makes the reported
rate optimistic (the maximum of several noisy estimates), so the selection refuses init states or
seeds that overlap the test ones (bitvla_ros/sim/splits.py). With a few dozen validation episodes
candidates within a few successes of each other are not distinguishable; every candidate's Fisher
exact p-value against the chosen one is reported so that a reader can see it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bitvla_ros.sim.compare import compare
from bitvla_ros.sim.splits import check_apart

RULE = "most pooled successes on the validation episodes; ties: the candidate listed first"
# Settings that must match for a candidate's earlier results.json to be reused (a run across sittings).
SAME_RUN = ("model", "suite", "tasks", "init_start", "episodes", "seeds", "execute_steps", "image_size",
            "backend", "max_steps", "in_process", "protocol", "image_pipeline", "unnorm_key")


@dataclass(frozen=True)
class Candidate:
    label: str
    model: str
    execute_steps: int


def candidates(models: list[str], execute_steps: list[int]) -> list[Candidate]:
    """Every model with every execute_steps value, labelled `<model>/es<k>`, where <model> is the
    shortest tail of the folder path that tells the models apart (`a_step_1` for
    runs/a/checkpoints/step_1 beside runs/b/checkpoints/step_1)."""
    parts = [[p for p in Path(m).expanduser().resolve().parts if p != "checkpoints"] for m in models]
    for depth in range(1, max(map(len, parts)) + 1):
        labels = ["_".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            break
    else:
        raise ValueError(f"expected different model folders, got the same one twice in {models}")
    return [Candidate(f"{label}/es{k}", model, k) for model, label in zip(models, labels) for k in execute_steps]


def check_held_out(init_states, seeds, test_states, test_seeds) -> None:
    """Refuse a selection whose episodes share init states or env seeds with the reported ones."""
    check_apart(init_states, test_states, "selection init states", "the test states",
                "select on the validation split (--split validation, states 35-39)")
    check_apart(seeds, test_seeds, "selection env seeds", "the test seeds",
                "select on other seeds (e.g. --seeds 0,3) and report on the test seeds")


def reusable(results_file: Path, config: dict) -> bool:
    """An earlier results.json of the same candidate under the same settings (a selection resumed)."""
    if not results_file.is_file():
        return False
    earlier = json.loads(results_file.read_text()).get("config", {})
    return all(earlier.get(k) == config.get(k) for k in SAME_RUN)


def choose(runs: dict[str, dict]) -> str:
    """The label with the most pooled successes; the first listed among ties."""
    return max(runs, key=lambda label: (runs[label]["summary"]["all tasks"]["successes"], -list(runs).index(label)))


def selection(cands: list[Candidate], runs: dict[str, dict]) -> dict:
    """selection.json: the rule, the chosen candidate, and every candidate's figures per seed and pooled."""
    chosen = choose(runs)
    ordered = {chosen: runs[chosen], **{k: v for k, v in runs.items() if k != chosen}}
    table = compare(ordered)  # p-values against the chosen candidate
    by_label = {c.label: c for c in cands}
    rows = []
    for label, result in runs.items():
        pooled = result["summary"]["all tasks"]
        rows.append({"label": label, "model": by_label[label].model, "execute_steps": by_label[label].execute_steps,
                     **{k: pooled[k] for k in ("successes", "trials", "rate", "ci95")},
                     "per_seed": {s: {k: r["all tasks"][k] for k in ("successes", "trials")}
                                  for s, r in result.get("per_seed", {}).items()},
                     "p_vs_chosen": table["all tasks"][label]["p_vs_baseline"]})
    first = runs[chosen]
    return {"rule": RULE, "chosen": {"label": chosen, "model": by_label[chosen].model,
                                     "execute_steps": by_label[chosen].execute_steps},
            "evaluated_on": first.get("evaluated_on"), "candidates": rows, "per_task": table}


def format_selection(sel: dict) -> str:
    lines = [f"{'candidate':40s} {'success':>9s} {'rate':>6s} {'95% CI':>15s} {'p vs chosen':>11s}"]
    for r in sel["candidates"]:
        mark = " <- chosen" if r["label"] == sel["chosen"]["label"] else ""
        lines.append(f"{r['label'][:40]:40s} {r['successes']:>4d}/{r['trials']:<4d} {r['rate'] * 100:5.1f}% "
                     f"[{r['ci95'][0] * 100:5.1f}, {r['ci95'][1] * 100:5.1f}] {r['p_vs_chosen']:11.2f}{mark}")
    return "\n".join(lines)
