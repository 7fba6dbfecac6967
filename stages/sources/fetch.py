"""Fetch raw data: download with retries and checksums, and extract archives safely.

``download`` fetches one URL with requests (urllib3's ``Retry`` repeats failed requests) or
copies it from a local mirror folder, verifies size and checksums, and only then renames it
onto its final name.  ``extract`` unpacks tar
(any compression), zip and single-file gzip archives into a folder that appears only
when complete.

Link policy of ``extract``: every symbolic link, hard link, device, fifo or other special
member is refused, wherever it points.  Raw data sets never need them, and refusing them
all means no member can redirect a later write outside the destination.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import struct
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlparse

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from stages.core.cli import progress_bar
from stages.core.errors import DataError
from stages.core.files import atomic_path

if TYPE_CHECKING:
    from tqdm import tqdm

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
# urllib3 starts its messages with the connection: "HTTPConnectionPool(host='x', port=80): Read timed out."
_POOL_PREFIX = re.compile(r"^HTTPS?Connection(Pool)?\([^)]*\): ")
_USER_AGENT = f"cnn-repro-fetch/1.0 (python-requests {requests.__version__})"

#: Most unpacked bytes per archive byte that :func:`extract` accepts.  The real sources unpack
#: at 1x (JPEG/PNG archives, plain tar) to about 2-8x (IDX, pixel CSVs); deflate itself cannot go
#: past ~1032x, and a bomb of zeros gets there, so 50x leaves real data a wide margin.
MAX_RATIO = 50
#: Unpacked bytes always allowed, whatever the ratio (small archives of very repetitive text).
RATIO_FLOOR = 64 * 2**20

# What a corrupt or truncated archive can raise from the standard library readers.
_CORRUPT = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    OSError,
    ValueError,
    NotImplementedError,  # zip: unsupported compression method
    RuntimeError,  # zip: encrypted member
)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- verify


def _check(
    path: Path,
    label: object,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
) -> None:
    """Verify ``path``; error messages name ``label`` (the file the user knows about)."""
    if not path.is_file():
        raise DataError(f"{label}: file not found")
    if size is not None:
        actual = path.stat().st_size
        if actual != size:
            raise DataError(f"size mismatch for {label}: expected {size} bytes, got {actual}")
    wanted = {name: value.strip().lower() for name, value in (("md5", md5), ("sha256", sha256)) if value}
    if not wanted:
        return
    hashers = {name: hashlib.new(name) for name in wanted}
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read {label}: {_one_line(e)}") from None
    for name, expected in wanted.items():
        actual = hashers[name].hexdigest()
        if actual != expected:
            raise DataError(f"checksum mismatch for {label}: expected {name} {expected}, got {actual}")


def verify(
    path: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
) -> None:
    """Raise DataError unless ``path`` exists with the given size and checksums (hex)."""
    path = Path(path)
    _check(path, path, sha256=sha256, md5=md5, size=size)


# ------------------------------------------------------------------------- download


class _Cut(Exception):
    """The body ended early or the connection broke while it streamed: worth a new request."""


def _retry_notice(where: str, reason: str, delay: float) -> None:
    """The one line said before another attempt, whether urllib3 or a cut body starts it."""
    print(f"download of {where} failed ({reason}); retrying in {delay:g} s", file=sys.stderr)


class _NoticedRetry(Retry):
    """urllib3's Retry, saying on stderr what failed before each new attempt (urllib3 only logs it)."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None) -> Retry:
        new = super().increment(method, url, response, error, _pool, _stacktrace)  # raises once the budget is spent
        reason = _reason(error) if error is not None else f"HTTP {response.status}"
        where = f"{_pool.scheme}://{_pool.host}{f':{_pool.port}' if _pool.port else ''}{url}" if _pool else url
        _retry_notice(where, reason, new.get_backoff_time())
        return new


