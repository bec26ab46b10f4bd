"""Side by side: several `bitvla eval` results on the same tasks, with a test of each against the first.

Success counts of a few dozen episodes are noisy; a table of rates alone invites reading a 3-episode
difference as a finding. Each run is therefore compared with the first one (the baseline) by
Fisher's exact test on its 2×2 table of successes and failures, two-sided.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bitvla_ros.sim.evaluation import grouped_rate_chart


def load_results(path: str | Path) -> dict:
    """results.json of `bitvla eval`, given the file or its output folder."""
    path = Path(path).expanduser()
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no results.json at {path}: pass a `bitvla eval --output` folder or its results.json")
    return json.loads(file.read_text())


def load_runs(specs: list[str]) -> dict[str, dict]:
    """{label: results} from "FOLDER" or "LABEL=FOLDER" specs; a bare folder is labelled by its name."""
    runs = {}
    for spec in specs:
        label, _, path = spec.rpartition("=")
        path = Path(path)
        runs[label or (path.name if path.is_dir() else path.parent.name)] = load_results(path)
    if len(runs) != len(specs):
        raise ValueError(f"two runs have the same label in {specs}; name them LABEL=FOLDER")
    return runs


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test for successes k1/n1 vs k2/n2: the probability, with
    the margins fixed, of a table at most as likely as the one observed."""
    total, successes = n1 + n2, k1 + k2

    def prob(a: int) -> float:
        return math.comb(n1, a) * math.comb(n2, successes - a) / math.comb(total, successes)

    observed = prob(k1)
    lo, hi = max(0, successes - n2), min(n1, successes)
    p = sum(q for q in (prob(a) for a in range(lo, hi + 1)) if q <= observed * (1 + 1e-9))
    return min(1.0, p)


def compare(runs: dict[str, dict]) -> dict:
    """{task: {label: {successes, trials, rate, ci95, p_vs_baseline}}} for the tasks every run has;
    the first run is the baseline."""
    labels = list(runs)
    tasks = [t for t in runs[labels[0]]["summary"] if all(t in r["summary"] for r in runs.values())]
    if not tasks:
        raise ValueError(f"the runs share no task: {[list(r['summary']) for r in runs.values()]}")
    table: dict[str, dict] = {}
    for task in tasks:
        base = runs[labels[0]]["summary"][task]
        table[task] = {}
        for label in labels:
            row = runs[label]["summary"][task]  # rate and ci95 as `bitvla eval` summarized them
            table[task][label] = {**{k: row[k] for k in ("successes", "trials", "rate", "ci95")},
                                  "p_vs_baseline": fisher_exact(row["successes"], row["trials"],
                                                                base["successes"], base["trials"])}
    return table


def format_comparison(table: dict) -> str:
    labels = list(next(iter(table.values())))
    width = max(13, *(len(label) for label in labels))
    lines = [f"{'task':36s} " + " ".join(f"{label:>{width}s}" for label in labels),
             f"{'':36s} " + " ".join(f"{'(baseline)' if i == 0 else 'p vs baseline':>{width}s}"
                                     for i in range(len(labels)))]
    for task, row in table.items():
        lines.append(f"{task[:36]:36s} " + " ".join(
            f"{r['successes']:>3d}/{r['trials']:<3d}{r['rate'] * 100:4.0f}%".rjust(width) for r in row.values()))
        lines.append(f"{'':36s} " + " ".join(
            ("" if i == 0 else f"p={r['p_vs_baseline']:.2f}").rjust(width) for i, r in enumerate(row.values())))
    return "\n".join(lines)


def write_comparison(table: dict, out: Path, title: str) -> tuple[Path, Path]:
    """comparison.json and comparison.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
    return out / "comparison.json", grouped_rate_chart(table, out / "comparison.png", title)


SETTINGS = ("suite", "init_start", "seeds", "image_size", "execute_steps", "protocol", "max_steps")


def setting(config: dict, key: str):
    """An evaluation setting of a results.json config; results written before multi-seed runs have `seed`."""
    if key == "seeds" and "seeds" not in config and "seed" in config:
        return [config["seed"]]
    return config.get(key)


def differing_settings(runs: dict[str, dict]) -> dict[str, dict]:
    """Evaluation settings that are not the same in every run (a comparison across them is suspect)."""
    out = {}
    for key in SETTINGS:
        values = {label: setting(r.get("config", {}), key) for label, r in runs.items()}
        if len(set(map(json.dumps, values.values()))) > 1:
            out[key] = values
    return out
