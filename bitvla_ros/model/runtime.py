"""The settings a model was trained and evaluated with, kept beside its weights (`runtime.json`).

`bitvla train` writes them from the dataset (its rate and names) and its chunk; `bitvla eval
--execute-steps` results are meant to be copied in by whoever picks the setting. policy_node,
`bitvla eval` and `bitvla demo` read them through `RuntimeSettings.load`, the one reader: a node
parameter left at its "from the model" default takes the value from here, an explicit one wins.
The image pipeline travels in `config.json` (the processor's own settings), not here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

FILE = "runtime.json"
DEFAULT_CONTROL_RATE_HZ = 20.0  # LIBERO's control rate, and what a model without the file assumes


@dataclass(frozen=True)
class RuntimeSettings:
    execute_steps: int | None = None       # actions run open loop from each chunk (None: the whole chunk)
    control_rate_hz: float | None = None   # rate the actions were recorded at
    action_names: list[str] = field(default_factory=list)   # action dimensions, in model order
    proprio_names: list[str] = field(default_factory=list)  # proprio entries, in model order
    camera_names: list[str] = field(default_factory=list)   # what each model image was, in order

    @classmethod
    def load(cls, folder: str | Path) -> "RuntimeSettings":
        """The folder's runtime.json, or empty settings when it has none (older models)."""
        path = Path(folder).expanduser() / FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: expected a JSON object of runtime settings, could not read it ({e}); "
                             f"fix or delete the file") from e
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown runtime settings {unknown}; expected some of {sorted(known)}")
        return cls(**raw).validate(str(path))

    def validate(self, where: str = FILE) -> "RuntimeSettings":
        if self.execute_steps is not None and (not isinstance(self.execute_steps, int) or self.execute_steps < 1):
            raise ValueError(f"{where}: execute_steps must be a positive integer, got {self.execute_steps!r}")
        if self.control_rate_hz is not None and not float(self.control_rate_hz) > 0:
            raise ValueError(f"{where}: control_rate_hz must be positive, got {self.control_rate_hz!r}")
        return self

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        data = {k: v for k, v in asdict(self.validate()).items() if v not in (None, [])}
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def from_dataset(cls, dataset, execute_steps: int | None = None) -> "RuntimeSettings":
        """What a model trained on `dataset` runs with: its rate and names."""
        return cls(execute_steps=execute_steps, control_rate_hz=float(dataset.fps),
                   action_names=list(dataset.action_names), proprio_names=list(dataset.state_names),
                   camera_names=list(dataset.camera_names))

    def execute_steps_for(self, chunk: int) -> int:
        return min(self.execute_steps or chunk, chunk)

    @property
    def rate_hz(self) -> float:
        return float(self.control_rate_hz or DEFAULT_CONTROL_RATE_HZ)


def copy_runtime(src: str | Path, dst: str | Path) -> None:
    """Carry a model folder's runtime.json into a folder made from it (convert, distill)."""
    path = Path(src) / FILE
    if path.is_file():
        RuntimeSettings.load(src).save(dst)
