"""Stage `download@<source>`: put a source's raw files, verified, in data/raw/<source>/.

Profile `embedded`: generate sample files in the official format (no network).
Profile `full`: take them from `sources.<name>.path` (a file, a list of files or a folder:
the official archives, a subset, or a copy already extracted), else from the `data.mirror`
folder, else download from the official URLs (mirrors tried in order) with checksum checks.
A local copy that is not the official release (other names or sizes) is used as it is, and
its files' own sha256 go into provenance.json.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from collections import Counter
from pathlib import Path

from stages.core import cli, config
from stages.core.errors import DataError
from stages.core.files import atomic_path, sha256, write_json
from stages.core.paths import RAW
from stages.sources import fetch

#: provenance.json lists each file's sha256 up to this many files; a bigger folder gets one digest.
MAX_LISTED_FILES = 50


def local_files(paths: str | list[str], label: str) -> list[tuple[Path, str]]:
    """(file, its name under data/raw/<source>/) for every file that `path` names."""
    found: list[tuple[Path, str]] = []
    for entry in [paths] if isinstance(paths, str) else paths:
        local = Path(entry).expanduser()
        if local.is_file():
            found.append((local, local.name))
        elif local.is_dir():
            files = sorted(f for f in local.rglob("*") if f.is_file())
            if not files:
                raise DataError(f"{label}: folder {local} holds no files")
            found += [(f, f.relative_to(local).as_posix()) for f in files]
        else:
            raise DataError(f"{label}: {local} does not exist")
    twice = [name for name, n in Counter(name for _, name in found).items() if n > 1]
    if twice:
        raise DataError(f"{label}: two files would both be data/raw/…/{twice[0]}; name each file once")
    return found


def official_release(src: config.Source, files: list[tuple[Path, str]]) -> bool:
    """True if ``files`` hold every official file under its name and size, checksums verified.

    A file with an official name and size but other content is corrupt: that stops the run.
    """
    by_name = {Path(name).name: path for path, name in files}
    for f in src.files:
        local = by_name.get(f.name)
        if local is None or (f.size is not None and local.stat().st_size != f.size):
            return False
    for f in src.files:
        fetch.verify(by_name[f.name], sha256=f.sha256, md5=f.md5, size=f.size)
    return True


def copy_local(params: config.Params, name: str, dest: Path) -> dict:
    """Copy `sources.<name>.path` into ``dest``; return its provenance (official or not, checksums)."""
    src, label = params.sources[name], f"sources.{name}.path"
    files = local_files(src.path, label)
    official = official_release(src, files)
    for path, rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / rel)
    sums = {rel: sha256(dest / rel) for _, rel in files}
    listing = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(sums.items()))
    if not official:
        print(
            f"{label}: not the official release (not every file of sources.{name}.files under its name and size); "
            f"using it as it is, its sha256 in data/raw/{name}/provenance.json"
        )
    return {
        "origin": f"local copy {', '.join(str(p) for p in ([src.path] if isinstance(src.path, str) else src.path))}",
        "official": official,
        "file_count": len(files),
        "bytes": sum((dest / rel).stat().st_size for _, rel in files),
        "sha256_of_listing": hashlib.sha256(listing.encode()).hexdigest(),  # `sha256sum` lines, sorted
        "sha256": sums if len(sums) <= MAX_LISTED_FILES else None,
    }


def download_file(params: config.Params, f: config.RemoteFile, dest: Path, mirror: Path | None) -> None:
    """One official file from its URLs in order (or from the mirror folder)."""
    errors = []
    for url in f.urls if mirror is None else f.urls[:1]:
        try:
            fetch.download(
                url,
                dest / f.name,
                md5=f.md5,
                sha256=f.sha256,
                size=f.size,
                mirror=mirror,
                retries=params.data.download_retries,
                timeout=params.data.download_timeout,
            )
            return
        except DataError as e:
            errors.append(str(e))
            if len(errors) < len(f.urls) and mirror is None:
                print(f"{e}; trying the next URL", file=sys.stderr)
    raise DataError(errors[-1] if len(errors) == 1 else f"{f.name}: every URL failed; last: {errors[-1]}")


def fetch_source(params: config.Params, name: str, dest: Path) -> dict:
    """Fill ``dest`` with the source's files; return their provenance."""
    src = params.sources[name]
    if params.profile == "embedded":
        from stages.sources.generate import GENERATORS  # here: its image drawing loads OpenCV

        GENERATORS[src.generator](dest, src.generated, seed=params.seed)
        return {"origin": "generated sample data", "official": False}
    if src.path:
        return copy_local(params, name, dest)
    mirror = Path(params.data.mirror).expanduser() if params.data.mirror else None
    if src.kaggle:
        from stages.sources.kaggle import archive_name, check_archive, kaggle_download

        if mirror is None:
            origin = kaggle_download(src.kaggle, dest, name)
        else:
            local = mirror / archive_name(src.kaggle)  # the archive Kaggle's client would have downloaded
            if not local.is_file():
                raise DataError(f"mirror file {local} not found (data.mirror is set, so Kaggle is not asked)")
            shutil.copyfile(local, dest / local.name)
            origin = f"mirror {mirror}"
        pinned = src.files[0]
        check_archive(name, src.kaggle, dest / archive_name(src.kaggle), pinned.size, pinned.sha256)
        return {"origin": origin, "official": True}
    for f in src.files:
        download_file(params, f, dest, mirror)
    return {"origin": f"mirror {mirror}" if mirror else "downloaded from the official URLs", "official": True}


def main(name: str) -> None:
    params = config.load()
    config.lookup(params.sources, name, "source")
    with atomic_path(RAW / name, is_dir=True) as tmp:
        provenance = fetch_source(params, name, tmp)
        files = sorted(p.name for p in tmp.iterdir())
        write_json(tmp / "provenance.json", {"source": name, "profile": params.profile, "files": files, **provenance})
    print(f"download@{name}: {len(files)} file(s), {provenance['origin']}")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("name", help="a source of params.yaml (sources.<name>)")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
