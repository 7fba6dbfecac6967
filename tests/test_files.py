"""Atomic outputs: an interrupted or failed write never replaces a complete earlier output."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.core import files
from stages.core.errors import DataError
from stages.core.files import OutputError, atomic_path, load_npy, save_npy, write_json


def test_failed_block_keeps_the_old_folder_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "prepared"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "x.npy").write_text("complete")
    with pytest.raises(RuntimeError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "x.npy").write_text("half")
        raise RuntimeError("killed")
    assert (target / "x.npy").read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_disk_full_is_one_clear_line_and_keeps_earlier_output(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.9})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.json, "dumps", full)
    with pytest.raises(OutputError, match=r"cannot write .*metrics.json: No space left on device"):
        write_json(path, {"accuracy": 0.1})
    assert '"accuracy": 0.9' in path.read_text()


def test_read_only_folder_is_reported(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkdtemp", forbidden)
    with pytest.raises(OutputError, match="Read-only file system"):
        save_npy(tmp_path / "x.npy", np.zeros(3))


@pytest.mark.parametrize("mmap", [False, True])
def test_prepared_arrays_never_unpickle_and_say_which_file(tmp_path, mmap):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: holds Python objects, not a plain array") as info:
        load_npy(tmp_path / "obj.npy", mmap=mmap)
    assert "\n" not in str(info.value)


def test_corrupt_missing_or_npz_arrays_are_one_line_naming_the_file(tmp_path):
    good = tmp_path / "y_test.npy"
    save_npy(good, np.arange(10))
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:-8])
    (tmp_path / "text.npy").write_text("not numpy at all")
    np.savez(tmp_path / "z.npy", a=np.zeros(2))  # np.savez adds .npz
    (tmp_path / "z.npy.npz").rename(tmp_path / "z.npy")
    for name in ("cut.npy", "text.npy", "z.npy", "missing.npy"):
        with pytest.raises(DataError, match=rf"{name}: ") as info:
            load_npy(tmp_path / name)
        assert "\n" not in str(info.value)
    np.testing.assert_array_equal(load_npy(good), np.arange(10))


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_next_run_removes_the_temporaries_of_killed_runs_only(tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".prepared.{dead}.abcd_123.tmp", tmp_path / ".prepared.k2j4h5g6.tmp"]  # ours, older
    live = tmp_path / f".prepared.{os.getpid()}.zzzzzzzz.tmp"  # a run in progress (this process)
    others = [tmp_path / f".other.{dead}.abcdefgh.tmp", tmp_path / ".prepared.notes", tmp_path / ".prepared.x.tmp"]
    for folder in (*stale, live, *others):
        folder.mkdir()
        (folder / "x.npy").write_text("half")
    with atomic_path(tmp_path / "prepared", is_dir=True) as tmp:
        (tmp / "x.npy").write_text("complete")
    assert not any(p.exists() for p in stale)
    assert live.is_dir() and all(p.exists() for p in others)
    assert (tmp_path / "prepared" / "x.npy").read_text() == "complete"


KILLED = """
import os, signal, sys
from stages.core.files import atomic_path
with atomic_path(sys.argv[1], is_dir=True) as tmp:
    (tmp / "x.npy").write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_leaves_a_temporary_that_a_rerun_removes(tmp_path):
    target = tmp_path / "prepared"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(target)], cwd=Path(__file__).parents[1])
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".prepared.") and left[0].endswith(".tmp")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "x.npy").write_text("complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
