"""Crash-safe file writes: a temp file in the same folder, fsync, then os.replace.

A reader (or a process killed at any moment) sees either the old file or the new one, never a
half-written one. Temp files end in PARTIAL so that the next writer can sweep away leftovers.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Callable, IO

PARTIAL = ".partial"
LOCK = ".writer.lock"

_HINTS = {
    errno.ENOSPC: "the disk is full; free some space, then call save_episode() again (the episode is still in "
                  "memory) or discard_episode()",
    errno.EDQUOT: "the disk quota is exhausted; free some space, then call save_episode() again or discard_episode()",
    errno.EACCES: "the folder is not writable by this user; fix its permissions or choose another dataset root",
    errno.EPERM: "the folder is not writable by this user; fix its permissions or choose another dataset root",
    errno.EROFS: "the file system is read-only; choose a dataset root on a writable disk",
    errno.ENOTDIR: "a part of the path is a regular file, not a folder; choose another dataset root",
    errno.EEXIST: "a regular file is in the way of a folder; choose another dataset root",
}


class DatasetWriteError(OSError):
    """Writing the dataset failed; names the path and the OS reason, and says what to do."""

    def __init__(self, path: Path, cause: OSError, doing: str = "write"):
        code = cause.errno
        name = errno.errorcode.get(code, "unknown error") if code is not None else "unknown error"
        reason = cause.strerror or str(cause)
        hint = _HINTS.get(code, "check that the folder exists and is writable")
        super().__init__(code, f"could not {doing} {path}: {reason} ({name}); {hint}")
        self.filename = str(path)

    def __str__(self) -> str:
        return self.strerror


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that it appears whole or not at all.

    Raises DatasetWriteError; the temp file is removed and the old ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(path.name + PARTIAL)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise DatasetWriteError(path, e) from e
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable across a power cut (a kill -9 does not need it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetWriteError(folder, e, "create the folder") from e


def remove_partials(root: Path) -> list[Path]:
    """Delete temp files left by a writer that died mid-write; returns what was removed."""
    root = Path(root)
    found = [*root.glob("*" + PARTIAL), *root.glob(f"meta/*{PARTIAL}"), *root.glob(f"meta/*/*/*{PARTIAL}"),
             *root.glob(f"data/*/*{PARTIAL}"), *root.glob(f"videos/*/*/*{PARTIAL}")]
    for p in found:
        _remove_quietly(p)
    return found


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class WriterLock:
    """One writer per dataset at a time: an flock on root/.writer.lock, released by the OS on any exit,
    kill -9 included, so a crash never leaves the dataset locked."""

    def __init__(self, root: Path):
        path = Path(root) / LOCK
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DatasetWriteError(path, e, "create the lock file") from e
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RuntimeError(f"another DatasetWriter (this or another process) has {root} open; close it "
                               "first, or record into a different dataset root") from None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
