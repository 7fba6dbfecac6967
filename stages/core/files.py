"""Atomic file output: a stage never leaves a half-written file where DVC would take it as done."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import DataError, PipelineError

# Write failures that the user fixes outside the program: say so in one line.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
# numpy's ndarray.tofile (np.save of a plain array) on a full disk: fwrite's short count, as an OSError without errno
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


class OutputError(PipelineError):
    """An output could not be written (disk full, read-only or forbidden folder)."""


# mkdtemp's random part: 8 of [a-z0-9_]; the temporary's name is ``.<target>.<pid>.<random>.tmp``.
_TMP_RANDOM = r"[a-z0-9_]{8}"
# ``.<name>.<pid>.<random>.tmp/<name>``, the folder a block writes into: shown as ``<name>`` in errors
_TMP_PART = re.compile(rf"\.([^/]+)\.\d+\.{_TMP_RANDOM}\.tmp/\1(?=/|$)")


def _alive(pid: int) -> bool:
    """True if process ``pid`` exists (or cannot be told apart from one that does)."""
    if pid <= 0:
        return True  # never a writer's pid: keep the folder rather than guess
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed runs left next to ``target``; return them.

    Only ``.<target name>.<pid>.<random>.tmp`` whose process is gone, and the pid-less
    ``.<target name>.<random>.tmp`` of earlier versions, are touched.
    """
    target = Path(target)
    name = re.escape(target.name)
    ours = re.compile(rf"\.{name}\.(\d+)\.{_TMP_RANDOM}\.tmp")
    legacy = re.compile(rf"\.{name}\.{_TMP_RANDOM}\.tmp")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = ours.fullmatch(entry.name)
        if not (legacy.fullmatch(entry.name) or (match and not _alive(int(match.group(1))))):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``target`` only if the block succeeds.

    The temporary lives in the same folder so the final ``os.replace`` is atomic.  Its name
    carries this process's id, so that the next run can remove what a killed one left
    (:func:`remove_stale_temporaries`).
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
        inner = tmp / target.name
        if is_dir:
            inner.mkdir()
        yield inner
        if target.is_dir() and not target.is_symlink():
            # a folder cannot be replaced in one step: move the old one aside (put back in `finally` on failure)
            os.replace(target, tmp / ".old")
        os.replace(inner, target)
    except OSError as exc:
        reason = _write_failure(exc, target.parent)
        if reason:
            shown = _TMP_PART.sub(r"\1", str(target))  # a file of an enclosing atomic folder: its final name
            raise OutputError(f"cannot write {shown}: {reason} (earlier outputs are left as they were)") from exc
        raise
    finally:
        if tmp is not None:
            old = tmp / ".old"
            # stopped between the two renames (a failure, or Ctrl-C at any point): the earlier folder goes back
            if os.path.lexists(old) and not os.path.lexists(target):
                os.replace(old, target)
            shutil.rmtree(tmp, ignore_errors=True)


def _write_failure(exc: OSError, folder: Path) -> str | None:
    """Why a write failed, when the user fixes it outside the program (a full disk, a forbidden folder); else None."""
    if exc.errno in _WRITE_ERRNOS:
        return exc.strerror
    if exc.errno is None and _SHORT_WRITE.search(str(exc)):
        # numpy drops fwrite's errno: a disk with no block left is the usual cause, say so when it is
        try:
            full = os.statvfs(folder).f_bavail == 0
        except OSError:
            full = False
        return os.strerror(errno.ENOSPC) if full else f"the write stopped short ({exc})"
    return None


def sha256(path: str | os.PathLike) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
    """Load a prepared array; never unpickles (prepared data holds plain arrays only).

    A missing, corrupt or pickle-bearing (object array) file raises :class:`DataError` naming it.
    """
    hint = "(was it replaced? re-run the stage that writes it)"
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except ValueError as exc:
        reason = "holds Python objects, not a plain array" if "bject" in str(exc) else "not a valid .npy file"
        raise DataError(f"{path}: {reason} {hint}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise DataError(f"{path}: an .npz archive, not a .npy array {hint}")
    return array
