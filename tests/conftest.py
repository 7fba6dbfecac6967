"""Shared test helpers. Tests run from the repository root (pytest's rootdir)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import stages  # noqa: F401  (before any test module imports cv2: it sets OpenCV's image-size limit)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The workplace's real-data mirrors; a user's clone has none, so tests skip."""
    path = SHARED / "datasets"
    if not path.is_dir():
        pytest.skip("../shared/datasets is not present (only in the project's workplace)")
    return path
