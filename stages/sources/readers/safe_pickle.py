"""A restricted unpickler: tensors, NumPy arrays and plain containers, nothing else.

A pickle is a program: a plain ``pickle.load`` runs whatever callable the file names
(``os.system``, ``builtins.eval`` ...).  :func:`safe_load` maps the few globals that
NumPy arrays and PyTorch tensors are rebuilt from onto this module's own stand-ins,
which only ever build NumPy arrays, and refuses every other global *before* anything
is called.  Nothing from torch is imported; torch need not be installed.

Allowed globals (module.name -> stand-in):

* ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype`` (simple numeric/bool dtypes only),
  ``numpy[._]core.multiarray.scalar``, ``numpy[._]core.numeric._frombuffer`` (protocol 5)
* ``_codecs.encode`` (only ``encode(str, "latin1")``: how protocol-2 pickles written by
  Python 3 carry ``bytes``, e.g. the raw data of a NumPy array) and ``builtins.bytes``
  (only ``bytes()``: how they carry ``b""``)
* ``collections.OrderedDict``
* ``torch._utils._rebuild_tensor_v2`` and ``torch._utils._rebuild_tensor``
* torch storage classes ``torch[.cuda].{Float,Double,Half,BFloat16,Byte,Char,Short,Int,
  Long,Bool,ComplexFloat,ComplexDouble}Storage``, ``torch[.storage].UntypedStorage``
* torch dtype objects ``torch.float32``, ``torch.uint8``, ... (and aliases such as
  ``torch.float``, ``torch.long``)

Storage classes and dtypes are inert descriptors (not callable); tensors are rebuilt
from :class:`Storage` objects that the caller's ``persistent_load`` hands back (see
``stages/readers/pth.py``).  Arrays are built only after the whole pickle has been
read, by :func:`resolve`, which replaces every stand-in by a real ``numpy.ndarray``.

The writer of such pickles (for the sample data and the tests) is
:class:`stages.sources.generate.CompatPickler`.
"""

from __future__ import annotations

import _compat_pickle
import collections
import math
import pickle
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from stages.core.errors import DataError

__all__ = [
    "ALLOWED_GLOBALS",
    "Storage",
    "StorageType",
    "refused_message",
    "resolve",
    "safe_load",
]

# Largest element count a tensor may have beyond its storage's own (stride-0 "expanded"
# views): bounds the memory a small hostile file can make the reader allocate.
_MAX_EXPANDED_ELEMENTS = 1 << 22
# What all the arrays rebuilt from one file's storages may take beyond twice those storages'
# own bytes: without a total, many small expanded views of one storage add up (see _Budget).
_EXTRA_TENSOR_BYTES = 64 * 2**20


