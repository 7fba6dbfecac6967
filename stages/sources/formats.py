"""The dataset registry: recognise a source's extracted layout and read it into arrays.

Each raw format is one entry of FORMATS: a test that recognises the extracted
folder and a reader returning a :class:`RawData`. `prepare` then applies the
dataset's own settings (classes, colour, size, splits) the same way for all.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.core.errors import DataError


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
    from stages.sources.generate import CIFAR10_CLASSES
    from stages.sources.readers.cifar import read_cifar_python

    folder = _find(root, "cifar-10-batches-py")
    x_train, y_train, x_test, y_test, classes = read_cifar_python(folder)
    return RawData(x_train, y_train, x_test, y_test, list(classes) or CIFAR10_CLASSES)


def _split_image_folder(root: Path, size: tuple[int, int] | None, color: str) -> RawData:
    from stages.sources.readers.images import read_split_image_folder

    out = read_split_image_folder(_split_base(root), size or (32, 32), color="rgb", progress="decode")
    return RawData(out["x_train"], out["y_train"], out["x_test"], out["y_test"], out["classes"], out["skipped"])


def _pets(root: Path, size: tuple[int, int] | None, color: str, options: dict | None = None) -> RawData:
    """Oxford-IIIT Pet images + trimaps (segmentation); ``options.species``: dog (default), cat or all."""
    from stages.sources.readers.pets import CLASSES, read_pets

    species = (options or {}).get("species", "dog")
    x_train, y_train, x_test, y_test, skipped = read_pets(root, size or (96, 96), species=species)
    return RawData(x_train, y_train, x_test, y_test, list(CLASSES), skipped)


def _is_pets(root: Path) -> bool:
    from stages.sources.readers.pets import find_layout

    return find_layout(root) is not None


def _find_file(root: Path, *patterns: str) -> Path | None:
    hits = sorted(p for pattern in patterns for p in root.rglob(pattern) if p.is_file())
    return hits[0] if hits else None


def _class_names(y: np.ndarray, options: dict | None) -> list[str]:
    """``options.class_names`` (params.yaml), else the label numbers as names."""
    names = (options or {}).get("class_names")
    count = int(y.max()) + 1 if len(y) else 0
    if names:
        if len(names) < count:
            raise DataError(f"options.class_names: {len(names)} names, but the labels go up to {count - 1}")
        return [str(n) for n in names]
    return [str(i) for i in range(count)]


def _mnist_idx(root: Path, size: tuple[int, int] | None, color: str, options: dict | None = None) -> RawData:
    """MNIST-family IDX files (Fashion-MNIST's official names; ``-idx3-ubyte`` or ``.idx3-ubyte``)."""
    from stages.sources.readers.tabular import read_idx

    def pair(prefix: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        images = _find_file(root, f"{prefix}-images?idx3-ubyte", f"{prefix}-images?idx3-ubyte.gz")
        labels = _find_file(root, f"{prefix}-labels?idx1-ubyte", f"{prefix}-labels?idx1-ubyte.gz")
        if images is None or labels is None:
            return None, None
        x, y = read_idx(images), read_idx(labels).astype(np.int64)
        if x.ndim != 3 or y.shape != (len(x),):
            raise DataError(f"{images}: {x.shape} images do not match {labels}: {y.shape} labels")
        if len(y) and y.min() < 0:
            raise DataError(f"{labels}: label {int(y.min())} at item {int(y.argmin())} is negative")
        return x[..., None], y

    x_train, y_train = pair("train")
    if x_train is None:
        raise DataError(f"{root}: train-images-idx3-ubyte found without train-labels-idx1-ubyte")
    x_test, y_test = pair("t10k")
    return RawData(x_train, y_train, x_test, y_test, _class_names(y_train, options))


def _label_csv(root: Path, size: tuple[int, int] | None, color: str, options: dict | None = None) -> RawData:
    """Kaggle pixel CSVs: ``train.csv`` (label + pixels) and ``test.csv`` (labelled or not).

    An unlabelled test.csv (a competition's) cannot be scored: the dataset's ``test_fraction``
    then splits a test set off train.
    """
    from stages.sources.readers.tabular import read_label_csv

    x_train, y_train = read_label_csv(_find_file(root, "train.csv"))
    if y_train is None:
        raise DataError(f"{_find_file(root, 'train.csv')}: no label column")
    test = _find_file(root, "test.csv")
    x_test, y_test = read_label_csv(test) if test else (None, None)
    if y_test is None:
        x_test = None
    return RawData(
        x_train[..., None],
        y_train,
        None if x_test is None else x_test[..., None],
        y_test,
        _class_names(y_train, options),
    )


def _split_base(root: Path) -> Path | None:
    """The folder (at any depth: archives add their own top folders) holding both train/ and test/."""
    return next((p.parent for p in sorted(root.rglob("train")) if p.is_dir() and (p.parent / "test").is_dir()), None)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def find_class_root(root: Path, max_depth: int = 4) -> Path | None:
    """The shallowest folder (``root`` or below) with at least two class sub-folders holding images.

    Kaggle zips nest it (``natural-images/natural_images/<class>/``); some hold two copies
    (``natural_images/`` and ``data/natural_images/``): the first by name wins.
    """
    level = [root] if root.is_dir() else []
    for _ in range(max_depth + 1):
        for folder in level:
            if sum(_has_images(d) for d in _visible_dirs(folder)) >= 2:
                return folder
        level = [d for folder in level for d in _visible_dirs(folder)]
    return None


def _image_folder(root: Path, size: tuple[int, int] | None, color: str) -> RawData:
    """``<class>/<image files>`` (class = folder name, any format OpenCV reads; no test split:
    the dataset's ``test_fraction`` makes one). Stray and corrupt files are skipped and listed."""
    from stages.sources.readers.images import read_image_folder

    base = find_class_root(root)
    out = read_image_folder(base, size, color="rgb", progress=f"decode {base.name}")
    prefix = base.relative_to(root).as_posix()
    skipped = [(f"{prefix}/{f}" if prefix != "." else f, reason) for f, reason in out["skipped"]]
    return RawData(out["x"], out["y"], None, None, out["classes"], skipped)


# First match wins: order from most to least specific layout.
FORMATS: list[tuple[str, Callable[[Path], bool], Callable[..., RawData]]] = [
    ("cifar_python", lambda root: _find(root, "cifar-10-batches-py") is not None, _cifar_python),
    ("oxford_pets", _is_pets, _pets),
    ("mnist_idx", lambda root: _find_file(root, "train-images?idx3-ubyte*") is not None, _mnist_idx),
    ("label_csv", lambda root: _find_file(root, "train.csv") is not None, _label_csv),
    ("split_image_folder", lambda root: _split_base(root) is not None, _split_image_folder),
    ("image_folder", lambda root: find_class_root(root) is not None, _image_folder),  # the least specific
]


def read_raw(
    root: Path, size: tuple[int, int] | None = None, color: str = "rgb", options: dict | None = None
) -> tuple[str, RawData]:
    """Detect the layout under ``root`` (an extracted source) and read it.

    ``options`` (a dataset's ``options:`` in params.yaml) go to readers that take them.
    """
    if not root.is_dir():
        raise DataError(f"{root}: extracted data not found (run `dvc repro` from the start)")
    for name, recognise, reader in FORMATS:
        if recognise(root):
            takes_options = options and "options" in inspect.signature(reader).parameters
            return name, reader(root, size, color, **({"options": options} if takes_options else {}))
    known = ", ".join(name for name, _, _ in FORMATS)
    raise DataError(f"{root}: no known dataset layout found (expected one of: {known})")
