"""Stage `download@<source>`: put a source's raw files, verified, in data/raw/<source>/.

Profile `embedded`: generate sample files in the official format (no network).
Profile `full`: take them from `sources.<name>.path` (a local copy), else from the
`data.mirror` folder, else download from the official URL with checksum checks.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

from stages import config, fetch
from stages.errors import DataError
from stages.generate import GENERATORS
from stages.io import atomic_path, write_json
from stages.paths import RAW


def fetch_source(params: config.Params, name: str, dest: Path) -> str:
    """Fill ``dest`` with the source's files; return how they were obtained."""
    src = params.sources[name]
    if params.profile == "embedded":
        GENERATORS[src.generator](dest, src.generated, seed=params.seed)
        return "generated sample data"
    if src.path:
        local = Path(src.path).expanduser()
        if not local.is_file():
            raise DataError(f"sources.{name}.path: {local} does not exist or is not a file")
        shutil.copyfile(local, dest / local.name)
        return f"local copy {local}"
    mirror = Path(params.data.mirror).expanduser() if params.data.mirror else None
    if src.kaggle:
        from stages.kaggle import archive_name, kaggle_download

        if mirror is None:
            return kaggle_download(src.kaggle, dest)
        local = mirror / archive_name(src.kaggle)  # the archive Kaggle's client would have downloaded
        if not local.is_file():
            raise DataError(f"mirror file {local} not found (data.mirror is set, so Kaggle is not asked)")
        shutil.copyfile(local, dest / local.name)
        return f"mirror {mirror}"
    for f in src.files:
        fetch.download(
            f.url,
            dest / Path(urlparse(f.url).path).name,
            md5=f.md5,
            sha256=f.sha256,
            size=f.size,
            mirror=mirror,
            retries=params.data.download_retries,
            timeout=params.data.download_timeout,
        )
    return f"mirror {mirror}" if mirror else "downloaded from the official URLs"


def main(name: str) -> None:
    params = config.load()
    if name not in params.sources:
        raise config.ConfigError(f"unknown source {name!r}{config.did_you_mean(name, params.sources)}")
    with atomic_path(RAW / name, is_dir=True) as tmp:
        origin = fetch_source(params, name, tmp)
        files = sorted(p.name for p in tmp.iterdir())
        write_json(
            tmp / "provenance.json", {"source": name, "origin": origin, "profile": params.profile, "files": files}
        )
    print(f"download@{name}: {len(files)} file(s), {origin}")


if __name__ == "__main__":
    from stages.cli import run

    run(main, sys.argv[1:])