def _one_line(text: Any, limit: int = 200) -> str:
    """Printable, single-line, bounded rendering of ``text`` for error messages."""
    s = str(text)
    s = "".join(ch if ch.isprintable() else f"\\x{ord(ch) & 0xFF:02x}" for ch in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def refused_message(name: str, module: str, qualname: str) -> str:
    return (
        f"{name}: refusing to load: the pickle asks for {_one_line(module, 80)}."
        f"{_one_line(qualname, 80)}, which is not tensor/array data"
    )


# --------------------------------------------------------------------------- dtypes

# Simple dtypes a pickled NumPy array may carry (no object, structured or void types).
_NUMPY_SPECS = {
    "b1": "?",
    "?": "?",
    "bool": "?",
    "u1": "u1",
    "i1": "i1",
    "u2": "u2",
    "i2": "i2",
    "u4": "u4",
    "i4": "i4",
    "u8": "u8",
    "i8": "i8",
    "f2": "f2",
    "f4": "f4",
    "f8": "f8",
    "c8": "c8",
    "c16": "c16",
    "uint8": "u1",
    "int8": "i1",
    "uint16": "u2",
    "int16": "i2",
    "uint32": "u4",
    "int32": "i4",
    "uint64": "u8",
    "int64": "i8",
    "float16": "f2",
    "float32": "f4",
    "float64": "f8",
    "complex64": "c8",
    "complex128": "c16",
}


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order (a copy only when it was not)."""
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _text(value: Any) -> str:
    """A str, or bytes from a Python 2 pickle loaded with ``encoding="bytes"``."""
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


class _Frozen:
    """Mixin: a pickle's BUILD opcode must not be able to alter a stand-in's attributes."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise TypeError(f"{type(self).__name__} takes no pickled state")


class _Callable(_Frozen):
    """Wraps an allowed stand-in function so the pickle cannot BUILD onto the function."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


class _DTypeSpec:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` followed by BUILD(state)."""

    __slots__ = ("_base", "_endian", "_built")

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        key = _text(spec)
        if key not in _NUMPY_SPECS:
            raise TypeError(f"unsupported NumPy dtype {key!r}")
        self._base = np.dtype(_NUMPY_SPECS[key])
        self._endian = "="
        self._built = False

    def __setstate__(self, state: Any) -> None:
        if self._built:
            raise TypeError("dtype state given twice")
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise TypeError("unexpected NumPy dtype state")
        endian = _text(state[1])
        if endian not in ("<", ">", "|", "="):
            raise TypeError(f"bad dtype byte order {endian!r}")
        if state[2] is not None or state[3] is not None or state[4] is not None:
            raise TypeError("structured or sub-array dtypes are not supported")
        self._endian = endian
        self._built = True

    def to_numpy(self) -> np.dtype:
        if self._base.itemsize == 1 or self._endian in ("|", "="):
            return self._base
        return self._base.newbyteorder(self._endian)


class _NDArrayClass(_Frozen):
    """Inert stand-in for the ``numpy.ndarray`` class (only valid as ``_reconstruct``'s 1st arg)."""

    __slots__ = ()


_NDARRAY = _NDArrayClass()


class _PendingArray:
    """Stand-in for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` + BUILD."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise TypeError("array state given twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise TypeError("unexpected NumPy array state")
        if len(state) == 5:
            if not isinstance(state[0], int) or isinstance(state[0], bool) or state[0] != 1:
                raise TypeError("unsupported NumPy array pickle version")
            state = state[1:]
        shape, dtype, fortran, raw = state
        shape = _shape(shape)
        if not isinstance(dtype, _DTypeSpec):
            raise TypeError("array dtype is not a NumPy dtype")
        if not isinstance(fortran, (bool, int)):
            raise TypeError("bad array order flag")
        if isinstance(raw, str):  # Python 2 str loaded with encoding="latin1"
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise TypeError("array data is not raw bytes (object arrays are not supported)")
        dt = dtype.to_numpy()
        count = math.prod(shape)
        if len(raw) != count * dt.itemsize:
            raise TypeError(f"array data holds {len(raw)} bytes, shape {shape} of {dt} needs {count * dt.itemsize}")
        arr = np.frombuffer(bytes(raw), dtype=dt, count=count)
        arr = np.array(arr.reshape(shape, order="F" if fortran else "C"), copy=True, order="C")
        self.array = _native(arr)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _PendingArray:
    if subtype is not _NDARRAY:
        raise TypeError("_reconstruct may only rebuild numpy.ndarray")
    return _PendingArray()


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, _DTypeSpec):
        raise TypeError("scalar dtype is not a NumPy dtype")
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes):
        raise TypeError("scalar data is not raw bytes")
    dt = dtype.to_numpy()
    if len(data) != dt.itemsize:
        raise TypeError("scalar data has the wrong size")
    return np.frombuffer(data, dtype=dt)[0].item()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> _PendingArray:
    if not isinstance(dtype, _DTypeSpec):
        raise TypeError("array dtype is not a NumPy dtype")
    if isinstance(buf, (bytearray, memoryview)):
        buf = bytes(buf)
    if not isinstance(buf, bytes):
        raise TypeError("array data is not raw bytes")
    order = _text(order)
    if order not in ("C", "F"):
        raise TypeError("bad array order")
    pending = _PendingArray()
    pending.__setstate__((1, shape, dtype, order == "F", buf))
    return pending


def _codecs_encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # Python 3 pickles bytes for protocol < 3 as _codecs.encode(str, "latin1").
    if not isinstance(obj, str) or _text(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise TypeError("_codecs.encode is only allowed as encode(str, 'latin1')")
    return obj.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    # Python 3 pickles b"" for protocol < 3 as builtins.bytes() (e.g. an empty array's data).
    if args:
        raise TypeError("builtins.bytes is only allowed without arguments")
    return b""


# --------------------------------------------------------------------- torch stand-ins


class StorageType(_Frozen):
    """Inert stand-in for a torch storage class or a torch dtype: just an element type."""

    __slots__ = ("qualname", "dtype", "bfloat16")

    def __init__(self, qualname: str, dtype: str) -> None:
        self.qualname = qualname
        self.bfloat16 = dtype == "bfloat16"
        # bfloat16 has no NumPy type: keep the raw 16-bit patterns, widen on resolve.
        self.dtype = np.dtype("<u2" if self.bfloat16 else dtype)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def __repr__(self) -> str:
        return f"StorageType({self.qualname})"


class Storage(_Frozen):
    """One flat storage: ``numel`` elements of ``storage_type``; ``data`` may be filled later.

    ``data`` is a 1-D NumPy array of ``storage_type.dtype`` (little-endian or native),
    or ``None`` until the caller has read it (torch's legacy format stores the raw
    bytes after the object pickle).  A view (legacy ``view_metadata``) has ``base``
    set and takes ``numel`` elements from ``offset`` of its base.
    """

    __slots__ = ("storage_type", "numel", "data", "base", "offset")

    def __init__(
        self,
        storage_type: StorageType,
        numel: int,
        data: np.ndarray | None = None,
        *,
        base: Storage | None = None,
        offset: int = 0,
    ) -> None:
        self.storage_type = storage_type
        self.numel = numel
        self.data = data
        self.base = base
        self.offset = offset

    def array(self) -> np.ndarray:
        if self.base is not None:
            flat = self.base.array()
            if self.offset + self.numel > flat.shape[0]:
                raise DataError("storage view runs past the end of its storage")
            return flat[self.offset : self.offset + self.numel]
        if self.data is None:
            raise DataError("a tensor's storage data is missing")
        if self.data.shape != (self.numel,):
            raise DataError("a tensor's storage has the wrong size")
        return self.data


class _Budget:
    """The bytes that the arrays rebuilt from one file's storages may still allocate.

    Each storage adds twice its own bytes when first used (a tensor and a view or two of it);
    each rebuilt array takes its size.  ``extra`` allows small expanded views on top.
    """

    __slots__ = ("left", "_credited", "_extra", "_total")

    def __init__(self, extra: int) -> None:
        self.left = self._total = self._extra = extra
        self._credited: set[int] = set()

    def credit(self, storage: Storage) -> None:
        root = storage
        while root.base is not None:
            root = root.base
        if id(root) not in self._credited:  # roots stay alive while the file is resolved
            self._credited.add(id(root))
            gain = 2 * root.numel * root.storage_type.itemsize
            self.left += gain
            self._total += gain

    def charge(self, nbytes: int, shape: tuple) -> None:
        if nbytes > self.left:
            raise DataError(
                f"tensor of shape {shape} would bring the file's tensors past {self._total} bytes "
                f"(twice its storages' bytes plus {self._extra}): many views of the same storage?"
            )
        self.left -= nbytes


class _PendingTensor(_Frozen):
    """Stand-in for a torch tensor: a strided view of a :class:`Storage`, built on resolve."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def build(self, budget: _Budget) -> np.ndarray:
        flat = self.storage.array()
        st = self.storage.storage_type
        count = math.prod(self.size)
        budget.credit(self.storage)
        if count == 0:
            out = np.empty(self.size, dtype=flat.dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
            if last >= flat.shape[0]:
                raise DataError(
                    f"tensor of shape {self.size} (offset {self.offset}, strides {self.stride}) "
                    f"runs past its storage of {flat.shape[0]} elements"
                )
            if count > flat.shape[0] and count > _MAX_EXPANDED_ELEMENTS:
                raise DataError(f"tensor of shape {self.size} expands its storage implausibly")
            budget.charge(count * (4 if st.bfloat16 else st.itemsize), self.size)
            base = flat[self.offset :]
            view = np.lib.stride_tricks.as_strided(
                base,
                shape=self.size,
                strides=tuple(s * base.itemsize for s in self.stride),
                writeable=False,
            )
            out = np.array(view, copy=True, order="C")
        out = _native(out)
        if st.bfloat16:
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"bad {what}: {_one_line(repr(value), 60)}")
    return value


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > 32:
        raise TypeError("bad tensor/array shape")
    return tuple(_int(v, "dimension") for v in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _PendingTensor:
    if not isinstance(storage, Storage):
        raise TypeError("tensor storage is not a storage")
    size_t, stride_t = _shape(size), _shape(stride)
    if len(size_t) != len(stride_t):
        raise TypeError("tensor size and stride differ in length")
    return _PendingTensor(storage, _int(storage_offset, "storage offset"), size_t, stride_t)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _PendingTensor:
    return _rebuild_tensor(storage, storage_offset, size, stride)


# ----------------------------------------------------------------------- allowlist

_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ByteStorage": "uint8",
    "CharStorage": "int8",
    "ShortStorage": "int16",
    "IntStorage": "int32",
    "LongStorage": "int64",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}
_TORCH_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "uint8": "uint8",
    "int8": "int8",
    "int16": "int16",
    "short": "int16",
    "int32": "int32",
    "int": "int32",
    "int64": "int64",
    "long": "int64",
    "bool": "bool",
    "complex64": "complex64",
    "cfloat": "complex64",
    "complex128": "complex128",
    "cdouble": "complex128",
}


