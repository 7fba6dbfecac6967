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
from tests.conftest import small_tmpfs


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


def _prepared_like(target: Path, array: np.ndarray) -> None:
    """What `prepare` does: arrays written one by one into an atomic folder."""
    with atomic_path(target, is_dir=True) as tmp:
        save_npy(tmp / "x_train.npy", array)
        write_json(tmp / "meta.json", {"complete": True})


def _earlier_output(target: Path) -> dict[str, bytes]:
    _prepared_like(target, np.arange(5, dtype=np.uint8))
    return {p.name: p.read_bytes() for p in target.iterdir()}


@pytest.mark.parametrize(
    ("free_blocks", "reason"),
    [(0, "No space left on device"), (100, "the write stopped short (2000000 requested and 1048448 written)")],
)
def test_numpys_short_write_is_one_line_naming_the_file(tmp_path, monkeypatch, free_blocks, reason):
    """np.save on a full disk: numpy reports fwrite's short count as an OSError without errno."""
    target = tmp_path / "prepared"
    before = _earlier_output(target)
    real_statvfs = os.statvfs

    def short_write(fh, array, **kwargs):
        fh.write(b"\x93NUMPY partial")
        raise OSError("2000000 requested and 1048448 written")

    def statvfs(path):
        stat = real_statvfs(path)
        return os.statvfs_result((*stat[:4], free_blocks, *stat[5:]))  # f_bavail

    monkeypatch.setattr(files.np, "save", short_write)
    monkeypatch.setattr(files.os, "statvfs", statvfs)
    with pytest.raises(OutputError) as err:
        _prepared_like(target, np.zeros(2_000_000, np.uint8))
    # named by its final path, not the temporary folder it was being written into
    assert str(err.value) == f"cannot write {target}/x_train.npy: {reason} (earlier outputs are left as they were)"
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"], "a temporary was left behind"


def test_other_errno_less_oserrors_are_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(OSError, match="cannot identify image") as err, atomic_path(tmp_path / "x.npy"):
        raise OSError("cannot identify image file")  # PIL's, inside a block: a read failure, not a write failure
    assert not isinstance(err.value, OutputError)


@pytest.fixture
def full_disk(tmp_path):
    with small_tmpfs(tmp_path / "tmpfs") as mount:
        yield mount


def test_a_real_full_disk_is_one_line_and_keeps_the_earlier_output(full_disk):
    target = full_disk / "prepared"
    before = _earlier_output(target)
    with pytest.raises(OutputError) as err:
        _prepared_like(target, np.zeros(2_000_000, np.uint8))  # twice the disk
    assert str(err.value) == (
        f"cannot write {target}/x_train.npy: No space left on device (earlier outputs are left as they were)"
    )
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in full_disk.iterdir()] == ["prepared"], "a temporary was left behind"


def test_ctrl_c_between_the_folder_renames_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    """Replacing a folder takes two renames (the old one aside, the new one in): stopped between them,
    the old one must not be deleted with the temporary."""
    target = tmp_path / "prepared"
    before = _earlier_output(target)
    real_replace, calls = os.replace, []

    def interrupted_second_rename(src, dst):
        calls.append(Path(dst).name)
        if calls == [".old", "prepared"]:  # the new folder's rename, after the old one's
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", interrupted_second_rename)
    with pytest.raises(KeyboardInterrupt), atomic_path(target, is_dir=True) as tmp:
        (tmp / "x_train.npy").write_text("new")
    assert calls[:2] == [".old", "prepared"], calls
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]
