"""Kaggle datasets through Kaggle's own client library (``pip install kaggle``).

The client is optional: it is imported only here, only when a source with ``kaggle:``
is fetched in the full profile, and only after the credentials were found, because
``import kaggle`` itself tries to authenticate. Without credentials or without the
package the stage stops with one line saying exactly what to set or install. A local
copy of the archive (``sources.<name>.path``, or ``data.mirror`` holding
:func:`archive_name`) needs neither.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.core.errors import DataError
from stages.sources import fetch


def archive_name(slug: str) -> str:
    """The file Kaggle's client downloads for ``owner/dataset`` or ``owner/dataset/<version>``: ``dataset.zip``."""
    return f"{slug.strip('/').split('/')[1]}.zip"


def check_archive(source: str, slug: str, archive: Path, size: int | None, sha256: str | None) -> None:
    """DataError in one line unless ``archive`` has the size and sha256 that ``sources.<source>.files`` pins:
    a Kaggle dataset can be replaced under the same name, and the study's numbers are for the pinned one."""
    try:
        fetch.verify(archive, size=size, sha256=sha256)
    except DataError as e:
        raise DataError(
            f"Kaggle dataset {slug}: {archive.name} is not the archive params.yaml pins ({e}); if Kaggle changed "
            f"the dataset, check the new one and update sources.{source}.files' size and sha256"
        ) from None


def config_dir() -> Path:
    """Where the client looks for kaggle.json: $KAGGLE_CONFIG_DIR, else ~/.kaggle."""
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle").expanduser()


def credentials_source() -> str | None:
    """Which credentials the client would use, or None when there are none."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for name in ("kaggle.json", "access_token"):
        if (config_dir() / name).is_file():
            return str(config_dir() / name)
    return None


def check_credentials(slug: str, source_name: str = "<source>") -> str:
    source = credentials_source()
    if source is None:
        raise DataError(
            f"Kaggle dataset {slug}: no Kaggle credentials. Set KAGGLE_USERNAME and KAGGLE_KEY, or put "
            f"kaggle.json (from https://www.kaggle.com/settings, 'Create New Token') in {config_dir()} "
            f"(or set KAGGLE_CONFIG_DIR to its folder); or skip Kaggle: -S sources.{source_name}.path=<a local "
            f"copy of {archive_name(slug)}>, or -S data.mirror=<a folder holding {archive_name(slug)}>"
        )
    return source


def kaggle_download(slug: str, dest: Path, source_name: str = "<source>") -> str:
    """Download dataset ``slug`` (owner/name[/version]) as ``dest/<name>.zip``; return how it was obtained."""
    source = check_credentials(slug, source_name)
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise DataError(
            f"Kaggle dataset {slug}: the Kaggle client is not installed: `pip install kaggle` "
            f"(or set the source's `path` to a local copy of {archive_name(slug)})"
        ) from None
    api = KaggleApi()
    try:
        api.authenticate()
        api.dataset_download_files(slug, path=str(dest), unzip=False, quiet=False)
    except (Exception, SystemExit) as exc:  # the client exits or raises HTTP errors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"Kaggle dataset {slug}: download failed ({reason}; credentials from {source})") from None
    archive = dest / archive_name(slug)
    if not archive.is_file():
        got = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise DataError(f"Kaggle dataset {slug}: expected {archive.name} after the download, got {got}")
    return f"Kaggle dataset {slug}"
