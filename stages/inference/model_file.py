"""A ``model.keras`` the project did not just write (pulled from a DVC remote, sent by someone) is
untrusted input: :func:`load_model_file` checks it, with bounded memory whatever the file, before
Keras reads it, then loads it in Keras' safe mode. Every refusal is one DataError line naming the
file and the reason.

Checked in order: the file (a regular file, at most :data:`MAX_FILE_BYTES`; a zip whose central
directory is small, measured before ``zipfile`` lists it); its members (only those Keras writes,
each once, stored or deflated, declared sizes within the caps); every member inflated in chunks and
counted (a size that lies or a corrupt stream stops it; nothing past a cap is inflated);
``config.json`` (nesting depth counted before it is parsed, so no RecursionError);
``model.weights.h5`` (its datasets may declare no more bytes than the member holds); the model
built from the config with its variables deferred (they may need no more bytes than the weights
file holds). Then ``keras.models.load_model(path, compile=False, safe_mode=True)``.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.errors import DataError

if TYPE_CHECKING:
    import keras

_MiB = 1 << 20
#: The largest model the project builds, cifar_rgb_transfer (InceptionResNetV2, 55.2 M parameters),
#: saves a 223 MB model.weights.h5 (the ResNet50s 95 MB, VGG19 80 MB): twice that leaves room for a
#: bigger variant without letting a file claim gigabytes.
MAX_WEIGHTS_BYTES = 512 * _MiB
#: The same model's config.json is 0.77 MB (metadata.json: 64 bytes). ``json`` holds about ten times
#: a config's size in objects, and Keras takes about 2 s per 1,000 layers to build one.
MAX_JSON_BYTES = 4 * _MiB
#: Everything a model file may unpack to; a file itself can only be bigger by its zip headers.
MAX_TOTAL_BYTES = MAX_WEIGHTS_BYTES + 2 * MAX_JSON_BYTES
MAX_FILE_BYTES = MAX_TOTAL_BYTES + _MiB
#: Keras stores members uncompressed (they unpack to the file's size); re-zipped with deflate, float
#: weights barely shrink and the JSON is under 1 % of a file, so a real model stays under ~1.1x.
#: Deflate of zeros reaches ~1000x: the issue's bombs were 640x and 1000x.
MAX_RATIO = 20
#: Keras writes 3 members, plus one per asset file (vocabularies; no model here has any).
MAX_MEMBERS = 64
#: ``zipfile`` builds an object per directory entry before anything can be counted: a 46-byte entry
#: costs ~500 bytes, so a hostile directory is refused by size first (~20 bytes per real entry).
MAX_DIRECTORY_BYTES = MAX_MEMBERS * 1024
#: The project's configs nest 10-14 levels deep; ``json`` and Keras recurse once or more per level.
MAX_DEPTH = 64
#: Groups and datasets in model.weights.h5: InceptionResNetV2's has 2,503.
MAX_H5_OBJECTS = 25_000

_CHUNK = _MiB
_JSON_MEMBERS = ("config.json", "metadata.json")
_WEIGHTS = "model.weights.h5"
_REQUIRED = ("config.json", _WEIGHTS)
# A JSON string, or an unterminated one up to the end: every match attempt succeeds, so the scan
# stays linear even on hostile input (no retry from each escaped quote).
_STRING = re.compile(rb'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
# What zipfile raises on a corrupt or truncated archive or member.
_CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    zlib.error,
    struct.error,
    OSError,
    ValueError,
    RuntimeError,
)


def _member_cap(name: str) -> int:
    return MAX_JSON_BYTES if name in _JSON_MEMBERS else MAX_WEIGHTS_BYTES


def _allowed(name: str) -> bool:
    """One of the members Keras writes: config.json, metadata.json, model.weights.h5, or a file in
    assets/ (Keras writes no folder entries; Keras extracts assets, so no ``..``, ``\\`` or NUL)."""
    if name in (*_JSON_MEMBERS, _WEIGHTS):
        return True
    top, *rest = name.split("/")
    return (
        top == "assets" and bool(rest) and all(p not in ("", ".", "..") for p in rest) and not {"\\", "\0"} & set(name)
    )


def _open_zip(path: Path, fh: io.BufferedReader) -> zipfile.ZipFile:
    """``fh`` as a zip, after its end record shows a central directory small enough to list."""
    try:
        # zipfile's own reader of the end record, so both agree on where the directory is
        end = zipfile._EndRecData(fh)
        if end is None:
            raise DataError(f"{path}: not a zip archive, or a truncated one (a .keras model file is a zip)")
        if end[zipfile._ECD_SIZE] > MAX_DIRECTORY_BYTES:
            raise DataError(
                f"{path}: zip directory of {end[zipfile._ECD_SIZE]} bytes, over the {MAX_DIRECTORY_BYTES}-byte "
                f"limit (a Keras model has 3 members)"
            )
        fh.seek(0)
        return zipfile.ZipFile(fh)
    except _CORRUPT as exc:
        raise DataError(f"{path}: corrupt zip archive ({_one_line(exc)})") from None


def _check_members(path: Path, infos: list[zipfile.ZipInfo], size: int) -> None:
    """Refuse, before inflating anything, members Keras does not write or that claim too much."""
    if len(infos) > MAX_MEMBERS:
        raise DataError(f"{path}: {len(infos)} zip members, over the limit of {MAX_MEMBERS}")
    names = [i.filename for i in infos]
    for info in infos:
        name = info.filename
        if not _allowed(name):
            raise DataError(
                f"{path}: unexpected zip member {name!r} (Keras writes config.json, metadata.json, "
                f"{_WEIGHTS} and assets/)"
            )
        if names.count(name) > 1:
            raise DataError(f"{path}: zip member {name!r} appears {names.count(name)} times")
        if info.flag_bits & 0x1:
            raise DataError(f"{path}: zip member {name!r} is encrypted")
        # bzip2 and lzma inflate a whole compressed block per read, however small the read asked for
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataError(
                f"{path}: zip member {name!r} uses compression method {info.compress_type} "
                "(Keras stores members; deflate is also accepted)"
            )
        if info.file_size > _member_cap(name):
            raise DataError(
                f"{path}: zip member {name!r} declares {info.file_size} bytes, over its {_member_cap(name)}-byte limit"
            )
    for name in _REQUIRED:
        if name not in names:
            raise DataError(f"{path}: no {name} in the archive (not a Keras model file)")
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise DataError(f"{path}: zip members unpack to {total} bytes, over the {MAX_TOTAL_BYTES}-byte limit")
    if total > MAX_RATIO * size:
        raise DataError(
            f"{path}: zip members unpack to {total} bytes, over {MAX_RATIO} times the file's {size} bytes "
            "(a decompression bomb?)"
        )


def _inflate(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, sink: io.BytesIO | None) -> None:
    """Inflate one member in chunks, counting, into ``sink`` if one is given. Stops as soon as it
    runs past its declared size or cap; refuses it if it ends short (both mean the size lied)."""
    limit, count, name = min(info.file_size, _member_cap(info.filename)), 0, info.filename
    try:
        with zf.open(info) as member:
            while chunk := member.read(_CHUNK):
                count += len(chunk)
                if count > limit:
                    raise DataError(f"{path}: zip member {name!r} unpacks past its declared {info.file_size} bytes")
                if sink is not None:
                    sink.write(chunk)
    except _CORRUPT as exc:
        raise DataError(f"{path}: zip member {name!r} is corrupt ({_one_line(exc)})") from None
    if count != info.file_size:
        raise DataError(f"{path}: zip member {name!r} unpacks to {count} bytes, not its declared {info.file_size}")


def _check_weights(path: Path, data: io.BytesIO, size: int) -> None:
    """Keras writes each weight array uncompressed, so together they declare at most the member's
    size; a compressed or never-written dataset can declare gigabytes that Keras would allocate."""
    import h5py

    declared, objects = 0, 0

    def visit(name: str, obj: Any) -> str | None:
        nonlocal declared, objects
        objects += 1
        if objects > MAX_H5_OBJECTS:
            return f"over {MAX_H5_OBJECTS} groups and datasets"
        if isinstance(obj, h5py.Dataset):
            if obj.external or obj.is_virtual:
                return f"dataset {name!r} keeps its data outside the file"
            declared += math.prod(obj.shape or ()) * obj.dtype.itemsize
        return None

    try:
        with h5py.File(data, "r") as h5:
            problem = h5.visititems(visit)
    except Exception as exc:  # h5py on damaged bytes: OSError, KeyError, OverflowError from its file driver...
        raise DataError(f"{path}: {_WEIGHTS} is not a readable HDF5 file ({_one_line(exc)})") from None
    if problem:
        raise DataError(f"{path}: {_WEIGHTS} has {problem}")
    if declared > size:
        raise DataError(
            f"{path}: {_WEIGHTS}'s arrays declare {declared} bytes but the member holds {size} "
            "(compressed or unwritten weights)"
        )


def nesting_depth(text: bytes) -> int:
    """How deeply JSON ``text``'s arrays and objects nest, counted outside strings, without parsing."""
    brackets = np.frombuffer(_STRING.sub(b"", text).translate(None, _NOT_BRACKETS), np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def _check_config(path: Path, text: bytes) -> dict:
    import json

    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise DataError(f"{path}: config.json nests {depth} levels deep, over the limit of {MAX_DEPTH}")
    try:
        config = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DataError(f"{path}: config.json is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: config.json holds a {type(config).__name__}, not a Keras model's config")
    return config


def check_model_file(path: Path) -> tuple[dict, int]:
    """Check ``path`` as an untrusted ``.keras`` file (see the module docstring) without Keras;
    return its parsed config.json and the size of its model.weights.h5. DataError if refused."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path}: not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise DataError(f"{path}: file is {info.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit for a model")
    kept = {name: io.BytesIO() for name in _REQUIRED}  # the other members are only counted
    with open(path, "rb") as fh, _open_zip(path, fh) as zf:
        infos = zf.infolist()
        _check_members(path, infos, info.st_size)
        for member in infos:
            _inflate(path, zf, member, kept.get(member.filename))
        weights_bytes = zf.getinfo(_WEIGHTS).file_size
    config = _check_config(path, kept["config.json"].getvalue())
    _check_weights(path, kept[_WEIGHTS], weights_bytes)
    return config, weights_bytes


def _variable_bytes(config: dict) -> int:
    """Bytes of the variables the model in ``config`` creates, built with each variable's allocation
    deferred (a few-byte config can declare a 40 GB Dense layer, allocated as the model is built)."""
    import keras

    # Keras 3.15's own: load_model builds within ObjectSharingScope; deferred variables wait in a
    # global list that the next StatelessScope to close would allocate, so it is put back as it was.
    from keras.src.backend.common import global_state
    from keras.src.saving.serialization_lib import ObjectSharingScope

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with ObjectSharingScope(), keras.StatelessScope(initialize_variables=False):
            model = keras.saving.deserialize_keras_object({**config, "compile_config": None}, safe_mode=True)
        return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in getattr(model, "variables", []))
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def _keras_reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if "safe_mode=False" in text:  # Keras' refusal of a Lambda layer or other Python code
        return f"refused by Keras' safe mode: {text.split('. ')[0]}"
    return f"Keras cannot load it ({_one_line(exc)})"


def load_model_file(path: Path) -> keras.Model:
    """The model in the untrusted ``.keras`` file ``path``, uncompiled, or one DataError line saying
    why not: :func:`check_model_file`, the variables' size, then Keras' own load in safe mode."""
    config, weights_bytes = check_model_file(path)
    import keras

    try:
        needed = _variable_bytes(config)
        if needed > weights_bytes:
            raise DataError(f"{path}: the model's variables need {needed} bytes but {_WEIGHTS} holds {weights_bytes}")
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except DataError:
        raise
    except Exception as exc:  # whatever Keras raises on a file it cannot use is the file's fault
        raise DataError(f"{path}: {_keras_reason(exc)}") from exc
    if not isinstance(model, keras.Model):
        raise DataError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    return model
