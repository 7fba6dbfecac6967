"""Atomic outputs: an interrupted or failed write never replaces a complete earlier output."""

import errno

import numpy as np
import pytest

from stages import io
from stages.io import OutputError, atomic_path, load_npy, save_npy, write_json


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

    monkeypatch.setattr(io.json, "dumps", full)
    with pytest.raises(OutputError, match=r"cannot write .*metrics.json: No space left on device"):
        write_json(path, {"accuracy": 0.1})
    assert '"accuracy": 0.9' in path.read_text()


def test_read_only_folder_is_reported(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io.tempfile, "mkdtemp", forbidden)
    with pytest.raises(OutputError, match="Read-only file system"):
        save_npy(tmp_path / "x.npy", np.zeros(3))


def test_prepared_arrays_never_unpickle(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npy(tmp_path / "obj.npy")
