"""CIFAR-10 "python version" batches (``cifar-10-batches-py/``): the reader.

The official folder holds ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``, each a protocol-2 pickle written by Python 2 of a dict with byte-string
keys: ``b'data'`` (uint8 NumPy array N×3072, each row the R, G then B planes of a 32×32
image, row-major), ``b'labels'`` (list of ints), ``b'batch_label'`` and ``b'filenames'``;
``batches.meta`` has ``b'label_names'``, ``b'num_cases_per_batch'`` and ``b'num_vis'``.

They are pickles, so they are read with the restricted unpickler
(:func:`stages.sources.readers.safe_pickle.safe_load`), never ``pickle.load``.  The writer
(sample data, tests) is :func:`stages.sources.generate.write_cifar_python`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import DataError
from stages.sources.readers.safe_pickle import safe_load

__all__ = ["BATCHES_DIR", "CLASSES", "read_cifar_python"]

BATCHES_DIR = "cifar-10-batches-py"
#: CIFAR-10's class names in label order, as its batches.meta lists them (the reader takes the file's own)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
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
