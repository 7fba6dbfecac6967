"""Decode folders of image files (JPEG, PNG, ...) into uint8 arrays, skipping bad files.

Layouts read here (each listed first, then decoded by the listing's ``decode`` at the caller's size):

* ``root/<class>/<file>`` (:func:`list_image_folder`), class = folder name;
* ``root/[top/]train/<class>/*`` + ``root/[top/]test/<class>/*`` (:func:`list_split_image_folder`),
  which is how the CIFAR-10 JPEG copies are laid out.

Decoding is OpenCV's (``cv2.imdecode``), run in a thread pool: OpenCV releases the GIL while it
decodes and resizes, so threads scale without the pickling cost of processes.

Hostile or broken files never crash a folder read: a zero-byte file, a truncated JPEG, a
``Thumbs.db``, or a PNG whose header claims 100000x100000 pixels each end in ``skipped`` with a
one-line reason. OpenCV itself refuses what it cannot decode (``imdecode`` returns None) and checks
the size in a header against ``OPENCV_IO_MAX_IMAGE_PIXELS`` *before* it allocates anything. OpenCV
reads that variable once, when the library loads: every command (``stages/core/cli.py``) and this module
set it before the first ``import cv2``, and decoding refuses to start if OpenCV was loaded without it
(:func:`_require_pixel_limit`). A JPEG's header is read here too: it is decoded at reduced scale
when that still covers the target size, and OpenCV checks only the reduced size.

Memory is bounded per process, not per thread: every decode (and the bytes of the file it came
from) is charged against :data:`DECODE_BUDGET`, shared by all threads, at the size its header
claims, before anything is decoded. An image just under the pixel limit costs ~1.5 GB to decode
whatever its file size (a 31 KB 1-bit PNG of 16000x16000): such images decode one at a time,
ordinary photos hundreds at a time, so peak memory no longer grows with the number of workers.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stages.core.cli import ENVIRONMENT_DEFAULTS, progress_bar

# The commands' default limit, for callers that are not a command: it must come before the first
# ``import cv2`` of the process (OpenCV reads it at load time).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", ENVIRONMENT_DEFAULTS["OPENCV_IO_MAX_IMAGE_PIXELS"])

import cv2
import numpy as np

from stages.core.errors import DataError

DEFAULT_PIXEL_LIMIT = int(ENVIRONMENT_DEFAULTS["OPENCV_IO_MAX_IMAGE_PIXELS"])  # where the variable is unusable

__all__ = [
    "DECODE_BUDGET",
    "DECODE_BUDGET_BYTES",
    "DECODE_BYTES_PER_PIXEL",
    "HEADER_BYTES",
    "MAX_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "DecodeBudget",
    "ImageError",
    "ImageFolder",
    "SplitImageFolder",
    "decode_cost",
    "decode_image",
    "image_dims",
    "image_file_dims",
    "list_image_folder",
    "list_split_image_folder",
    "open_image",
    "read_image_files",
]


def _pixel_limit() -> int:
    try:
        value = int(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"])
    except (KeyError, ValueError):
        return DEFAULT_PIXEL_LIMIT
    return value if value > 0 else DEFAULT_PIXEL_LIMIT


#: Largest width*height accepted (same value OpenCV was told, unless the user set it otherwise).
MAX_IMAGE_PIXELS = _pixel_limit()
#: Files bigger than this are not read into memory at all (no dataset image comes close).
MAX_FILE_BYTES = 256 * 2**20

# EXIF orientation is ignored: TensorFlow's decode_jpeg / Keras' image_dataset_from_directory and
# load_img do not apply it either, and the studies reproduced here trained on unrotated pixels.
_ORIENT = cv2.IMREAD_IGNORE_ORIENTATION
_CHANNELS = {"rgb": 3, "gray": 1, "grayscale": 1}

# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frame headers.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# The signatures of the formats the reasons name ("corrupt or truncated PNG data"); OpenCV decides.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


class ImageError(DataError):
    """One image could not be used: empty, not an image, corrupt, truncated or too large."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


# --------------------------------------------------------------------------- headers