def _build_allowlist() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _Callable(collections.OrderedDict),
        ("_codecs", "encode"): _Callable(_codecs_encode),
        ("builtins", "bytes"): _Callable(_empty_bytes),
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Callable(_DTypeSpec),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor"): _Callable(_rebuild_tensor),
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _Callable(_reconstruct)
        allowed[(f"{core}.multiarray", "scalar")] = _Callable(_scalar)
        allowed[(f"{core}.numeric", "_frombuffer")] = _Callable(_frombuffer)
    for cls, dt in _STORAGE_DTYPES.items():
        for mod in ("torch", "torch.cuda"):
            allowed[(mod, cls)] = StorageType(f"{mod}.{cls}", dt)
    for mod in ("torch", "torch.storage"):
        allowed[(mod, "UntypedStorage")] = StorageType(f"{mod}.UntypedStorage", "uint8")
    for name, dt in _TORCH_DTYPES.items():
        allowed[("torch", name)] = StorageType(f"torch.{name}", dt)
    return allowed


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _build_allowlist()


# ------------------------------------------------------------------------- loading


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(
        self,
        fileobj: IO[bytes],
        *,
        name: str,
        persistent_load: Callable[[Any], Any] | None,
        encoding: str,
    ) -> None:
        super().__init__(fileobj, encoding=encoding, errors="strict")
        self._name = name
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``__builtin__.eval``, ``copy_reg._reconstructor``) as Python 3 ones,
        # as the stock unpickler's fix_imports does; the allowlist decides either way.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise DataError(refused_message(self._name, module, name))
        return target

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise DataError(
                f"{self._name}: refusing to load: the pickle refers to external data "
                "(a persistent id) where none is expected"
            )
        return self._persistent(pid)


