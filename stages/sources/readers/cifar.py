"""CIFAR-10 "python version" batches (``cifar-10-batches-py/``): reader and writer.

The official folder holds ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``, each a protocol-2 pickle written by Python 2 of a dict with byte-string
keys: ``b'data'`` (uint8 NumPy array N×3072, each row the R, G then B planes of a 32×32
image, row-major), ``b'labels'`` (list of ints), ``b'batch_label'`` and ``b'filenames'``;
``batches.meta`` has ``b'label_names'``, ``b'num_cases_per_batch'`` and ``b'num_vis'``.

They are pickles, so they are read with the restricted unpickler
(:func:`stages.sources.readers.safe_pickle.safe_load`), never ``pickle.load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import DataError
from stages.core.files import atomic_path
from stages.sources.readers.safe_pickle import CompatPickler, numpy_reduce, safe_load

__all__ = ["BATCHES_DIR", "read_cifar_python", "write_cifar_python"]

BATCHES_DIR = "cifar-10-batches-py"
_SIDE, _CHANNELS = 32, 3
_ROW = _SIDE * _SIDE * _CHANNELS  # 3072


def _batches_dir(folder: Path) -> Path:
    folder = Path(folder)
    if (folder / BATCHES_DIR).is_dir():
        return folder / BATCHES_DIR
    if folder.is_dir():
        return folder
    raise DataError(f"{folder}: no such folder (expected the extracted {BATCHES_DIR}/ or its parent)")


def _load(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: missing CIFAR-10 batch file {path.name}")
    try:
        with open(path, "rb") as fh:
            obj = safe_load(fh, name=str(path), encoding="bytes")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR batch (the pickle holds a {type(obj).__name__}, not a dict)")
    return obj


def _get(d: dict, key: str, path: Path) -> Any:
    for k in (key.encode("ascii"), key):  # Python 2 writes bytes keys; tolerate str keys
        if k in d:
            return d[k]
    raise DataError(f"{path}: the batch has no {key!r} entry")


def _label_names(path: Path) -> list[str]:
    names = _get(_load(path), "label_names", path)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: label_names is not a non-empty list")
    out = []
    for n in names:
        if isinstance(n, bytes):
            n = n.decode("utf-8", errors="replace")
        if not isinstance(n, str):
            raise DataError(f"{path}: label_names holds a {type(n).__name__}, expected strings")
        out.append(n)
    return out


def _read_batch(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _load(path)
    labels = _get(d, "labels", path)
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "ui":
        y = labels.astype(np.int64)
    elif isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels):
        y = np.array(labels, dtype=np.int64) if labels else np.zeros(0, dtype=np.int64)
    else:
        raise DataError(f"{path}: labels is not a list of integers")
    data = _get(d, "data", path)
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: data is a {type(data).__name__}, expected a uint8 array")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: data has dtype {data.dtype}, expected uint8")
    if data.size != y.shape[0] * _ROW or (data.ndim == 2 and data.shape[1] != _ROW) or data.ndim > 2:
        raise DataError(
            f"{path}: data holds {data.size} values in shape {data.shape}, expected "
            f"{y.shape[0]}×{_ROW} for {y.shape[0]} labels"
        )
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise DataError(f"{path}: labels span {int(y.min())}..{int(y.max())}, out of range for {n_classes} classes")
    x = data.reshape(y.shape[0], _CHANNELS, _SIDE, _SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def read_cifar_python(
    folder: Path, *, n_train_batches: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read ``cifar-10-batches-py/`` (``folder`` is that folder or its parent).

    Returns ``(x_train, y_train, x_test, y_test, class_names)``: x uint8 N×32×32×3
    (NHWC), y int64.  ``data_batch_1`` .. ``data_batch_<n_train_batches>``,
    ``test_batch`` and ``batches.meta`` must all be present.
    """
    root = _batches_dir(folder)
    classes = _label_names(root / "batches.meta")
    xs, ys = [], []
    for i in range(1, n_train_batches + 1):
        x, y = _read_batch(root / f"data_batch_{i}", len(classes))
        xs.append(x)
        ys.append(y)
    x_test, y_test = _read_batch(root / "test_batch", len(classes))
    x_train = np.concatenate(xs) if len(xs) > 1 else xs[0]
    y_train = np.concatenate(ys) if len(ys) > 1 else ys[0]
    return x_train, y_train, x_test, y_test, classes


# ------------------------------------------------------------------------- writer


def _dump(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        CompatPickler(fh, py2_strings=True).dump(obj)


def _batch(x: np.ndarray, y: np.ndarray, label: str, classes: list[str], start: int) -> dict:
    data = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(0, 3, 1, 2)).reshape(len(x), _ROW)
    labels = [int(v) for v in y]
    names = [f"{classes[v].lower().replace(' ', '_')}_s_{start + i:06d}.png".encode() for i, v in enumerate(labels)]
    return {
        b"batch_label": label.encode("ascii"),
        b"labels": labels,
        b"data": numpy_reduce(data, py2=True),
        b"filenames": names,
    }


def write_cifar_python(
    folder: Path,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: list[str],
    *,
    n_train_batches: int = 5,
) -> Path:
    """Write images in the official ``cifar-10-batches-py`` format; return the folder.

    ``folder`` is used as is when it is named ``cifar-10-batches-py``, otherwise the
    batches go to ``folder/cifar-10-batches-py``.  x: uint8 N×32×32×3 (NHWC); y: ints
    in ``range(len(class_names))``.  The train set is split into ``n_train_batches``
    near-equal batches.  Files are protocol-2 pickles with Python 2 byte strings, as
    in the official archive.
    """
    folder = Path(folder)
    root = folder if folder.name == BATCHES_DIR else folder / BATCHES_DIR
    classes = [str(c) for c in class_names]
    for what, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != np.uint8:
            raise ValueError(f"{what}: images must be uint8, got {x.dtype}")
        if x.ndim != 4 or x.shape[1:] != (_SIDE, _SIDE, _CHANNELS) or len(x) != len(y):
            raise ValueError(f"{what}: expected N×32×32×3 images and N labels, got {x.shape} and {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise ValueError(f"{what}: labels out of range for {len(classes)} classes")
    if n_train_batches < 1:
        raise ValueError("n_train_batches must be at least 1")
    root.mkdir(parents=True, exist_ok=True)
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    bounds = np.linspace(0, len(x_train), n_train_batches + 1).round().astype(int)
    per_batch = int(bounds[1] - bounds[0])
    for i in range(n_train_batches):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        label = f"training batch {i + 1} of {n_train_batches}"
        _dump(root / f"data_batch_{i + 1}", _batch(x_train[lo:hi], y_train[lo:hi], label, classes, lo))
    _dump(
        root / "test_batch",
        _batch(np.asarray(x_test), np.asarray(y_test), "testing batch 1 of 1", classes, 0),
    )
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [c.encode("utf-8") for c in classes],
        b"num_vis": _ROW,
    }
    _dump(root / "batches.meta", meta)
    return root
