"""Dataset statistics in two formats.

- BitVLA's `dataset_statistics.json` (docs/checkpoints.md): per-dimension mean, std, min,
  max, q01, q99 of action and proprio over all frames, the action mask (False = not normalized, e.g.
  the gripper), num_transitions, num_trajectories. q01/q99 are numpy quantiles (linear), std is the
  population std, as the published `get_dataset_statistics`.
- LeRobot's per-feature {min, max, mean, std, count} per episode (meta/episodes_stats.jsonl) and
  aggregated over episodes (meta/stats.json), for the numeric features (images are not included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def feature_stats(x: np.ndarray) -> dict:
    """LeRobot per-feature statistics of (T,) or (T, D) values; scalars give 1-element lists."""
    x = np.asarray(x, np.float64)
    x = x.reshape(len(x), -1)
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [len(x)]}


def aggregate_stats(per_episode: Sequence[dict]) -> dict:
    """Combine per-episode statistics {feature: stats} into whole-dataset ones (pooled variance)."""
    out = {}
    for key in per_episode[0] if per_episode else ():
        parts = [ep[key] for ep in per_episode]
        means = np.array([p["mean"] for p in parts], np.float64)
        n = np.array([p["count"][0] for p in parts], np.float64).reshape(-1, *[1] * (means.ndim - 1))
        mean = (n * means).sum(0) / n.sum()
        var = (n * (np.array([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(0) / n.sum()
        out[key] = {"min": np.min([p["min"] for p in parts], 0).tolist(),
                    "max": np.max([p["max"] for p in parts], 0).tolist(),
                    "mean": mean.tolist(), "std": np.sqrt(var).tolist(), "count": [int(n.sum())]}
    return out


def statistics_entry(actions: np.ndarray, states: np.ndarray, num_trajectories: int,
                     action_mask: Sequence[bool] | None = None) -> dict:
    """One dataset's entry of dataset_statistics.json from all frames' (N, A) actions and (N, S) states."""
    actions, states = np.asarray(actions, np.float64), np.asarray(states, np.float64)
    if len(actions) == 0:
        raise ValueError("no frames to compute statistics from; record at least one episode")
    mask = check_action_mask(action_mask, actions.shape[1])

    def describe(x: np.ndarray) -> dict:
        q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
        return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "max": x.max(0).tolist(),
                "min": x.min(0).tolist(), "q01": q01.tolist(), "q99": q99.tolist()}

    return {"action": {**describe(actions), "mask": mask}, "proprio": describe(states),
            "num_transitions": int(len(actions)), "num_trajectories": int(num_trajectories)}


def check_action_mask(action_mask: Sequence[bool] | None, action_dim: int) -> list[bool]:
    """The mask as a list of bools; None means every dimension is normalized."""
    if action_mask is None:
        return [True] * action_dim
    mask = list(action_mask)
    if len(mask) != action_dim or not all(isinstance(m, (bool, np.bool_)) for m in mask):
        raise ValueError(f"action_mask is {mask}; expected {action_dim} booleans, one per action dimension "
                         "(False for dimensions left unnormalized, such as a 0/1 gripper)")
    return [bool(m) for m in mask]


def compute_statistics(dataset, action_mask: Sequence[bool] | None = None, name: str | None = None,
                       episodes: Sequence[int] | None = None) -> dict:
    """{name: entry} in the published dataset_statistics.json format, over ``episodes`` (default all).

    ``dataset`` is an EpisodeDataset or its root folder. The mask and name default to the ones the
    dataset was recorded with (its own dataset_statistics.json), else all-True and the folder name.
    """
    if isinstance(dataset, (str, Path)):
        from bitvla_ros.data.reader import EpisodeDataset
        dataset = EpisodeDataset(dataset)
    return compute_statistics_of([dataset], action_mask, name, None if episodes is None else [episodes])


def compute_statistics_of(datasets: Sequence, action_mask: Sequence[bool] | None = None, name: str | None = None,
                          episodes: Sequence[Sequence[int]] | None = None) -> dict:
    """Statistics over the chosen episodes of several datasets together (recorded separately,
    trained on together); name and mask default to the first dataset's."""
    loaded = []
    for k, dataset in enumerate(datasets):
        chosen = range(len(dataset.episodes)) if episodes is None else list(episodes[k])
        loaded += [dataset.frames(i, images=False) for i in chosen]
    if not loaded:
        raise ValueError("no episodes to compute statistics from")
    if action_mask is None:
        action_mask = datasets[0].action_mask
    entry = statistics_entry(np.concatenate([e.action for e in loaded]), np.concatenate([e.state for e in loaded]),
                             len(loaded), action_mask)
    return {name or datasets[0].name: entry}