def _failure(name: str, exc: BaseException) -> DataError:
    detail = _one_line(f"{type(exc).__name__}: {exc}", 160)
    return DataError(f"{name}: not a valid pickle of tensor/array data ({detail})")


def safe_load(
    fileobj: IO[bytes],
    *,
    name: str,
    persistent_load: Callable[[Any], Any] | None = None,
    encoding: str = "ASCII",
    resolve_arrays: bool = True,
) -> Any:
    """Unpickle one object from ``fileobj`` allowing only arrays, tensors and containers.

    ``name`` (usually the file path) prefixes every error.  ``persistent_load`` gets
    each persistent id (torch storages); without it any persistent id is refused.
    ``encoding`` is passed to the unpickler for Python 2 ``str`` (use ``"bytes"`` for
    CIFAR batches, ``"latin1"`` for .pth files).  With ``resolve_arrays=False`` the
    stand-ins are returned unresolved (for callers that fill storages afterwards and
    then call :func:`resolve`).  Any failure raises a one-line :class:`DataError`.
    """
    try:
        obj = _RestrictedUnpickler(fileobj, name=name, persistent_load=persistent_load, encoding=encoding).load()
    except DataError as exc:
        msg = str(exc)
        raise (exc if msg.startswith(f"{name}:") else DataError(f"{name}: {msg}")) from None
    except Exception as exc:  # any malformed stream must become DataError
        raise _failure(name, exc) from None
    return resolve(obj, name=name) if resolve_arrays else obj


