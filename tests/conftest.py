"""Shared test helpers. Tests run from the repository root (pytest's rootdir)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.core.cli import set_environment_defaults

# as every command does first: before any test module imports cv2 (OpenCV's image-size limit) or TensorFlow
set_environment_defaults()
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# TensorFlow's oneDNN notice (on CPUs where oneDNN is on by default): written as it loads, once per library, before
# its logging reads TF_CPP_MIN_LOG_LEVEL, so it is left as TensorFlow prints it (only switching oneDNN off drops it)
TF_ONEDNN_NOTICE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
)


def without_tf_notice(stderr: str) -> list[str]:
    """The lines of a command's ``stderr`` that are not TensorFlow's oneDNN notice: the command's own."""
    return [line for line in stderr.splitlines() if not any(notice in line for notice in TF_ONEDNN_NOTICE)]


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The workplace's real-data mirrors; a user's clone has none, so tests skip."""
    path = SHARED / "datasets"
    if not path.is_dir():
        pytest.skip("../shared/datasets is not present (only in the project's workplace)")
    return path


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder``, a disk that fills up; skips the test where mounting
    fails (it needs root, and in a container the capability to mount)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
