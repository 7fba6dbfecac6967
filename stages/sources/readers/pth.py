"""Read PyTorch ``.pth`` dataset files without torch.

Two on-disk formats exist (see torch/serialization.py):

* the zip format (torch >= 1.6): one top-level folder ``<prefix>/`` holding
  ``data.pkl`` (the object pickle), ``data/<key>`` (each storage's raw bytes),
  ``byteorder`` (``little``/``big``; absent in old files = little) and ``version``.
  Storages are persistent ids ``('storage', storage_type, key, location, numel)``.
* the legacy format (``_use_new_zipfile_serialization=False``): consecutive pickles
  magic number 0x1950a86a20f9469cfc6c, protocol version 1001, a sys-info dict, the
  object pickle (persistent ids ``('storage', storage_type, root_key, location, numel,
  view_metadata)``), the list of storage keys, then for each key in that order an
  int64 element count followed by ``numel * element_size`` raw bytes.

Every pickle goes through :func:`stages.sources.readers.safe_pickle.safe_load`, so a file can
only ever produce tensors, NumPy arrays and plain containers.

:func:`load_pth` then normalises the content into the project's dataset dict.
:func:`tests.writers.write_pth_zip` writes the zip format, for the tests.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import DataError
from stages.sources.readers.safe_pickle import Storage, StorageType, resolve, safe_load

__all__ = ["IMAGE_SHAPE", "load_pth", "normalise_dataset", "read_pth_object"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
IMAGE_SHAPE = (32, 32, 3)
_PICKLE_ENCODING = "latin1"  # Python 2 str in old files: exact bytes, never a decode error
# torch.save stores zip entries uncompressed; a re-zipped file may deflate them. All entries
# together may unpack to at most this many times the file's size, or _ZIP_FLOOR bytes.
_ZIP_MAX_RATIO = 50
_ZIP_FLOOR = 64 * 2**20


# ---------------------------------------------------------------------- raw object


def read_pth_object(path: Path) -> Any:
    """The object a ``.pth`` file holds, tensors as NumPy arrays (no normalisation)."""
    path = Path(path)
    name = str(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _read_zip(path, name)
    if head[:1] == b"\x80":
        return _read_legacy(path, name)
    raise DataError(f"{name}: not a PyTorch .pth file (neither a torch zip archive nor a legacy pickle)")


def _storage_id(pid: Any, name: str, legacy: bool) -> tuple[StorageType, str, int, Any]:
    want = 6 if legacy else 5
    if not isinstance(pid, tuple) or len(pid) != want:
        raise DataError(f"{name}: unexpected persistent id in the pickle (not a torch storage)")
    kind = pid[0].decode("latin1") if isinstance(pid[0], bytes) else pid[0]
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(kind, str) or kind != "storage" or not isinstance(storage_type, StorageType):
        raise DataError(f"{name}: unexpected persistent id in the pickle (not a torch storage)")
    if isinstance(key, bytes):
        key = key.decode("latin1")
    if not isinstance(key, str) or not key or "/" in key or "\\" in key:
        raise DataError(f"{name}: bad storage key in the pickle")
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise DataError(f"{name}: bad storage size in the pickle")
    return storage_type, key, numel, pid[5] if legacy else None


def _read_zip(path: Path, name: str) -> Any:
    try:
        with zipfile.ZipFile(path) as zf:
            _check_unpacked_sizes(zf.infolist(), path.stat().st_size, name)
            return _read_zip_open(zf, name)
    except DataError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        KeyError,
        struct.error,
    ) as exc:
        raise DataError(f"{name}: corrupt zip archive ({type(exc).__name__}: {exc})".replace("\n", " ")) from None


def _check_unpacked_sizes(infos: list[zipfile.ZipInfo], file_size: int, name: str) -> None:
    """Refuse, before reading any entry, a zip whose entries claim to unpack implausibly big."""
    total = sum(i.file_size for i in infos)
    cap = max(_ZIP_MAX_RATIO * file_size, _ZIP_FLOOR)
    if total > cap:
        big = max(infos, key=lambda i: i.file_size)
        raise DataError(
            f"{name}: its entries unpack to {total} bytes, over {_ZIP_MAX_RATIO} times the file's {file_size} "
            f"bytes (largest: {big.filename}, {big.file_size} bytes; a zip bomb?)"
        )


def _read_zip_open(zf: zipfile.ZipFile, name: str) -> Any:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(names) != len(set(names)):
        raise DataError(f"{name}: the zip archive has duplicate entries")
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        what = "no data.pkl" if not pickles else f"{len(pickles)} data.pkl entries"
        raise DataError(f"{name}: not a single torch archive ({what})")
    prefix = pickles[0][: -len("data.pkl")]
    by_name = {i.filename: i for i in infos}

    order = "<"
    if prefix + "byteorder" in by_name:
        text = zf.read(prefix + "byteorder").strip()
        if text not in (b"little", b"big"):
            raise DataError(f"{name}: bad byteorder record {text[:20]!r}")
        order = "<" if text == b"little" else ">"

    storages: dict[str, Storage] = {}

    def persistent_load(pid: Any) -> Storage:
        storage_type, key, numel, _ = _storage_id(pid, name, legacy=False)
        if key in storages:
            st = storages[key]
            if st.storage_type.dtype != storage_type.dtype or st.numel != numel:
                raise DataError(f"{name}: storage {key} is used with two different types")
            return st
        record = f"{prefix}data/{key}"
        info = by_name.get(record)
        if info is None:
            raise DataError(f"{name}: the archive lacks the storage entry {record}")
        nbytes = numel * storage_type.itemsize
        if info.file_size != nbytes:
            raise DataError(f"{name}: storage entry {record} holds {info.file_size} bytes, expected {nbytes}")
        raw = zf.read(info)  # exactly file_size bytes, CRC-checked: zipfile raises for a short or altered entry
        dtype = storage_type.dtype.newbyteorder(order)
        st = Storage(storage_type, numel, np.frombuffer(raw, dtype=dtype))
        storages[key] = st
        return st

    with zf.open(by_name[pickles[0]]) as fh:
        return safe_load(fh, name=name, persistent_load=persistent_load, encoding=_PICKLE_ENCODING)


def _read_legacy(path: Path, name: str) -> Any:
    try:
        return _read_legacy_open(path, name)
    except DataError:
        raise
    except (OSError, ValueError, TypeError, OverflowError, MemoryError, struct.error) as exc:
        raise DataError(f"{name}: corrupt legacy torch file ({type(exc).__name__})") from None


def _read_legacy_open(path: Path, name: str) -> Any:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        magic = safe_load(fh, name=name, encoding=_PICKLE_ENCODING)
        if type(magic) is not int or magic != LEGACY_MAGIC:
            raise DataError(f"{name}: not a PyTorch .pth file (bad magic number)")
        version = safe_load(fh, name=name, encoding=_PICKLE_ENCODING)
        if type(version) is not int or version != LEGACY_PROTOCOL:
            raise DataError(f"{name}: unsupported legacy torch protocol version")
        sys_info = safe_load(fh, name=name, encoding=_PICKLE_ENCODING)
        little = not (isinstance(sys_info, dict) and sys_info.get("little_endian", True) is False)
        order = "<" if little else ">"

        roots: dict[str, Storage] = {}
        views: dict[str, Storage] = {}

        def persistent_load(pid: Any) -> Storage:
            if isinstance(pid, tuple) and pid and isinstance(pid[0], (str, bytes)) and pid[0] in ("module", b"module"):
                raise DataError(f"{name}: the file holds a pickled nn.Module, not tensor data")
            storage_type, key, numel, view = _storage_id(pid, name, legacy=True)
            root = roots.get(key)
            if root is None:
                root = roots[key] = Storage(storage_type, numel)
            elif root.storage_type.dtype != storage_type.dtype:
                raise DataError(f"{name}: storage {key} is used with two different types")
            if view is None:
                return root
            if not (isinstance(view, tuple) and len(view) == 3):
                raise DataError(f"{name}: bad storage view in the pickle")
            view_key, offset, view_size = view
            if isinstance(view_key, bytes):
                view_key = view_key.decode("latin1")
            for v in (offset, view_size):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise DataError(f"{name}: bad storage view in the pickle")
            if view_key not in views:
                views[view_key] = Storage(storage_type, view_size, base=root, offset=offset)
            return views[view_key]

        obj = safe_load(
            fh,
            name=name,
            persistent_load=persistent_load,
            encoding=_PICKLE_ENCODING,
            resolve_arrays=False,
        )
        keys = safe_load(fh, name=name, encoding=_PICKLE_ENCODING)
        if not isinstance(keys, list):
            raise DataError(f"{name}: the storage key list is missing")
        seen: set[str] = set()
        for key in keys:
            if isinstance(key, bytes):
                key = key.decode("latin1")
            if not isinstance(key, str) or key not in roots or key in seen:
                raise DataError(f"{name}: the storage key list names an unknown storage")
            seen.add(key)
            st = roots[key]
            head = fh.read(8)
            if len(head) != 8:
                raise DataError(f"{name}: truncated: storage {key} is missing")
            (numel,) = struct.unpack(order + "q", head)
            if numel != st.numel:
                raise DataError(f"{name}: storage {key} holds {numel} elements, the pickle says {st.numel}")
            nbytes = numel * st.storage_type.itemsize
            if nbytes > size - fh.tell():
                raise DataError(f"{name}: truncated: storage {key} is cut short")
            raw = fh.read(nbytes)
            if len(raw) != nbytes:
                raise DataError(f"{name}: truncated: storage {key} is cut short")
            st.data = np.frombuffer(raw, dtype=st.storage_type.dtype.newbyteorder(order))
        if seen != set(roots):
            raise DataError(f"{name}: some storages have no data in the file")
    return resolve(obj, name=name)


# ------------------------------------------------------------------- normalisation

_ROLES = {
    "x_train": ("train_imgs", "train_images", "x_train", "train_x", "xtrain", "trainx", "train_data", "train_img"),
    "y_train": ("train_labels", "y_train", "train_y", "ytrain", "trainy", "train_targets", "train_label"),
    "x_test": ("test_imgs", "test_images", "x_test", "test_x", "xtest", "testx", "test_data", "test_img"),
    "y_test": ("test_labels", "y_test", "test_y", "ytest", "testy", "test_targets", "test_label"),
    "classes": ("classes", "class_names", "label_names", "classnames", "labels_names"),
}
_SPLIT_IMAGES = ("images", "imgs", "x", "data", "inputs")
_SPLIT_LABELS = ("labels", "targets", "y", "label")


def _key(k: Any) -> str | None:
    if isinstance(k, bytes):
        k = k.decode("latin1")
    return k.strip().lower() if isinstance(k, str) else None


def _pick(d: dict, aliases: tuple[str, ...], role: str, name: str) -> Any:
    found = [k for k in d if _key(k) in aliases]
    if len(found) > 1:
        raise DataError(f"{name}: ambiguous {role}: keys {', '.join(map(str, found))}")
    return d[found[0]] if found else None


def _split_pair(value: Any, split: str, name: str) -> tuple[Any, Any]:
    if isinstance(value, dict):
        x = _pick(value, _SPLIT_IMAGES, f"{split} images", name)
        y = _pick(value, _SPLIT_LABELS, f"{split} labels", name)
        if x is None or y is None:
            raise DataError(f"{name}: the {split!r} entry needs images and labels keys")
        return x, y
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise DataError(f"{name}: the {split!r} entry is not an (images, labels) pair")


def _layout(obj: Any, name: str) -> tuple[Any, Any, Any, Any, Any]:
    if isinstance(obj, dict):
        got = {role: _pick(obj, aliases, role, name) for role, aliases in _ROLES.items()}
        if all(got[r] is not None for r in ("x_train", "y_train", "x_test", "y_test")):
            return got["x_train"], got["y_train"], got["x_test"], got["y_test"], got["classes"]
        train = _pick(obj, ("train",), "train split", name)
        test = _pick(obj, ("test",), "test split", name)
        if train is not None and test is not None:
            xtr, ytr = _split_pair(train, "train", name)
            xte, yte = _split_pair(test, "test", name)
            return xtr, ytr, xte, yte, got["classes"]
        keys = ", ".join(sorted(str(k) for k in obj)[:12]) or "none"
        raise DataError(
            f"{name}: no train/test images and labels found (expected train_imgs, train_labels, "
            f"test_imgs, test_labels; the file has keys: {keys})"
        )
    if isinstance(obj, (tuple, list)) and len(obj) in (2, 3):
        classes = obj[2] if len(obj) == 3 else None
        if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in obj[:2]):
            (xtr, ytr), (xte, yte) = obj[0], obj[1]
            return xtr, ytr, xte, yte, classes
    raise DataError(
        f"{name}: unsupported layout {type(obj).__name__}: expected a dict with "
        "train_imgs/train_labels/test_imgs/test_labels or ((train_imgs, train_labels), "
        "(test_imgs, test_labels))"
    )


def _images(x: Any, role: str, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise DataError(f"{name}: {role} is a {type(x).__name__}, not a tensor or array")
    if x.ndim != 4:
        raise DataError(f"{name}: {role} must be 4-D (N×32×32×3 or N×3×32×32), got shape {x.shape}")
    if x.shape[3] in (1, 3):
        pass
    elif x.shape[1] in (1, 3):
        x = np.transpose(x, (0, 2, 3, 1))
    else:
        raise DataError(f"{name}: {role} has no channel axis of size 3 or 1 (shape {x.shape})")
    if x.shape[1:3] != IMAGE_SHAPE[:2]:
        raise DataError(f"{name}: {role} images are {x.shape[1]}×{x.shape[2]}, expected 32×32")
    if x.shape[0] == 0:
        raise DataError(f"{name}: {role} holds no images")
    if x.dtype.kind not in "uif":
        raise DataError(f"{name}: {role} has dtype {x.dtype}, expected uint8 or float")
    return x


def _to_uint8(x: np.ndarray, role: str, name: str, scale: float) -> np.ndarray:
    if x.dtype == np.uint8:
        out = x
    elif x.dtype.kind == "f":
        out = np.empty(x.shape, dtype=np.uint8)
        factor = np.float32(scale)
        for start in range(0, x.shape[0], 4096):  # bounded temporaries for big sets
            block = x[start : start + 4096].astype(np.float32, copy=False)
            out[start : start + 4096] = np.rint(block * factor)
    else:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{name}: {role} integer pixel values span {lo}..{hi}, expected 0..255")
        out = x.astype(np.uint8)
    if out.shape[3] == 1:
        out = np.repeat(out, 3, axis=3)
    return np.ascontiguousarray(out)


def _float_scale(arrays: list[np.ndarray], name: str) -> float:
    """×255 when float pixels lie in [0, 1], ×1 when in [0, 255]; decided over all float arrays."""
    floats = [a for a in arrays if a.dtype.kind == "f"]
    if not floats:
        return 1.0
    lo = min(float(np.min(a)) for a in floats)
    hi = max(float(np.max(a)) for a in floats)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise DataError(f"{name}: float images contain NaN or infinite values")
    if lo < 0.0 or hi > 255.0:
        raise DataError(f"{name}: float pixel values span {lo:g}..{hi:g}, expected [0, 1] or [0, 255]")
    return 255.0 if hi <= 1.0 else 1.0


def _labels(y: Any, n: int, role: str, name: str) -> np.ndarray:
    if isinstance(y, (list, tuple)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in y):
            raise DataError(f"{name}: {role} are not integers")
        y = np.asarray(y, dtype=np.int64) if y else np.zeros(0, dtype=np.int64)
    if not isinstance(y, np.ndarray):
        raise DataError(f"{name}: {role} is a {type(y).__name__}, not a tensor or array")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name}: {role} must be 1-D class indices, got shape {y.shape}")
    if y.dtype.kind not in "ui":
        raise DataError(f"{name}: {role} are not integers (dtype {y.dtype})")
    if y.shape[0] != n:
        raise DataError(f"{name}: {role} has {y.shape[0]} labels for {n} images")
    if n and int(y.min()) < 0:
        raise DataError(f"{name}: {role} contains negative labels")
    return y.astype(np.int64)


def _classes(c: Any, name: str) -> list[str] | None:
    if c is None:
        return None
    if isinstance(c, np.ndarray) and c.dtype.kind in "US":
        c = c.tolist()
    if isinstance(c, dict):  # {name: index}, e.g. torchvision's class_to_idx
        if all(isinstance(v, int) for v in c.values()) and sorted(c.values()) == list(range(len(c))):
            c = [k for k, _ in sorted(c.items(), key=lambda kv: kv[1])]
    if not isinstance(c, (list, tuple)):
        raise DataError(f"{name}: classes is a {type(c).__name__}, expected a list of names")
    out = []
    for v in c:
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        if not isinstance(v, str):
            raise DataError(f"{name}: classes must be strings")
        out.append(v)
    return out


def normalise_dataset(obj: Any, name: str) -> dict:
    """Turn a loaded .pth object into the project's dataset dict (see :func:`load_pth`)."""
    xtr, ytr, xte, yte, classes = _layout(obj, name)
    xtr = _images(xtr, "train images", name)
    xte = _images(xte, "test images", name)
    scale = _float_scale([xtr, xte], name)
    out = {
        "x_train": _to_uint8(xtr, "train images", name, scale),
        "y_train": _labels(ytr, xtr.shape[0], "train labels", name),
        "x_test": _to_uint8(xte, "test images", name, scale),
        "y_test": _labels(yte, xte.shape[0], "test labels", name),
        "classes": _classes(classes, name),
    }
    if out["classes"] is not None:
        n_cls = len(out["classes"])
        top = max(int(out["y_train"].max()), int(out["y_test"].max(initial=0)))
        if top >= n_cls:
            raise DataError(f"{name}: label {top} is out of range for {n_cls} classes")
    return out


def load_pth(path: Path) -> dict:
    """Read a PyTorch ``.pth`` dataset file (zip or legacy format) without torch.

    Returns ``{"x_train": uint8 N×32×32×3, "y_train": int64 (N,), "x_test": ...,
    "y_test": ..., "classes": list[str] | None}``.  Accepted layouts: a dict with
    train_imgs/train_labels/test_imgs/test_labels (or x_train/y_train/..., train_images/
    ..., or ``{"train": (x, y), "test": (x, y)}``), or ``((x_train, y_train), (x_test,
    y_test))`` (optionally with the class list as a third item); images as tensors or
    NumPy arrays, uint8 NHWC or float NCHW/NHWC in [0, 1] or [0, 255]; one-channel
    images are repeated to three.  Anything else raises a one-line DataError.
    """
    path = Path(path)
    return normalise_dataset(read_pth_object(path), str(path))
