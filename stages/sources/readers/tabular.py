"""MNIST-family IDX files and Kaggle-style pixel CSVs: readers that check everything.

IDX (http://yann.lecun.com/exdb/mnist/): ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32
dimensions, then the data, big-endian, C order. Files may be gzip-compressed (``.gz``; detected by
the ``1f 8b`` magic, not the name).

Kaggle CSV (digit-recognizer, fashion-mnist CSVs): one image per line, either
``label,pixel0,...,pixel783`` or, for unlabelled test files, ``pixel0,...,pixel783``; with or
without a header line. Errors name the file and the first bad line as a text editor numbers it.

The writers of both (sample data, tests) are in :mod:`stages.sources.generate`.
"""

from __future__ import annotations

import gzip as gzip_module
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.errors import DataError

__all__ = ["IDX_TYPES", "read_idx", "read_label_csv"]

#: IDX data type codes and the dtypes they stand for (big-endian on disk).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# deflate cannot expand data by more than ~1032:1; a gzip claiming more is lying (or a bomb)
_GZIP_MAX_RATIO = 1100


# --------------------------------------------------------------------------- IDX


def _read_exact(fh, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = fh.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _readinto_full(fh, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian array of the shape it declares.

    DataError (naming the file) for a bad magic number, an unknown type code, a size that does not
    match the declared dimensions (truncated or trailing bytes), or a corrupt gzip stream. The
    declared size is checked against the file size before anything is allocated.
    """
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if compressed:
                with gzip_module.GzipFile(fileobj=raw, mode="rb") as fh:
                    return _read_idx_stream(fh, path, file_size, compressed=True)
            return _read_idx_stream(raw, path, file_size, compressed=False)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        what = "corrupt or truncated gzip data" if isinstance(exc, (EOFError, zlib.error)) else ""
        detail = what or f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise DataError(f"{path}: cannot read IDX file ({detail})") from None


def _read_idx_stream(fh, path: Path, file_size: int, *, compressed: bool) -> np.ndarray:
    magic = _read_exact(fh, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic {magic.hex(' ') or 'missing'}, expected 00 00 <type> <ndim>)")
    code, ndim = magic[2], magic[3]
    if code not in IDX_TYPES:
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    dims_raw = _read_exact(fh, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    dtype = IDX_TYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    header = 4 + 4 * ndim
    if math.prod(d for d in dims if d) * dtype.itemsize >= 2**62:  # numpy cannot even shape it
        raise DataError(f"{path}: IDX header declares an impossible shape {dims}")
    shape = "x".join(map(str, dims))
    if not compressed:
        actual = file_size - header
        if actual != expected:
            kind = "truncated" if actual < expected else "trailing bytes after the data"
            raise DataError(
                f"{path}: {kind}: shape {shape} of {dtype.name} needs {expected} data bytes, file has {actual}"
            )
    elif expected > file_size * _GZIP_MAX_RATIO + 4096:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes), impossible for a {file_size}-byte gzip file"
        )
    array = np.empty(math.prod(dims), dtype=dtype)
    got = _readinto_full(fh, memoryview(array).cast("B"))
    if got != expected:
        raise DataError(f"{path}: truncated: shape {shape} of {dtype.name} needs {expected} data bytes, file has {got}")
    if compressed and fh.read(1):
        raise DataError(f"{path}: trailing bytes after the {expected} data bytes of shape {shape}")
    if dtype.itemsize > 1:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array.reshape(dims)


# --------------------------------------------------------------------------- CSV

#: Labels are class numbers below this: a stray huge one would size per-class arrays (np.bincount).
_MAX_LABEL = 2**24


def _is_number(field: str) -> bool:
    try:
        float(field.strip().strip('"'))
    except ValueError:
        return False
    return True


def _line_problem(text: str, n_columns: int, has_labels: bool) -> str | None:
    """What is wrong with one data line, or None if it is fine (the rules pandas applies, in words)."""
    if not text.strip():
        return "blank line"
    fields = text.split(",")
    if len(fields) != n_columns:
        return f"expected {n_columns} columns, found {len(fields)}"
    for col, raw in enumerate(fields, 1):
        field = raw.strip().strip('"')
        if "_" in field:  # Python's float() accepts "1_0"; CSV readers do not
            field = field.replace("_", "?")
        is_label = has_labels and col == 1
        what = "label" if is_label else "pixel value"
        try:
            value = float(field)
        except ValueError:
            return f"column {col}: non-numeric {what} {field[:20]!r}" if field else f"column {col}: empty {what}"
        if not math.isfinite(value):
            return f"column {col}: non-numeric {what} {field[:20]!r}"
        if is_label:
            if value != int(value):
                return f"column {col}: non-integer label {field[:20]!r}"
            if value < 0:
                return f"column {col}: negative label {field[:20]} (labels are class numbers 0, 1, ...)"
            if value >= _MAX_LABEL:
                return f"column {col}: label {field[:20]} too large (class numbers are below {_MAX_LABEL})"
        elif value != int(value) or not 0 <= value <= 255:
            return f"column {col}: pixel value {field[:20]} outside the integers 0..255"
    return None


def _scan_for_error(path: Path, start_line: int, n_columns: int, has_labels: bool) -> DataError:
    """Slow, exact pass (only run on a file known to be bad): the first bad line from start_line."""
    last_blank = None
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno < start_line:
                continue
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                return DataError(f"{path}: line {lineno}: not UTF-8 text")
            if not text.strip():  # blank lines are only allowed at the very end
                last_blank = last_blank or lineno
                continue
            if last_blank is not None:
                return DataError(f"{path}: line {last_blank}: blank line")
            problem = _line_problem(text, n_columns, has_labels)
            if problem:
                return DataError(f"{path}: line {lineno}: {problem}")
    return DataError(f"{path}: unreadable CSV (no single bad line found)")


def _head(path: Path) -> list[str]:
    """The first two lines of the file, decoded (a UTF-8 byte-order mark dropped)."""
    try:
        with open(path, "rb") as fh:
            raw = [fh.readline(), fh.readline()]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    lines = []
    for lineno, line in enumerate(raw, 1):
        try:
            lines.append(line.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n"))
        except UnicodeDecodeError:
            raise DataError(f"{path}: line {lineno}: not UTF-8 text") from None
    return lines


def _last_data_line(path: Path) -> int:
    """The number of the last line holding more than white space (blank lines at the end are harmless)."""
    lines = last = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            end = len(chunk.rstrip())
            if end:
                last = lines + chunk.count(b"\n", 0, end) + 1
            lines += chunk.count(b"\n")
    return last


def _read_frame(path: Path, first_line: int, nrows: int, n_columns: int, has_labels: bool) -> pd.DataFrame:
    """Lines ``first_line`` .. + ``nrows`` as uint8 pixels (and int64 labels): pandas refuses an empty,
    non-numeric, non-integer or out-of-range value, and the exact scan then finds the line to name."""
    dtype = {0: np.int64, **dict.fromkeys(range(1, n_columns), np.uint8)} if has_labels else np.uint8
    try:
        with np.errstate(invalid="ignore"):  # pandas' cast of a refused value warns before it raises
            frame = pd.read_csv(
                path,
                header=None,
                skiprows=first_line - 1,
                nrows=nrows,
                dtype=dtype,
                skip_blank_lines=False,  # a blank line inside the data is an error, found by the scan
                lineterminator="\n",  # lines as the scan and an editor count them ("\r\n" is fine)
                encoding="utf-8-sig",
                engine="c",
            )
    except (ValueError, OverflowError):  # a refused value; ParserError and UnicodeDecodeError are ValueErrors
        raise _scan_for_error(path, first_line, n_columns, has_labels) from None
    if frame.shape != (nrows, n_columns):  # a line longer or shorter than line 1
        raise _scan_for_error(path, first_line, n_columns, has_labels)
    return frame


def read_label_csv(
    path: str | os.PathLike, *, n_pixels: int = 784, side: int = 28
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Kaggle-style pixel CSV: ``(x uint8 N x side x side, y int64 N or None)``.

    ``n_pixels + 1`` columns = label then pixels; ``n_pixels`` columns = pixels only (y is None).
    A first line made mostly of non-numbers is a header and skipped. Pixels must be integers in
    0..255, labels integers from 0. DataError names the file and the first bad line (1-based): wrong
    column count, non-numeric or empty value, pixel out of range, non-integer or negative label,
    blank line.
    """
    path = Path(path)
    if side * side != n_pixels:
        raise ValueError(f"side {side} does not match n_pixels {n_pixels} (side * side)")
    lines = _head(path)
    if not lines[0].strip():
        raise DataError(f"{path}: line 1: empty (expected a header or {n_pixels + 1} or {n_pixels} columns)")
    fields = lines[0].split(",")
    n_columns = len(fields)
    if n_columns not in (n_pixels + 1, n_pixels):
        raise DataError(
            f"{path}: line 1: expected {n_pixels + 1} columns (label + {n_pixels} pixels)"
            f" or {n_pixels} (pixels only), found {n_columns}"
        )
    has_labels = n_columns == n_pixels + 1
    # header: mostly non-numeric. A data line with a few bad values is *not* taken for a header
    # (that would silently drop a row); it is reported as an error below.
    first = 2 if sum(not _is_number(f) for f in fields) * 2 > n_columns else 1
    nrows = _last_data_line(path) - (first - 1)
    if nrows <= 0:
        raise DataError(f"{path}: no data lines")
    # pandas reads a column made only of True/False as 1/0: its first value shows it
    problem = _line_problem(lines[first - 1], n_columns, has_labels)
    if problem:
        raise DataError(f"{path}: line {first}: {problem}")
    frame = _read_frame(path, first, nrows, n_columns, has_labels)
    y = frame.iloc[:, 0].to_numpy() if has_labels else None
    x = frame.iloc[:, int(has_labels) :].to_numpy(dtype=np.uint8)
    del frame
    if y is not None and len(y) and (y.min() < 0 or y.max() >= _MAX_LABEL):  # pandas checks they are integers only
        raise _scan_for_error(path, first + int(np.argmax((y < 0) | (y >= _MAX_LABEL))), n_columns, has_labels)
    return x.reshape(len(x), side, side), y