def resolve(obj: Any, *, name: str, extra_bytes: int = _EXTRA_TENSOR_BYTES) -> Any:
    """Replace every stand-in inside ``obj`` by a real NumPy array (or plain value).

    The arrays rebuilt from storages may take, all together, twice the storages' bytes plus
    ``extra_bytes`` (see :class:`_Budget`); more raises DataError before allocating.
    """
    memo: dict[int, Any] = {}
    try:
        return _resolve(obj, memo, _Budget(extra_bytes))
    except DataError as exc:
        msg = str(exc)
        raise (exc if msg.startswith(f"{name}:") else DataError(f"{name}: {msg}")) from None
    except (RecursionError, TypeError, ValueError, MemoryError) as exc:
        raise _failure(name, exc) from None


_PLAIN = (str, bytes, int, float, complex, bool, type(None), np.ndarray, np.generic)


def _resolve(obj: Any, memo: dict[int, Any], budget: _Budget) -> Any:
    if isinstance(obj, _PLAIN):
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise DataError("a pickled NumPy array has no data")
        out: Any = obj.array
    elif isinstance(obj, _PendingTensor):
        out = obj.build(budget)
    elif isinstance(obj, Storage):
        budget.credit(obj)
        budget.charge(obj.numel * obj.storage_type.itemsize, (obj.numel,))
        out = obj.array().copy()
    elif isinstance(obj, _DTypeSpec):
        out = obj.to_numpy()
    elif isinstance(obj, StorageType):
        out = np.dtype(np.float32) if obj.bfloat16 else obj.dtype
    elif isinstance(obj, list):
        out = []
        memo[key] = out
        out.extend(_resolve(v, memo, budget) for v in obj)
        return out
    elif isinstance(obj, dict):  # dict and OrderedDict (and nothing else reaches here)
        out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        memo[key] = out
        for k, v in obj.items():
            out[_resolve(k, memo, budget)] = _resolve(v, memo, budget)
        return out
    elif isinstance(obj, tuple):
        out = tuple(_resolve(v, memo, budget) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        out = type(obj)(_resolve(v, memo, budget) for v in obj)
    elif isinstance(obj, bytearray):
        out = bytes(obj)
    else:
        raise DataError(f"the pickle holds a bare {type(obj).__name__} reference, not data")
    memo[key] = out
    return out
