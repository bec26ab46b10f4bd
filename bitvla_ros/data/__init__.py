"""Datasets: episode-atomic writers (LeRobot v3.0 by default, v2.1) and reader, statistics, chunked training samples.

ChunkedSamples and chunked_samples need torch and loads on first use, so that the recorder imports no torch.
"""

from bitvla_ros.data.fs import DatasetWriteError
from bitvla_ros.data.layout import DatasetError
from bitvla_ros.data.meta import rebuild_meta
from bitvla_ros.data.reader import Episode, EpisodeDataset, EpisodeFrames, open_datasets
from bitvla_ros.data.stats import compute_statistics
from bitvla_ros.data.v3 import DatasetWriter
from bitvla_ros.data.writer import DatasetWriterV21

__all__ = ["ChunkedSamples", "chunked_samples", "DatasetError", "DatasetWriteError", "DatasetWriter", "DatasetWriterV21", "Episode", "EpisodeDataset",
           "EpisodeFrames", "compute_statistics", "open_datasets", "rebuild_meta"]


def __getattr__(name: str):
    if name in ("ChunkedSamples", "chunked_samples"):
        from bitvla_ros.data import samples
        return getattr(samples, name)
    raise AttributeError(f"module 'bitvla_ros.data' has no attribute {name!r}")
