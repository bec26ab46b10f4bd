"""Action and proprio normalization with dataset statistics (BOUNDS_Q99, docs/model.md).

`dataset_statistics.json` is keyed by dataset name; under each key, `action` and `proprio` hold
per-dimension mean/std/min/max/q01/q99 (and `mask` for actions: True where a dimension is
normalized; the gripper is False and passes through untouched).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPS = 1e-8


class NormStatsError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class NormStats:
    key: str
    action_q01: np.ndarray
    action_q99: np.ndarray
    action_mask: np.ndarray  # bool
    proprio_q01: np.ndarray | None = None
    proprio_q99: np.ndarray | None = None
    action_min: np.ndarray | None = None
    action_max: np.ndarray | None = None

    @property
    def action_dim(self) -> int:
        return len(self.action_q01)

    @property
    def proprio_dim(self) -> int | None:
        return None if self.proprio_q01 is None else len(self.proprio_q01)

    # --- loading -----------------------------------------------------------------------------

    @classmethod
    def from_entry(cls, key: str, entry: dict) -> "NormStats":
        try:
            a = entry["action"]
            q01, q99 = np.asarray(a["q01"], np.float64), np.asarray(a["q99"], np.float64)
            mask = np.asarray(a.get("mask", [True] * len(q01)), bool)
        except (KeyError, TypeError) as e:
            raise NormStatsError(f"statistics for {key!r} lack action q01/q99 ({e}); expected the published "
                                 "dataset_statistics.json layout") from None
        if not (len(q01) == len(q99) == len(mask)):
            raise NormStatsError(f"statistics for {key!r}: action q01/q99/mask lengths differ "
                                 f"({len(q01)}, {len(q99)}, {len(mask)})")
        p = entry.get("proprio") or {}
        arr = lambda d, k: None if k not in d else np.asarray(d[k], np.float64)  # noqa: E731
        return cls(key, q01, q99, mask, arr(p, "q01"), arr(p, "q99"), arr(a, "min"), arr(a, "max"))

    @classmethod
    def load(cls, source: str | Path | dict, key: str | None = None) -> "NormStats":
        """Statistics for ``key`` from a dataset_statistics.json (file, model folder or dict).

        The key resolves as the published eval does: exactly, then with ``_no_noops`` appended; with
        no key and a single entry, that entry.
        """
        table = load_statistics_table(source)
        keys = sorted(table)
        if key is None:
            if len(keys) != 1:
                raise NormStatsError(f"the statistics hold several datasets {keys}; choose one as the unnorm key")
            key = keys[0]
        for candidate in (key, f"{key}_no_noops"):
            if candidate in table:
                return cls.from_entry(candidate, table[candidate])
        raise NormStatsError(f"no statistics for unnorm key {key!r}; available keys: {keys}")

    # --- transforms ----------------------------------------------------------------------------

    def normalize_proprio(self, state: np.ndarray) -> np.ndarray:
        """s' = clip(2(s − q01)/(q99 − q01 + ε) − 1, −1, 1) on every dimension."""
        if self.proprio_q01 is None:
            raise NormStatsError(f"statistics {self.key!r} have no proprio entry, but the model uses proprio")
        state = np.asarray(state, np.float64)
        if state.shape[-1] != self.proprio_dim:
            raise ValueError(f"proprio has {state.shape[-1]} values, the statistics expect {self.proprio_dim}")
        return np.clip(2 * (state - self.proprio_q01) / (self.proprio_q99 - self.proprio_q01 + EPS) - 1, -1, 1)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Training targets: masked dims to [−1, 1] by q01/q99 (constant dims to 0), others as is."""
        actions = np.asarray(actions, np.float64)
        norm = np.clip(2 * (actions - self.action_q01) / (self.action_q99 - self.action_q01 + EPS) - 1, -1, 1)
        if self.action_min is not None and self.action_max is not None:
            norm = np.where(self.action_min == self.action_max, 0.0, norm)
        return np.where(self.action_mask, norm, actions)

    def unnormalize_actions(self, normalized: np.ndarray) -> np.ndarray:
        """a = ½(a' + 1)(q99 − q01 + ε) + q01 where the mask is True; the gripper passes through."""
        normalized = np.asarray(normalized, np.float64)
        if normalized.shape[-1] != self.action_dim:
            raise ValueError(f"actions have {normalized.shape[-1]} dims, the statistics expect {self.action_dim}")
        raw = 0.5 * (normalized + 1) * (self.action_q99 - self.action_q01 + EPS) + self.action_q01
        return np.where(self.action_mask, raw, normalized)


def load_statistics_table(source: str | Path | dict) -> dict:
    if isinstance(source, dict):
        return source
    path = Path(source)
    if path.is_dir():
        path = path / "dataset_statistics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no dataset statistics at {path}; a model folder needs dataset_statistics.json "
                                "(written by training) to un-normalize actions")
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise NormStatsError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(table, dict) or not table:
        raise NormStatsError(f"{path} holds no dataset entries")
    return table
