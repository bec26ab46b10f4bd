"""ChunkedSamples: training samples (current observation, next K actions), as OFT chunks them.

Item i is frame t of some episode: its decoded images (camera order), raw state, instruction and
the action chunk actions[t : t+K] (K x A). As in OFT (docs/model.md, Training), only frames with
K real actions from t on serve as the current frame, i.e. t <= length - K, so no chunk is padded
and an episode of length L gives L - K + 1 samples (none if L < K). With ``pad_last=True`` every
frame serves, and a chunk running past the end repeats the last action; use it for episodes
shorter than K.

Normalization and image preprocessing belong to training (NormStats, BitVLAProcessor): the
samples hold raw values. Encoded images are cached per episode once read (memory about the size
of the episode files), so shuffled access does not re-read parquet files; video frames are decoded
per sample with a seek to the nearest keyframe (open clips are kept per process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from bitvla_ros.data.reader import EpisodeDataset, EpisodeFrames


class ChunkedSamples(Dataset):
    def __init__(self, dataset: EpisodeDataset | str | Path, chunk: int = 8, camera_names: Sequence[str] | None = None,
                 episodes: Sequence[int] | None = None, pad_last: bool = False):
        self.dataset = dataset if isinstance(dataset, EpisodeDataset) else EpisodeDataset(dataset)
        if not (isinstance(chunk, (int, np.integer)) and chunk >= 1):
            raise ValueError(f"chunk is {chunk!r}; expected a positive number of actions per sample (OFT: 8)")
        self.chunk, self.pad_last = int(chunk), pad_last
        self.camera_names = list(self.dataset.camera_names if camera_names is None else camera_names)
        unknown = [c for c in self.camera_names if c not in self.dataset.camera_names]
        if unknown:
            raise ValueError(f"cameras {unknown} are not in the dataset; it has {self.dataset.camera_names}")
        self.episodes = list(range(len(self.dataset.episodes)) if episodes is None else episodes)
        bad = [e for e in self.episodes if not 0 <= e < len(self.dataset.episodes)]
        if bad:
            raise ValueError(f"episodes {bad} are out of range; the dataset has {len(self.dataset.episodes)}")
        lengths = np.array([self.dataset.episodes[e].length for e in self.episodes], np.int64)
        starts = lengths if pad_last else np.maximum(lengths - self.chunk + 1, 0)
        self._offsets = np.concatenate([[0], np.cumsum(starts)])  # sample offsets per listed episode
        if self._offsets[-1] == 0:
            raise ValueError(f"no samples: every chosen episode is shorter than the chunk of {self.chunk} actions "
                             f"(lengths {lengths.tolist()}); use pad_last=True or a smaller chunk")
        self._frames: dict[int, EpisodeFrames] = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(episode index, frame t) of sample i."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} is out of range; there are {len(self)}")
        i %= len(self)
        slot = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return self.episodes[slot], i - int(self._offsets[slot])

    def __getitem__(self, i: int) -> dict:
        episode, t = self.locate(int(i))
        frames = self._load(episode)
        idx = np.minimum(np.arange(t, t + self.chunk), len(frames) - 1)  # clamps only with pad_last
        return {
            "images": [frames.image(c, t) for c in self.camera_names],
            "state": frames.state[t],
            "instruction": frames.task,
            "actions": frames.action[idx],
            "episode_index": episode,
            "frame_index": t,
        }

    def _load(self, episode: int) -> EpisodeFrames:
        if episode not in self._frames:
            self._frames[episode] = self.dataset.frames(episode)
        return self._frames[episode]


def chunked_samples(datasets: Sequence[EpisodeDataset], chunk: int,
                    episodes: Sequence[Sequence[int] | None] | None = None) -> ConcatDataset:
    """The samples of several datasets (recorded with the same features) as one; `episodes`, one
    entry per dataset, picks episodes of each (default: all)."""
    episodes = [None] * len(datasets) if episodes is None else episodes
    return ConcatDataset([ChunkedSamples(ds, chunk=chunk, episodes=eps) for ds, eps in zip(datasets, episodes)])