def _session(retries: int, backoff: float) -> requests.Session:
    """A session whose requests urllib3 repeats up to ``retries`` more times: connection errors,
    timeouts and HTTP 5xx, after ``backoff * 2**n`` seconds (the first retry at once); not HTTP 4xx.
    A server's Retry-After is not followed: a pipeline stage should not sleep for as long as it says."""
    retry = _NoticedRetry(
        total=retries,
        status_forcelist=range(500, 600),
        backoff_factor=backoff,
        raise_on_status=False,  # the last 5xx response comes back, for the error message
        respect_retry_after_header=False,
    )
    session = requests.Session()
    # identity: the bytes on disk are the file's own, which the checksums are of (requests would
    # otherwise ask for gzip and decode it, and some servers gzip a .tar.gz once more)
    session.headers.update({"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _summary(label: str, done: int, total: int | None, seconds: float) -> str:
    """The one line a finished download leaves in a log (where no bar is drawn)."""
    amount = f"{done / 1e6:.1f} / {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else f"{done / 1e6:.1f} MB"
    return f"{label}: {amount} in {seconds:.1f} s"


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, on one line (not requests' "Max retries exceeded" wrapper)."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    text = _one_line(getattr(inner, "reason", None) or inner)
    return _POOL_PREFIX.sub("", text) or type(exc).__name__  # the URL is in the message already


def _stream(response: requests.Response, tmp: Path, dest: Path, size: int | None, progress: bool) -> None:
    """Write the body of ``response`` into ``tmp``; raise _Cut if it ends early, DataError if it
    is larger than the expected ``size`` (a wrong file: not worth another attempt).

    ``progress``: a byte bar on a terminal (total: Content-Length, else ``size``), one summary line elsewhere.
    """
    length = response.headers.get("Content-Length", "")
    total = int(length) if length.strip().isdigit() else None
    if size is not None and total is not None and total != size:
        raise DataError(f"size mismatch for {dest}: expected {size} bytes, the server sends {total}")
    done, start = 0, time.monotonic()
    try:
        with open(tmp, "wb") as fh, progress_bar(total or size, dest.name, unit="B", enabled=progress) as bar:
            log_line = progress and bar.disable  # no terminal: one line at the end instead (close() sets disable)
            chunks = response.raw.stream(_CHUNK, decode_content=False)
            while True:
                try:
                    chunk = next(chunks, b"")
                except (urllib3.exceptions.HTTPError, OSError) as e:  # a body cut short, a read timeout
                    if total is not None and not isinstance(e, urllib3.exceptions.ReadTimeoutError):
                        raise _Cut(f"incomplete read: got {done} of {total} bytes") from None
                    raise _Cut(f"connection lost after {done} bytes: {_reason(e)}") from None
                if not chunk:
                    break
                done += len(chunk)
                if size is not None and done > size:
                    raise DataError(f"size mismatch for {dest}: expected {size} bytes, got more")
                fh.write(chunk)  # an OSError here is a local disk problem, not a network one
                bar.update(len(chunk))
    except OSError as e:
        raise DataError(f"cannot write {dest}: {_one_line(e)}") from None
    if log_line:
        print(_summary(dest.name, done, total or size, time.monotonic() - start), file=sys.stderr, flush=True)
    if total is not None and done != total:
        raise _Cut(f"incomplete read: got {done} of {total} bytes")


def _url_name(url: str, dest: Path) -> str:
    """The file name the URL ends with (what a mirror folder holds), else ``dest``'s."""
    return Path(urlparse(url).path).name or dest.name


def _fetch(
    url: str, tmp: Path, dest: Path, *, size: int | None, retries: int, timeout: float, backoff: float, progress: bool
) -> None:
    """Stream ``url`` into ``tmp`` in at most ``retries`` requests; DataError naming the URL otherwise.

    urllib3 repeats a failed request itself (:func:`_session`); a body cut short starts a new
    request here, within the same budget.
    """
    attempts = max(1, int(retries))
    hint = f"Download it yourself and set data.mirror to a folder holding {_url_name(url, dest)}"
    used, reason = 0, "no attempt made"
    while used < attempts:
        if used:
            delay = backoff * 2 ** (used - 1)
            _retry_notice(url, reason, delay)
            time.sleep(delay)
        with _session(attempts - used - 1, backoff) as session:
            try:
                response = session.get(url, stream=True, timeout=timeout)
            except (requests.ConnectionError, requests.Timeout) as e:  # urllib3 spent every attempt
                raise DataError(f"cannot download {url} after {attempts} attempts: {_reason(e)}. {hint}") from None
            except requests.RequestException as e:  # an invalid URL, a redirect loop: no attempt would do
                raise DataError(f"cannot download {url}: {_reason(e)}. {hint}") from None
            with response:
                used += 1 + len(response.raw.retries.history if response.raw.retries else ())
                if response.status_code >= 400:
                    reason = f"HTTP {response.status_code} {_one_line(response.reason)}"
                    spent = f" after {attempts} attempts" if response.status_code >= 500 else ""
                    raise DataError(f"cannot download {url}{spent}: {reason}. {hint}")
                try:
                    _stream(response, tmp, dest, size, progress)
                    return
                except _Cut as e:
                    reason = str(e)
    raise DataError(f"cannot download {url} after {attempts} attempts: {reason}. {hint}")


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    mirror: Path | None = None,
    retries: int = 4,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Fetch ``url`` to ``dest`` (or copy it from the ``mirror`` folder) and verify it.

    A ``dest`` that already verifies is kept as is.  ``retries`` is the number of attempts;
    connection errors, timeouts, HTTP 5xx and short bodies are retried after about
    ``backoff * 2**attempt`` seconds, HTTP 4xx is not, nor a body larger than ``size``.  Nothing
    is ever left under ``dest`` unless it is complete and verified.
    """
    dest = Path(dest)
    checks = {"sha256": sha256, "md5": md5, "size": size}
    name = _url_name(url, dest)
    if dest.is_dir():
        raise DataError(f"cannot download {url} to {dest}: it is a folder")
    if dest.is_file():
        try:
            _check(dest, dest, **checks)
            return dest
        except DataError as e:
            print(f"{e}; fetching it again", file=sys.stderr)
            dest.unlink()

    if mirror is not None:
        source = Path(mirror) / name
        if not source.is_file():
            raise DataError(f"mirror file {source} not found (data.mirror is set, so {url} is not downloaded)")
        with atomic_path(dest) as tmp:
            try:
                shutil.copyfile(source, tmp)
            except OSError as e:
                raise DataError(f"cannot copy {source} to {dest}: {_one_line(e)}") from None
            _check(tmp, source, **checks)
        return dest

    with atomic_path(dest) as tmp:
        _fetch(url, tmp, dest, size=size, retries=retries, timeout=timeout, backoff=backoff, progress=progress)
        _check(tmp, dest, **checks)
    return dest


# -------------------------------------------------------------------------- extract


def _safe_parts(archive: Path, name: str) -> tuple[str, ...]:
    """The path components of member ``name``; refuse absolute paths and ``..``."""
    if not name or "\x00" in name:
        raise DataError(f"refusing member {name!r} of {archive}: empty name or NUL byte")
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        raise DataError(f"refusing member {name!r} of {archive}: absolute path")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise DataError(f"refusing member {name!r} of {archive}: '..' in path")
    return parts


def _target(archive: Path, root: Path, name: str, parts: tuple[str, ...]) -> Path:
    """The output path for a member, checked to lie inside ``root``."""
    target = root.joinpath(*parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    if os.path.commonpath([real, real_root]) != real_root:
        raise DataError(f"refusing member {name!r} of {archive}: it would be written outside {root}")
    return target


def _mkdir(path: Path, archive: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {path} while extracting {archive}: {_one_line(e)}") from None


class _Corrupt(Exception):
    """Reading an archive member failed (wraps the reader's own error)."""


@dataclass(frozen=True)
class _Limit:
    """The most bytes an archive may unpack to, and why (for the error message)."""

    bytes: int
    why: str

    def refuse(self, archive: Path, name: str, what: str = "more than") -> DataError:
        return DataError(
            f"refusing member {name!r} of {archive}: {what} {self.bytes} bytes uncompressed "
            f"({self.why}; decompression bomb?)"
        )


def _limit(archive: Path, max_bytes: int, max_ratio: float, ratio_floor: int, expected: int | None) -> _Limit:
    """The tightest of the absolute cap, the ratio to the archive's size and the known unpacked size."""
    size = archive.stat().st_size
    by_ratio = int(max_ratio * size)
    limits = [
        _Limit(max_bytes, "the absolute limit"),
        _Limit(by_ratio, f"{max_ratio:g} times the archive's {size} bytes")
        if by_ratio > ratio_floor
        else _Limit(ratio_floor, f"the floor for a small archive of {size} bytes"),
    ]
    if expected is not None:
        limits.append(_Limit(expected, f"the known unpacked size of {archive.name}"))
    return min(limits, key=lambda limit: limit.bytes)


def _copy(
    src: BinaryIO, target: Path, archive: Path, name: str, written: int, limit: _Limit, bar: tqdm | None = None
) -> int:
    """Stream ``src`` into ``target``, counting bytes against ``limit`` (and on ``bar``); return the new total."""
    _mkdir(target.parent, archive)
    try:
        with open(target, "wb") as out:
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except _CORRUPT as e:  # keep reader errors apart from local write errors
                    raise _Corrupt(_one_line(e) or type(e).__name__) from e
                if not chunk:
                    break
                written += len(chunk)
                if written > limit.bytes:
                    raise limit.refuse(archive, name)
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except OSError as e:
        raise DataError(f"cannot write {target} while extracting {archive}: {_one_line(e)}") from None
    return written


def _tar_link(member: tarfile.TarInfo) -> str | None:
    """Why a link member is refused (``tarfile.data_filter`` would take one that stays inside), or None.
    Devices, fifos and unknown types: the filter refuses them (SpecialFileError)."""
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    return None


def _member_target(archive: Path, root: Path, name: str, parts: tuple[str, ...], is_dir: bool) -> Path | None:
    """Where a checked zip member's file goes; None for a folder (made here) or the archive's own root."""
    if not parts:
        if is_dir:
            return None
        raise DataError(f"refusing member {name!r} of {archive}: not a file name")
    target = _target(archive, root, name, parts)
    if is_dir:
        _mkdir(target, archive)
        return None
    return target


class _TarChecks:
    """The project's checks of a tar member, then the standard ``tarfile.data_filter``: the filter of
    ``TarFile.extractall``, which calls it on each member as it reads it, so an archive is read (and
    decompressed) once and refused at its first hostile member.  Declared sizes are the written ones:
    tarfile copies exactly ``member.size`` bytes, and a shorter stream is a ReadError."""

    def __init__(self, archive: Path, limit: _Limit, max_members: int, progress: Callable[[], None]) -> None:
        self.archive, self.limit, self.max_members, self.progress = archive, limit, max_members, progress
        self.members = self.declared = 0

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        self.progress()
        archive, name = self.archive, member.name
        if self.members >= self.max_members:
            raise DataError(f"refusing {archive}: more than {self.max_members} members (at {name!r})")
        self.members += 1
        problem = _tar_link(member)
        if problem:
            raise DataError(f"refusing member {name!r} of {archive}: {problem}")
        parts = _safe_parts(archive, name)
        if member.isreg():
            self.declared += member.size
            if self.declared > self.limit.bytes:
                raise self.limit.refuse(archive, name, "declared sizes exceed")
        if not parts:  # "." or "./": the archive's own root
            if member.isdir():
                return None
            raise DataError(f"refusing member {name!r} of {archive}: not a file name")
        try:
            return tarfile.data_filter(member, dest)  # also: the resolved path stays inside dest
        except tarfile.FilterError as e:
            raise DataError(f"refusing member {name!r} of {archive}: {_one_line(e)}") from None


def _extract_tar(archive: Path, root: Path, limit: _Limit, max_members: int) -> None:
    """One pass of ``extractall`` through :class:`_TarChecks`; the bar counts the archive's own bytes."""
    total = archive.stat().st_size
    with open(archive, "rb") as raw, progress_bar(total, f"extract {archive.name}", unit="B") as bar:
        checks = _TarChecks(archive, limit, max_members, lambda: bar.update(raw.tell() - bar.n))
        with tarfile.open(fileobj=raw, mode="r:*") as tf:
            try:
                tf.extractall(root, filter=checks)
            except OSError as e:
                if e.errno is None:  # gzip's and bz2's own errors: a corrupt archive
                    raise
                raise DataError(f"cannot write under {root} while extracting {archive}: {_one_line(e)}") from None
            _check_tar_end(tf, archive, limit, limit.bytes - checks.declared, compressed=tf.fileobj is not raw)
        bar.update(total - bar.n)


def _check_tar_end(tf: tarfile.TarFile, archive: Path, limit: _Limit, left: int, *, compressed: bool) -> None:
    """Refuse an archive that ends without its end-of-archive block, or whose compressed stream is
    corrupt after it (``left``: the unpacked bytes the limit still allows)."""
    # tarfile stops quietly where a header is missing; a complete archive ends with a zero block,
    # which tarfile has just read past the last member.
    if tf.fileobj.tell() - tf.offset < tarfile.BLOCKSIZE:
        raise tarfile.ReadError("unexpected end of data (no end-of-archive marker)")
    # gzip, bz2 and xz check their CRC at the end of the stream, which tarfile does not read to
    while compressed and (chunk := tf.fileobj.read(_CHUNK)):
        left -= len(chunk)
        if left < 0:
            raise DataError(f"refusing {archive}: more than {limit.bytes} bytes uncompressed ({limit.why})")


def _extract_zip(archive: Path, root: Path, limit: _Limit, max_members: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise DataError(f"refusing {archive}: {len(infos)} members, more than {max_members}")
        members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        declared = 0
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise DataError(f"refusing member {info.filename!r} of {archive}: symbolic link")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise DataError(f"refusing member {info.filename!r} of {archive}: special file (mode {mode:o})")
            parts = _safe_parts(archive, info.filename)
            declared += info.file_size
            if declared > limit.bytes:
                raise limit.refuse(archive, info.filename, "declared sizes exceed")
            members.append((info, parts))
        written = 0
        with progress_bar(declared, f"extract {archive.name}", unit="B") as bar:
            for info, parts in members:
                target = _member_target(archive, root, info.filename, parts, info.is_dir())
                if target is None:
                    continue
                with zf.open(info) as src:
                    written = _copy(src, target, archive, info.filename, written, limit, bar)


def _extract_gzip(archive: Path, root: Path, limit: _Limit, max_members: int) -> None:
    name = archive.name
    for suffix in (".gz", ".gzip", ".GZ"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name += ".out"
    with gzip.open(archive, "rb") as src, progress_bar(None, f"extract {archive.name}", unit="B") as bar:
        _copy(src, root / name, archive, name, 0, limit, bar)


def _is_tar(archive: Path) -> bool:
    """True if ``archive`` opens as a (possibly compressed) tar with at least one member.

    An all-zero stream is a valid empty tar to ``tarfile``; requiring a first member keeps
    a gzip of zeros (or of raw data) on the single-file path.
    """
    try:
        with tarfile.open(archive, "r:*") as tf:
            return tf.next() is not None
    except _CORRUPT:
        return False


def _detect(archive: Path) -> Callable[[Path, Path, _Limit, int], None]:
    """Pick an extractor by content, not by file name."""
    try:
        with open(archive, "rb") as fh:
            magic = fh.read(2)
    except OSError as e:
        raise DataError(f"cannot read archive {archive}: {_one_line(e)}") from None
    if _is_tar(archive):
        return _extract_tar
    if magic == _GZIP_MAGIC:
        return _extract_gzip
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip
    except _CORRUPT:
        pass
    raise DataError(f"{archive} is not a tar, zip or gzip archive")


def is_archive(path: Path) -> bool:
    """True if ``path`` is something :func:`extract` unpacks (by content, not by name)."""
    try:
        _detect(Path(path))
    except DataError:
        return False
    return True


def extract(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int = 4 * 1024**3,
    max_members: int = 1_000_000,
    max_ratio: float = MAX_RATIO,
    ratio_floor: int = RATIO_FLOOR,
    expected_bytes: int | None = None,
) -> Path:
    """Unpack a tar (any compression), zip or single-file gzip ``archive`` into folder ``dest``.

    The type is detected from the content.  Hostile members (absolute paths, ``..``, links,
    devices), more than ``max_members`` members, or more uncompressed bytes than the tightest of
    ``max_bytes``, ``max_ratio`` times the archive's size (but at least ``ratio_floor``) and
    ``expected_bytes`` (the known unpacked size, if any) raise DataError, as do corrupt or
    truncated archives.  Sizes are checked as declared (tar, zip) and as written (zip, gzip; tarfile
    writes exactly the declared sizes), so a bomb stops as soon as it passes the limit.  A tar is read
    once, its members checked and written as they come.  ``dest`` appears (replacing any old one) only once
    extraction is complete.  Returns ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive {archive} not found")
    if dest.exists() and not dest.is_dir():
        raise DataError(f"cannot extract {archive} to {dest}: it exists and is not a folder")
    extractor = _detect(archive)
    limit = _limit(archive, max_bytes, max_ratio, ratio_floor, expected_bytes)
    with atomic_path(dest, is_dir=True) as tmp:
        try:
            extractor(archive, tmp, limit, max_members)
        except (*_CORRUPT, _Corrupt) as e:
            reason = _one_line(e) or type(e).__name__
            raise DataError(f"corrupt or truncated archive {archive}: {reason}") from None
    return dest
