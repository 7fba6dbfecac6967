"""Writers only the tests use: a ``.pth`` file as ``torch.save`` writes it (zip format), without torch."""

from __future__ import annotations

import collections
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.files import atomic_path
from stages.sources.generate import CompatPickler, GlobalRef, Reduce, numpy_reduce

_WRITE_STORAGES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.bool_): "BoolStorage",
}


class _StorageRef:
    __slots__ = ("key", "cls", "numel")

    def __init__(self, key: str, cls: str, numel: int) -> None:
        self.key, self.cls, self.numel = key, cls, numel


def write_pth_zip(path: Path, obj: Any, *, numpy_arrays: bool = False) -> None:
    """Write ``obj`` as ``torch.save`` would (zip format), without torch.

    ``obj`` is any nest of dict / list / tuple / str / int / float / None and NumPy
    arrays.  Arrays become tensors (``torch._utils._rebuild_tensor_v2`` over
    ``torch.<Type>Storage`` records under ``data/``), or, with ``numpy_arrays=True``,
    stay NumPy arrays pickled the way NumPy pickles them (protocol 2).
    """
    path = Path(path)
    prefix = path.stem or "archive"
    records: list[tuple[str, bytes]] = []

    def tensor(arr: np.ndarray) -> Reduce:
        arr = np.ascontiguousarray(arr)
        dt = arr.dtype.newbyteorder("=")
        if dt not in _WRITE_STORAGES:
            raise ValueError(f"cannot write arrays of dtype {arr.dtype} as tensors")
        key = str(len(records))
        records.append((key, arr.astype(dt.newbyteorder("<"), copy=False).tobytes()))
        ref = _StorageRef(key, _WRITE_STORAGES[dt], arr.size)
        strides = (
            tuple(s // arr.itemsize for s in arr.strides)
            if arr.size
            else (tuple(int(np.prod(arr.shape[i + 1 :])) for i in range(arr.ndim)))
        )
        return Reduce(
            GlobalRef("torch._utils", "_rebuild_tensor_v2"),
            (ref, 0, tuple(arr.shape), strides, False, collections.OrderedDict()),
        )

    def convert(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return numpy_reduce(o) if numpy_arrays else tensor(o)
        if isinstance(o, dict):
            return type(o)((k, convert(v)) for k, v in o.items())
        if isinstance(o, list):
            return [convert(v) for v in o]
        if isinstance(o, tuple):
            return tuple(convert(v) for v in o)
        return o

    def persistent_id(o: Any) -> Any:
        if isinstance(o, _StorageRef):
            return ("storage", GlobalRef("torch", o.cls), o.key, "cpu", o.numel)
        return None

    converted = convert(obj)
    buf = io.BytesIO()
    CompatPickler(buf, persistent_id=persistent_id).dump(converted)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
        zf.writestr(f"{prefix}/.format_version", b"1")
        zf.writestr(f"{prefix}/.storage_alignment", b"64")
        zf.writestr(f"{prefix}/byteorder", b"little")
        for key, raw in records:
            zf.writestr(f"{prefix}/data/{key}", raw)
        zf.writestr(f"{prefix}/version", b"3\n")
