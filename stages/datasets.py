"""The dataset registry: recognise a source's extracted layout and read it into arrays.

Each raw format is one entry of FORMATS: a test that recognises the extracted
folder and a reader returning a :class:`RawData`. `prepare` then applies the
dataset's own settings (classes, colour, size, splits) the same way for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.errors import DataError


@dataclass
class RawData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def _find(root: Path, pattern: str) -> Path | None:
    hits = sorted(root.rglob(pattern))
    return hits[0] if hits else None


def _cifar_python(root: Path, size: tuple[int, int] | None, color: str) -> RawData:
    from stages.generate import CIFAR10_CLASSES
    from stages.readers.cifar import read_cifar_python

    folder = _find(root, "cifar-10-batches-py")
    x_train, y_train, x_test, y_test, classes = read_cifar_python(folder)
    return RawData(x_train, y_train, x_test, y_test, list(classes) or CIFAR10_CLASSES)


def _split_image_folder(root: Path, size: tuple[int, int] | None, color: str) -> RawData:
    from stages.readers.images import read_split_image_folder

    out = read_split_image_folder(root, size or (32, 32), color="rgb")
    return RawData(out["x_train"], out["y_train"], out["x_test"], out["y_test"], out["classes"], out["skipped"])


def _has_split_folders(root: Path) -> bool:
    return any(p.is_dir() and (p.parent / "test").is_dir() for p in root.rglob("train"))


# First match wins: order from most to least specific layout.
FORMATS: list[tuple[str, Callable[[Path], bool], Callable[..., RawData]]] = [
    ("cifar_python", lambda root: _find(root, "cifar-10-batches-py") is not None, _cifar_python),
    ("split_image_folder", _has_split_folders, _split_image_folder),
]


def read_raw(root: Path, size: tuple[int, int] | None = None, color: str = "rgb") -> tuple[str, RawData]:
    """Detect the layout under ``root`` (an extracted source) and read it."""
    if not root.is_dir():
        raise DataError(f"{root}: extracted data not found (run `dvc repro` from the start)")
    for name, recognise, reader in FORMATS:
        if recognise(root):
            return name, reader(root, size, color)
    known = ", ".join(name for name, _, _ in FORMATS)
    raise DataError(f"{root}: no known dataset layout found (expected one of: {known})")
