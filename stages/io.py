"""Atomic file output: a stage never leaves a half-written file where DVC would take it as done."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages.errors import PipelineError

# Write failures that the user fixes outside the program: say so in one line.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class OutputError(PipelineError):
    """An output could not be written (disk full, read-only or forbidden folder)."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``target`` only if the block succeeds.

    The temporary lives in the same folder so the final ``os.replace`` is atomic.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        inner = tmp / target.name
        if is_dir:
            inner.mkdir()
        yield inner
        if target.is_dir() and not target.is_symlink():
            # a folder cannot be replaced in one step: move the old one aside, put it back on failure
            old = tmp / ".old"
            os.replace(target, old)
            try:
                os.replace(inner, target)
            except OSError:
                os.replace(old, target)
                raise
        else:
            os.replace(inner, target)
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise OutputError(f"cannot write {target}: {exc.strerror} (earlier outputs are left as they were)") from exc
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_npy(path: str | os.PathLike, *, mmap: bool = False) -> np.ndarray:
    """Load a prepared array; never unpickles (prepared data holds plain arrays only)."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
