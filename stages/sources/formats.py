"""The raw formats: read a source's extracted folder, in the layout params.yaml states, into arrays.

Each format of :data:`FORMATS` (``sources.<name>.format`` in params.yaml) has a reader with one
signature, ``read(root, options) -> RawData | EncodedImages``, that only reads: no resizing, no
colour conversion. Formats that store pixel arrays (CIFAR's batches, IDX, CSV) return them as
stored; formats of encoded image files (JPEG/PNG folders, the pets) return the files found, which
`prepare` decodes straight to the dataset's size (libjpeg then shrinks a JPEG in the DCT domain, a
fraction of the cost of decoding it whole). Class subsets, colour, size and splits are `prepare`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class EncodedImages:
    """Image files a reader found, not decoded: ``decode(size)`` reads them at ``size`` (height, width;
    None: as stored), RGB, with the files that do not decode skipped and listed."""

    decode: Callable[[tuple[int, int] | None], RawData]


Reader = Callable[[Path, Mapping[str, Any]], "RawData | EncodedImages"]


def _find_file(root: Path, *patterns: str) -> Path | None:
    hits = sorted(p for pattern in patterns for p in root.rglob(pattern) if p.is_file())
    return hits[0] if hits else None


def _class_names(y: np.ndarray, options: Mapping[str, Any]) -> list[str]:
    """``options.class_names`` (params.yaml), else the label numbers as names."""
    names = options.get("class_names")
    count = int(y.max()) + 1 if len(y) else 0
    if names:
        if len(names) < count:
            raise DataError(f"options.class_names: {len(names)} names, but the labels go up to {count - 1}")
        return [str(n) for n in names]
    return [str(i) for i in range(count)]


def _cifar_python(root: Path, options: Mapping[str, Any]) -> RawData:
    """``cifar-10-batches-py/`` (the official archive, extracted): the class names are its own."""
    from stages.sources.readers.cifar import BATCHES_DIR, read_cifar_python

    folder = next(p for p in sorted(root.rglob(BATCHES_DIR)) if p.is_dir())  # there: FORMATS' check found it
    x_train, y_train, x_test, y_test, classes = read_cifar_python(folder)
    return RawData(x_train, y_train, x_test, y_test, list(classes))


def _mnist_idx(root: Path, options: Mapping[str, Any]) -> RawData:
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


def _label_csv(root: Path, options: Mapping[str, Any]) -> RawData:
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


def _split_image_folder(root: Path, options: Mapping[str, Any]) -> EncodedImages:
    from stages.sources.readers.images import list_split_image_folder

    files = list_split_image_folder(_split_base(root))

    def decode(size: tuple[int, int] | None) -> RawData:
        out = files.decode(size, progress="decode")
        return RawData(out["x_train"], out["y_train"], out["x_test"], out["y_test"], out["classes"], out["skipped"])

    return EncodedImages(decode)


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


def _image_folder(root: Path, options: Mapping[str, Any]) -> EncodedImages:
    """``<class>/<image files>`` (class = folder name, any format OpenCV reads; no test split:
    the dataset's ``test_fraction`` makes one). Stray and corrupt files are skipped and listed."""
    from stages.sources.readers.images import list_image_folder

    base = find_class_root(root)
    files, prefix = list_image_folder(base), base.relative_to(root).as_posix()

    def decode(size: tuple[int, int] | None) -> RawData:
        out = files.decode(size, progress=f"decode {base.name}")
        skipped = [(f"{prefix}/{f}" if prefix != "." else f, reason) for f, reason in out["skipped"]]
        return RawData(out["x"], out["y"], None, None, out["classes"], skipped)

    return EncodedImages(decode)


def _pets(root: Path, options: Mapping[str, Any]) -> EncodedImages:
    """Oxford-IIIT Pet images + trimaps (segmentation); ``options.species``: dog (default), cat or all."""
    from stages.sources.readers.pets import CLASSES, list_pets

    files = list_pets(root, species=options.get("species", "dog"))

    def decode(size: tuple[int, int] | None) -> RawData:
        x_train, y_train, x_test, y_test, skipped = files.decode(size)
        return RawData(x_train, y_train, x_test, y_test, list(CLASSES), skipped)

    return EncodedImages(decode)


def _is_pets(root: Path) -> bool:
    from stages.sources.readers.pets import find_layout

    return find_layout(root) is not None


@dataclass(frozen=True)
class RawFormat:
    layout: str  # what a folder in this format holds, for the error when it does not
    found: Callable[[Path], bool]  # whether ``root`` holds this layout
    read: Reader


FORMATS: dict[str, RawFormat] = {
    "cifar_python": RawFormat(
        "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
        lambda root: any(p.is_dir() for p in root.rglob("cifar-10-batches-py")),
        _cifar_python,
    ),
    "oxford_pets": RawFormat("images/*.jpg and annotations/trimaps/*.png", _is_pets, _pets),
    "mnist_idx": RawFormat(
        "train-images-idx3-ubyte and train-labels-idx1-ubyte (t10k-* for a test set; .gz or not)",
        lambda root: _find_file(root, "train-images?idx3-ubyte*") is not None,
        _mnist_idx,
    ),
    "label_csv": RawFormat(
        "train.csv (label, then pixel columns) and optionally test.csv",
        lambda root: _find_file(root, "train.csv") is not None,
        _label_csv,
    ),
    "split_image_folder": RawFormat(
        "train/<class>/<images> and test/<class>/<images>",
        lambda root: _split_base(root) is not None,
        _split_image_folder,
    ),
    "image_folder": RawFormat(
        "<class>/<images>: at least two class folders holding images",
        lambda root: find_class_root(root) is not None,
        _image_folder,
    ),
}


def read_raw(
    root: Path, fmt: str, options: Mapping[str, Any] | None = None, setting: str = "the source's format"
) -> RawData | EncodedImages:
    """Read ``root`` (an extracted source) as format ``fmt``; ``options``: the dataset's ``options:``;
    ``setting``: where ``fmt`` was set, for the error when ``root`` is in another layout."""
    if not root.is_dir():
        raise DataError(f"{root}: extracted data not found (run `dvc repro` from the start)")
    known = FORMATS.get(fmt)
    if known is None:
        raise DataError(f"{setting}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if not known.found(root):
        raise DataError(
            f"{root}: not in the {fmt} layout (expected {known.layout}); "
            f"a copy in another layout needs {setting} set to it (known: {', '.join(FORMATS)})"
        )
    return known.read(root, options or {})


def decoded(raw: RawData | EncodedImages, size: tuple[int, int] | None) -> RawData:
    """``raw``'s pixels: encoded images decoded at ``size`` (height, width), arrays as they are."""
    return raw.decode(size) if isinstance(raw, EncodedImages) else raw