def _format(data: bytes) -> str | None:
    """The format the first bytes announce, for error messages only (OpenCV decides what decodes)."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:1] == b"P" and data[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6") and data[2:3].isspace():
        return "PNM"
    return None


def _jpeg_header(data: bytes) -> tuple[tuple[int, int] | None, int | None]:
    """Walk the JPEG segments up to the first scan: ((width, height), end of the SOS header).

    Returns (None, None) when the segment chain is irregular; libjpeg is tolerant of some of that,
    so the decision is then left to OpenCV.
    """
    n = len(data)
    pos = 2
    dims = None
    while pos < n:
        if data[pos] != 0xFF:
            return None, None
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if marker == 0xD9:
            return None, None
        if pos + 2 > n:
            break
        seglen = (data[pos] << 8) | data[pos + 1]
        if seglen < 2:
            return None, None
        if marker in _JPEG_SOF and pos + 7 <= n:
            height = (data[pos + 3] << 8) | data[pos + 4]
            width = (data[pos + 5] << 8) | data[pos + 6]
            dims = (width, height)
        if marker == 0xDA:
            return dims, pos + seglen
        pos += seglen
    return dims, None  # ran out of bytes before the first scan


_limit_in_effect = False


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _require_pixel_limit() -> None:
    """Raise RuntimeError unless OpenCV refuses an image just over :data:`MAX_IMAGE_PIXELS`.

    OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` when it loads: a cv2 imported before this module (or a
    command's environment) keeps its own default (2**30 pixels), and decoding would allocate up to that.  The probe
    is a PNG without image data, claiming just over the limit: refused at once where the limit
    holds, and a failed decode of its first row where it does not.
    """
    global _limit_in_effect
    if _limit_in_effect:
        return
    side = math.isqrt(MAX_IMAGE_PIXELS) + 1  # square: libpng refuses a side over 10**6 itself
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    probe = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )
    try:
        cv2.imdecode(np.frombuffer(probe, np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:
        _limit_in_effect = "validateInputImageSize" in str(exc)
    if not _limit_in_effect:
        raise RuntimeError(
            f"OpenCV does not refuse images over {MAX_IMAGE_PIXELS} pixels: cv2 was loaded before "
            "OPENCV_IO_MAX_IMAGE_PIXELS was set; import this module (or set the variable) before cv2"
        )


def _refusal(exc: cv2.error, fmt: str | None) -> str:
    """The reason for an ImageError from OpenCV's exception, on one line."""
    text = str(exc)
    what = f"{fmt} header" if fmt else "header"
    if "validateInputImageSize" in text:  # OpenCV's check of the header's size, before it allocates
        if "PIXELS" in text:
            return f"{what} claims an image over the limit of {MAX_IMAGE_PIXELS} pixels (OPENCV_IO_MAX_IMAGE_PIXELS)"
        if "> 0" in text:
            return f"{what} claims an empty image"
        return f"{what} claims an image over OpenCV's limit of {2**20} pixels a side"
    last = [line for line in text.splitlines() if line.strip()]
    return f"cannot decode: {last[-1].strip() if last else 'OpenCV error'}"


# --------------------------------------------------------------------------- decode memory

#: Bytes a decode is charged for each pixel its header claims, whatever the format and the JPEG
#: reduction. Measured here (OpenCV 5.0, peak resident memory over one decode at 4000x4000 and
#: 16000x16000): 5.9 bytes a pixel for 3-channel output from PNG of any bit depth, JPEG, TIFF, BMP or
#: WebP, 7.9 from a GIF; 2.1 to 6 for 1-channel output. A progressive JPEG decoded at 1/8 scale still
#: holds its full-size coefficients (746 MB at 16000x16000), so the reduction earns no discount.
DECODE_BYTES_PER_PIXEL = 8
#: Bytes that all the decodes of one process may hold at once, whatever its thread count: the charge
#: of one image at the pixel limit (2 GiB by default). One charged more (its pixels and its file's
#: bytes) waits until it can take the whole budget, and then decodes alone.
DECODE_BUDGET_BYTES = DECODE_BYTES_PER_PIXEL * MAX_IMAGE_PIXELS
#: Bytes of a file read before its decode is charged: they hold the PNG IHDR, the JPEG frame header
#: behind ordinary EXIF/ICC segments and what Pillow reads of other formats. A header further in
#: leaves the size unknown, and the image is charged the whole budget.
HEADER_BYTES = 64 * 1024


class DecodeBudget:
    """Bytes of memory shared by every thread of a process, taken first come, first served.

    ``with budget.hold(n):`` waits until ``n`` bytes are free; a request over the total takes the
    whole budget. The queue is strict (a large request is not overtaken by small ones, so it cannot
    starve), and a hold inside a hold of the same thread takes nothing more: the outer one was
    charged for the work. Holds are plain objects, not generators: one is taken per image, and a
    thumbnail decodes in 70 us.
    """

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.free = self.total
        self._lock = threading.Lock()  # taken directly where nobody waits: a Condition's ``with`` costs 3x
        self._cond = threading.Condition(self._lock)
        self._tickets = 0  # the next arrival's place in the queue
        self._serving = 0  # the place whose turn it is
        self._local = threading.local()

    def holding(self) -> bool:
        """Whether the calling thread is inside a :meth:`hold`."""
        return getattr(self._local, "depth", 0) > 0

    def hold(self, nbytes: int | None) -> _Hold:
        """A context manager holding ``nbytes`` (None: the whole budget) for the body of its ``with``."""
        return _Hold(self, self.total if nbytes is None else min(max(int(nbytes), 0), self.total))

    def _take(self, nbytes: int) -> None:
        with self._lock:
            if self._serving == self._tickets and self.free >= nbytes:  # no queue, and it fits
                self.free -= nbytes
                return
            ticket, self._tickets = self._tickets, self._tickets + 1
            self._cond.wait_for(lambda: self._serving == ticket and self.free >= nbytes)
            self.free -= nbytes
            self._serving += 1
            self._cond.notify_all()  # the next in the queue may fit too

    def _give(self, nbytes: int) -> None:
        with self._lock:
            self.free += nbytes
            if self._serving != self._tickets:  # someone is queued
                self._cond.notify_all()


class _Hold:
    __slots__ = ("budget", "nbytes", "outer")

    def __init__(self, budget: DecodeBudget, nbytes: int) -> None:
        self.budget, self.nbytes, self.outer = budget, nbytes, False

    def __enter__(self) -> None:
        local = self.budget._local
        depth = getattr(local, "depth", 0)
        if depth == 0:
            self.budget._take(self.nbytes)
            self.outer = True
        local.depth = depth + 1

    def __exit__(self, *exc: object) -> None:
        self.budget._local.depth -= 1
        if self.outer:
            self.budget._give(self.nbytes)


#: The budget of this process's decodes (:func:`decode_image`, :func:`open_image`, every reader).
DECODE_BUDGET = DecodeBudget(DECODE_BUDGET_BYTES)


def decode_cost(dims: tuple[int, int] | None) -> int | None:
    """Bytes to charge for decoding an image of ``dims`` (width, height); None (all) when unknown."""
    return None if dims is None else dims[0] * dims[1] * DECODE_BYTES_PER_PIXEL


_pillow_lock = threading.Lock()


def _pillow_dims(data: bytes) -> tuple[int, int] | None:
    """(width, height) from Pillow's header read (it decodes nothing), or None."""
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it the size is unknown
        return None
    # One at a time: catch_warnings swaps the process's warning filters, which threads must not
    # interleave. Its warnings (a "decompression bomb" over 89 M pixels, odd EXIF) are not the user's
    # concern here: the size is charged, and OpenCV's own limit refuses what is too large.
    with _pillow_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except Exception:  # noqa: BLE001 (whatever Pillow cannot read, or calls a bomb, is of unknown size)
            return None
    return int(width), int(height)


def image_dims(data: bytes) -> tuple[int, int] | None:
    """(width, height) that an encoded image's header claims, or None when it cannot be told.

    JPEG's frame header and PNG's IHDR are read here: they are most images, and Pillow's header read
    costs several times the decode of a thumbnail. Other formats (GIF, BMP, TIFF, WebP, ...) go to
    Pillow, which reads only their header.
    """
    fmt = _format(data)
    return _dims(data, fmt, _jpeg_header(data) if fmt == "JPEG" else (None, None))


def _dims(data: bytes, fmt: str | None, jpeg: tuple[tuple[int, int] | None, int | None]) -> tuple[int, int] | None:
    """image_dims, given ``fmt`` and ``jpeg`` (what _jpeg_header says of a JPEG)."""
    if fmt == "PNG":  # IHDR must be the first chunk (libpng refuses anything else)
        return struct.unpack_from(">II", data, 16) if len(data) >= 24 and data[12:16] == b"IHDR" else None
    if fmt == "JPEG" and jpeg[0] is not None:
        return jpeg[0]
    return _pillow_dims(data)


def _unreadable(source: str, exc: OSError) -> ImageError:
    return ImageError(source, f"cannot read file ({exc.strerror or type(exc).__name__})")


# O_NONBLOCK: a FIFO opens at once (and is refused) instead of waiting for a writer. Computed once:
# a missing attribute (O_BINARY off Windows) costs a microsecond per getattr, per image.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


def _open_regular(source: str) -> tuple[int, int]:
    """(file descriptor, size) of a regular file of at most MAX_FILE_BYTES; ImageError otherwise."""
    try:
        fd = os.open(source, _OPEN_FLAGS)
    except OSError as exc:
        raise _unreadable(source, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(source, "not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ImageError(source, f"file is {info.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit for an image")
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise _unreadable(source, exc) from None
        raise
    return fd, info.st_size


def _read_all(fd: int, nbytes: int) -> bytes:
    """The whole file, from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    # os.read, not open().read(): no io-stack objects per file (this runs per image, partly holding
    # the GIL); one read of size+1 normally returns the whole file
    data = os.read(fd, nbytes + 1)
    if len(data) != nbytes:  # short read, or the file changed size: read what is left
        parts, total = [data], len(data)
        while parts[-1] and total <= MAX_FILE_BYTES:
            parts.append(os.read(fd, 1 << 20))
            total += len(parts[-1])
        data = b"".join(parts)
    return data


class open_image:  # lower case: used like open(), ``with open_image(path) as data:``
    """``with open_image(path) as data:`` the bytes of an image file, read and kept inside the
    process's :data:`DECODE_BUDGET`.

    The first :data:`HEADER_BYTES` are read, the file's size plus the decode its header claims
    (:func:`decode_cost`) is charged, then the rest is read; the charge is held until the ``with``
    ends, so the caller decodes (and post-processes) inside it. Only regular files of at most
    :data:`MAX_FILE_BYTES` are read; others raise :class:`ImageError`. A class, not a generator:
    it runs once per image.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.source = os.fspath(path)
        #: What _jpeg_header says of the bytes when the first read got the whole file (a JPEG's
        #: decode needs it again: the walk costs as much as a tenth of a thumbnail's decode).
        self.jpeg_header: tuple[tuple[int, int] | None, int | None] | None = None

    def __enter__(self) -> bytes:
        self._fd, nbytes = _open_regular(self.source)
        self._hold = None
        try:
            head = os.read(self._fd, min(nbytes + 1, HEADER_BYTES))
            fmt = _format(head)
            jpeg = _jpeg_header(head) if fmt == "JPEG" else (None, None)
            dims = _dims(head, fmt, jpeg)
            self._hold = DECODE_BUDGET.hold(None if dims is None else nbytes + decode_cost(dims))
            self._hold.__enter__()
            if len(head) == nbytes:
                self.jpeg_header = jpeg
                return head
            return _read_all(self._fd, nbytes)
        except BaseException as exc:
            self.__exit__(None, None, None)
            if isinstance(exc, OSError):
                raise _unreadable(self.source, exc) from None
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._hold is not None:
                self._hold.__exit__()
                self._hold = None
        finally:
            os.close(self._fd)


def image_file_dims(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from an image file's header: its first :data:`HEADER_BYTES`, or the whole file
    (read inside the budget) when the header lies further in. None when it cannot be told."""
    source = os.fspath(path)
    fd, nbytes = _open_regular(source)
    try:
        head = os.read(fd, min(nbytes, HEADER_BYTES))
    except OSError as exc:
        raise _unreadable(source, exc) from None
    finally:
        os.close(fd)
    dims = image_dims(head)
    if dims is None and nbytes > len(head):
        with open_image(source) as data:
            dims = image_dims(data)
    return dims


# --------------------------------------------------------------------------- single image


_REDUCED = {
    1: {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8},
    3: {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8},
}


def _jpeg_reduction(dims: tuple[int, int] | None, size: tuple[int, int] | None) -> int:
    """The largest JPEG decode scale 1/r (r = 8, 4, 2) that still leaves at least ``size`` pixels.

    Decoding a 400x300 photo at 1/4 scale in the DCT domain costs a fraction of a full decode,
    and the INTER_AREA resize that follows shrinks a far smaller image: the main speed-up of
    preparing photo folders to CNN input sizes.
    """
    if dims is None or size is None:
        return 1
    (width, height), (target_h, target_w) = dims, size
    for r in (8, 4, 2):
        if width // r >= target_w and height // r >= target_h:
            return r
    return 1


def _check_args(size: tuple[int, int] | None, color: str) -> int:
    _require_pixel_limit()
    if color not in _CHANNELS:
        raise ValueError(f"color must be one of {sorted(_CHANNELS)}, not {color!r}")
    if size is not None and (
        len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
        or min(size) < 1
    ):
        raise ValueError(f"size must be (height, width) positive integers, not {size!r}")
    return _CHANNELS[color]


def decode_image(
    data: bytes | bytearray | memoryview | np.ndarray,
    size: tuple[int, int] | None,
    *,
    color: str = "rgb",
    interpolation: int = cv2.INTER_AREA,
    source: str = "<bytes>",
) -> np.ndarray:
    """Decode one encoded image to uint8 H x W x C (C = 3 for "rgb", 1 for "gray").

    Grayscale, RGBA (alpha dropped), CMYK and 16-bit inputs all come back as 8-bit RGB (or gray).
    ``size`` is (height, width); when given the image is resized to it with ``interpolation``
    (INTER_AREA, the right choice when shrinking). ``source`` names the file in error messages.

    Raises :class:`ImageError` (a DataError) for empty, unrecognised, corrupt, truncated or
    oversized data; it never allocates the pixels of an image over :data:`MAX_IMAGE_PIXELS`. The
    decode is charged against :data:`DECODE_BUDGET` (waiting its turn), unless the calling thread
    already holds a charge, e.g. inside ``with open_image(path) as data``.
    """
    channels = _check_args(size, color)
    if not isinstance(data, bytes):
        data = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if DECODE_BUDGET.holding():  # inside open_image's charge, which covers this decode
        return _decode(data, size, channels, interpolation, source)
    with DECODE_BUDGET.hold(decode_cost(image_dims(data))):
        return _decode(data, size, channels, interpolation, source)


def _decode(
    data: bytes,
    size: tuple[int, int] | None,
    channels: int,
    interpolation: int,
    source: str,
    jpeg: tuple[tuple[int, int] | None, int | None] | None = None,
) -> np.ndarray:
    """decode_image without the argument checks (done once per call of read_image_files) and the
    charge, which the caller holds (:func:`open_image`'s, or decode_image's own). ``jpeg``: what
    _jpeg_header says of ``data``, when known."""
    if not data:
        raise ImageError(source, "empty file (0 bytes)")
    fmt = _format(data)
    if jpeg is None:
        jpeg = _jpeg_header(data) if fmt == "JPEG" else (None, None)
    dims, scan = jpeg
    if dims is not None and dims[0] * dims[1] > MAX_IMAGE_PIXELS:  # OpenCV would check the reduced size only
        raise ImageError(source, f"JPEG header claims {dims[0]}x{dims[1]} pixels, over the limit of {MAX_IMAGE_PIXELS}")
    reduction = _jpeg_reduction(dims, size)
    if reduction > 1:  # libjpeg decodes straight to 1/2, 1/4 or 1/8 size (BGR order)
        flags = _REDUCED[channels][reduction] | _ORIENT
    elif channels == 1:
        flags = cv2.IMREAD_GRAYSCALE | _ORIENT
    else:
        flags = cv2.IMREAD_COLOR_RGB | _ORIENT  # OpenCV >= 4.11 (pinned: 5.0) decodes straight to RGB
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise ImageError(source, _refusal(exc, fmt)) from None
    if img is None or img.size == 0:
        if fmt is None:
            raise ImageError(source, "not a recognised image format")
        if dims is not None and scan is None:  # a frame header, then the bytes end
            raise ImageError(source, "truncated JPEG (ends before the image data)")
        raise ImageError(source, f"corrupt or truncated {fmt} data")
    return _finish(img, size, channels, reduction, interpolation)


def _finish(
    img: np.ndarray, size: tuple[int, int] | None, channels: int, reduction: int, interpolation: int
) -> np.ndarray:
    """A decoded image as uint8 H x W x ``channels`` RGB (or gray) of ``size``."""
    # 8 bits always: without IMREAD_ANYDEPTH OpenCV converts 16-bit images to 8 (a test holds it to that)
    if channels == 3:
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        elif reduction > 1:  # the reduced modes decode to BGR
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None and img.shape[:2] != tuple(size):
        img = cv2.resize(img, (int(size[1]), int(size[0])), interpolation=interpolation)
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img)


def _load_file(source: str, size, channels: int, interpolation: int) -> np.ndarray:
    opened = open_image(source)
    with opened as data:
        return _decode(data, size, channels, interpolation, source, opened.jpeg_header)


# --------------------------------------------------------------------------- many images

# OpenCV parallelises some calls (resize and colour conversion of large images) over its own
# thread pool (pthreads in the pip wheels). Inside our pool that can only hurt: every core already
# has a decode worker, so OpenCV's extra threads oversubscribe the CPU, and its single pool is shared
# by all callers, so concurrent calls contend for it. While a parallel read runs, OpenCV is set to
# one thread (restored afterwards; a counter keeps overlapping reads from restoring too early). A
# sequential read (workers=1) leaves OpenCV alone, so its threading still helps with large images.
# The setting is process-wide: other OpenCV users in the process run single-threaded meanwhile.
_cv_lock = threading.Lock()
_cv_depth = 0
_cv_saved = 0


@contextlib.contextmanager
def _opencv_single_threaded() -> Iterator[None]:
    global _cv_depth, _cv_saved
    with _cv_lock:
        if _cv_depth == 0:
            _cv_saved = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _cv_depth += 1
    try:
        yield
    finally:
        with _cv_lock:
            _cv_depth -= 1
            if _cv_depth == 0:
                cv2.setNumThreads(_cv_saved)


#: Below this median file size, decoding is sequential (see :func:`_small_files`).
SMALL_FILE_BYTES = 16 * 1024


def _small_files(paths: Sequence[str], sample: int = 32) -> bool:
    """True when the files are thumbnails (CIFAR-size JPEGs of 1-2 KB): each decodes in ~20 us, so
    threads spend more on handing the GIL to each other (several times per image: open, read,
    decode, resize) than they gain; measured here, 2 threads ran at 0.58x one thread on 30x30
    JPEGs, while photos a few hundred pixels wide ran 1.5x faster on 2 cores."""
    if len(paths) < 2:
        return True
    step = max(1, len(paths) // sample)
    sizes = []
    for path in paths[::step][:sample]:
        with contextlib.suppress(OSError):
            sizes.append(os.stat(path).st_size)
    return bool(sizes) and sorted(sizes)[len(sizes) // 2] < SMALL_FILE_BYTES


def read_image_files(
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int] | None,
    *,
    color: str = "rgb",
    workers: int | None = None,
    interpolation: int = cv2.INTER_AREA,
    progress: str | None = None,
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode (and resize) many image files, in parallel unless they are small.

    Returns ``(x, ok, skipped)``: ``x`` uint8 N x H x W x C holding the images that decoded, in input
    order; ``ok`` their indices into ``paths``; ``skipped`` a ``(path, reason)`` per file that did not
    decode. Never raises for a bad file. With ``size=None`` every image must have the size of the
    first one that decoded; the others are skipped with that reason. ``workers``: decode threads;
    None means one per core, or a single one for thumbnail-size files (:func:`_small_files`).

    The work is cut into chunks (a few per worker, at most 64 files each): one future per chunk, not
    per image, and each worker writes straight into the preallocated output when ``size`` is given,
    so peak memory is the output array plus one decoded image per worker. ``progress``: the label of
    a bar counting decoded images on stderr (drawn only on a terminal); None: no bar.
    """
    channels = _check_args(size, color)
    paths = [os.fspath(p) for p in paths]  # plain strings: a Path per file costs as much as a small decode
    workers = _worker_count(paths, workers)
    decoded = _Decoded(paths, size, channels, interpolation)
    _decode_in_chunks(decoded.decode_range, len(paths), workers, progress)
    return decoded.results()


def _worker_count(paths: list[str], workers: int | None) -> int:
    """``workers`` (None: one per core, or one for thumbnails), at least 1 and at most one per file."""
    if workers is None:
        workers = 1 if _small_files(paths) else (os.cpu_count() or 1)
    return max(1, min(int(workers), len(paths) or 1))


class _Decoded:
    """The outputs of one :func:`read_image_files` call, filled in place by the decode threads
    (each chunk owns its own rows, so no lock is needed)."""

    def __init__(self, paths: list[str], size: tuple[int, int] | None, channels: int, interpolation: int) -> None:
        n = len(paths)
        self.paths, self.size, self.channels, self.interpolation = paths, size, channels, interpolation
        # With a size, images go straight into the preallocated output: no list of decoded images.
        self.out = np.empty((n, size[0], size[1], channels), np.uint8) if size is not None else None
        self.loose: list[np.ndarray | None] = [None] * n if size is None else []
        self.good = np.zeros(n, dtype=bool)
        self.reasons: list[str | None] = [None] * n

    def decode_range(self, bounds: tuple[int, int]) -> int:
        """Decode the files ``bounds[0]`` to ``bounds[1] - 1``; return how many were tried."""
        for i in range(*bounds):
            try:
                img = _load_file(self.paths[i], self.size, self.channels, self.interpolation)
            except ImageError as exc:
                self.reasons[i] = exc.reason
                continue
            except Exception as exc:  # noqa: BLE001 (one file must never stop the read)
                self.reasons[i] = f"unexpected error ({type(exc).__name__}: {exc})".splitlines()[0]
                continue
            if self.out is not None:
                self.out[i] = img
            else:
                self.loose[i] = img
            self.good[i] = True
        return bounds[1] - bounds[0]

    def results(self) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
        """``(x, ok, skipped)`` as :func:`read_image_files` returns them."""
        if self.out is not None:
            x = _compact(self.out, [int(i) for i in np.flatnonzero(self.good)])
        else:
            x = _stack_same_size(self.loose, self.good, self.reasons, self.channels)  # may mark more files not good
        ok = [int(i) for i in np.flatnonzero(self.good)]
        skipped = [(self.paths[i], self.reasons[i]) for i in range(len(self.paths)) if not self.good[i]]
        return x, ok, skipped


def _decode_in_chunks(
    decode_range: Callable[[tuple[int, int]], int], n: int, workers: int, progress: str | None
) -> None:
    """Run ``decode_range`` over ``range(n)`` in chunks, on ``workers`` threads, with the progress bar."""
    chunk = max(1, min(64, math.ceil(n / (workers * 4))))
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    with progress_bar(n, progress or "", unit="img", enabled=progress is not None) as bar:
        if workers == 1 or len(bounds) <= 1:
            for b in bounds:
                bar.update(decode_range(b))
        else:
            with (
                _opencv_single_threaded(),
                ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool,
            ):
                for done in pool.map(decode_range, bounds):  # in order, on this thread: the bar needs no lock
                    bar.update(done)


def _stack_same_size(
    loose: list[np.ndarray | None], good: np.ndarray, reasons: list[str | None], channels: int
) -> np.ndarray:
    """Stack the decoded images of a ``size=None`` read; one whose size differs from the first's
    is marked not ``good``, with the reason."""
    ok = [int(i) for i in np.flatnonzero(good)]
    ref = loose[ok[0]].shape if ok else None
    for i in ok:
        shape = loose[i].shape
        if shape != ref:
            reasons[i] = (
                f"size {shape[0]}x{shape[1]} differs from the first image's {ref[0]}x{ref[1]} (give a size to resize)"
            )
            good[i] = False
    ok = [i for i in ok if good[i]]
    return np.stack([loose[i] for i in ok]) if ok else np.empty((0, 0, 0, channels), np.uint8)


def _compact(out: np.ndarray, ok: list[int]) -> np.ndarray:
    """Move the decoded rows to the front, in place, and shrink the array to them."""
    if len(ok) == len(out):
        return out
    for j, i in enumerate(ok):
        if i != j:
            out[j] = out[i]
    try:
        out.resize((len(ok), *out.shape[1:]), refcheck=False)  # no views of `out` exist
        return out
    except ValueError:
        return out[: len(ok)].copy()


# --------------------------------------------------------------------------- folders

# Folders that are never classes: hidden ones (.ipynb_checkpoints, .git) and macOS zip debris.
_IGNORED_DIRS = {"__MACOSX"}


def _class_dirs(root: Path) -> tuple[list[str], list[Path]]:
    """(class folder names, loose files directly under root), both sorted by name."""
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    names, loose = [], []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.is_dir():
            if not entry.name.startswith(".") and entry.name not in _IGNORED_DIRS:
                names.append(entry.name)
        elif entry.is_file():
            loose.append(entry)
    return names, loose


@dataclass
class ImageFolder:
    """The files of ``root/<class>/**``, listed in label then name order; :meth:`decode` reads them."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: list[int]
    loose: list[Path]  # files directly under root: in no class

    def decode(
        self,
        size: tuple[int, int] | None,
        *,
        color: str = "rgb",
        workers: int | None = None,
        interpolation: int = cv2.INTER_AREA,
        progress: str | None = None,
    ) -> dict:
        """The images decoded (straight to ``size``: see :func:`read_image_files`): ``{"x": uint8 N x H x W x C,
        "y": int64 N, "classes": [...], "files": [relative paths of the images kept], "skipped": [(relative
        path, reason)]}``, the loose files in ``root`` among the skipped. DataError naming the folder when no
        image decodes. ``progress``: see :func:`read_image_files`."""
        x, ok, skipped = read_image_files(
            self.files, size, color=color, workers=workers, interpolation=interpolation, progress=progress
        )
        rel = [p.relative_to(self.root).as_posix() for p in self.files]
        skipped_rel = _relative_skipped(self.root, self.files, rel, self.loose, skipped)
        if not ok:
            first = f"; first: {skipped_rel[0][0]}: {skipped_rel[0][1]}" if skipped_rel else ""
            raise DataError(f"{self.root}: no readable images ({len(self.files)} files tried{first})")
        return {
            "x": x,
            "y": np.asarray(self.labels, dtype=np.int64)[ok],
            "classes": list(self.classes),
            "files": [rel[i] for i in ok],
            "skipped": skipped_rel,
        }


def list_image_folder(root: str | os.PathLike, classes: Sequence[str] | None = None) -> ImageFolder:
    """``root/<class>/**/<file>``, one class per sub-folder, listed (:meth:`ImageFolder.decode` reads them).

    Classes are the folder names, sorted, unless ``classes`` gives their order (then the folders
    must be exactly those). Every file is listed, in name order: files that do not decode
    (``Thumbs.db``, ``.DS_Store``, corrupt images) and files lying directly in ``root`` end in the
    decode's ``skipped`` with a reason. Hidden folders and ``__MACOSX`` are not classes. DataError
    naming ``root`` when it is missing or has no class folders.
    """
    root = Path(root)
    found, loose = _class_dirs(root)
    classes = _folder_classes(root, found, classes)
    files, labels = _class_files(root, classes)
    return ImageFolder(root, classes, files, labels, loose)


def _folder_classes(root: Path, found: list[str], classes: Sequence[str] | None) -> list[str]:
    """The classes to read, in label order: ``classes`` once checked against the folders ``found``
    under ``root``, else the folders themselves."""
    if not found:
        raise DataError(f"{root}: no class folders found (expected {root}/<class>/<image files>)")
    if classes is None:
        return found
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {classes}")
    missing = [c for c in classes if c not in found]
    extra = [c for c in found if c not in classes]
    if missing or extra:
        raise DataError(
            f"{root}: class folders do not match the expected classes"
            f" (missing: {missing or 'none'}, unexpected: {extra or 'none'})"
        )
    return classes


def _class_files(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Every file under ``root/<class>/`` (any depth, by relative path) and its label, class by class."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        members = sorted(
            (p for p in folder.rglob("*") if p.is_file()),
            key=lambda p: p.relative_to(folder).as_posix(),
        )
        files.extend(members)
        labels.extend([label] * len(members))
    return files, labels


def _relative_skipped(
    root: Path, files: list[Path], rel: list[str], loose: list[Path], skipped: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The loose files directly under ``root``, then ``skipped``, with paths relative to ``root``
    (``rel[i]`` is ``files[i]``'s)."""
    skipped_rel = [(p.relative_to(root).as_posix(), "not inside a class folder") for p in loose]
    index = {str(p): i for i, p in enumerate(files)}
    return skipped_rel + [(rel[index[path]], reason) for path, reason in skipped]


def _find_split_base(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")

    def has_splits(p: Path) -> bool:
        return (p / "train").is_dir() and (p / "test").is_dir()

    if has_splits(root):
        return root
    candidates = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and has_splits(p)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataError(f"{root}: no train/ and test/ folders found (looked in it and its sub-folders)")
    names = ", ".join(p.name for p in candidates)
    raise DataError(f"{root}: several folders hold train/ and test/ ({names}); point at one of them")


@dataclass
class SplitImageFolder:
    """``train/<class>/*`` and ``test/<class>/*`` under ``base``, listed; :meth:`decode` reads them."""

    base: Path
    train: ImageFolder
    test: ImageFolder

    def decode(
        self,
        size: tuple[int, int] | None,
        *,
        color: str = "rgb",
        workers: int | None = None,
        interpolation: int = cv2.INTER_AREA,
        progress: str | None = None,
    ) -> dict:
        """Both splits decoded: ``{"x_train", "y_train", "x_test", "y_test", "classes", "files_train",
        "files_test", "skipped"}``, skipped paths relative to :attr:`base`. ``progress``: a label, as for
        :func:`read_image_files`, suffixed with `` train`` and `` test``."""
        kw = {"color": color, "workers": workers, "interpolation": interpolation}
        labels = {part: None if progress is None else f"{progress} {part}" for part in ("train", "test")}
        train = self.train.decode(size, progress=labels["train"], **kw)
        test = self.test.decode(size, progress=labels["test"], **kw)
        if train["x"].shape[1:] != test["x"].shape[1:]:
            raise DataError(
                f"{self.test.root}: test images are {test['x'].shape[1:]}, train images {train['x'].shape[1:]}; "
                "give a size"
            )
        skipped = [(f"train/{p}", r) for p, r in train["skipped"]] + [(f"test/{p}", r) for p, r in test["skipped"]]
        return {
            "x_train": train["x"],
            "y_train": train["y"],
            "x_test": test["x"],
            "y_test": test["y"],
            "classes": train["classes"],
            "files_train": train["files"],
            "files_test": test["files"],
            "skipped": skipped,
        }


def list_split_image_folder(root: str | os.PathLike, classes: Sequence[str] | None = None) -> SplitImageFolder:
    """``root/train/<class>/*`` and ``root/test/<class>/*`` (or the same under the single sub-folder of
    ``root`` that holds train/ and test/, e.g. ``cifar10-jpeg/``), listed; DataError when the test
    classes are not the train classes."""
    base = _find_split_base(Path(root))
    train_dir, test_dir = base / "train", base / "test"
    train_classes, _ = _class_dirs(train_dir)
    test_classes, _ = _class_dirs(test_dir)
    if classes is None and sorted(test_classes) != sorted(train_classes):
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"{test_dir}: test classes differ from train's (only in train: {only_train or 'none'},"
            f" only in test: {only_test or 'none'})"
        )
    train = list_image_folder(train_dir, classes)
    return SplitImageFolder(base, train, list_image_folder(test_dir, train.classes))
