"""Stage `extract@<source>`: unpack data/raw/<source>/* into data/extracted/<source>/.

Each archive goes to a folder named after it (``cifar-10-python.tar.gz`` ->
``cifar-10-python/``); files that are not archives (a .pth, a .csv) are copied.
Unpacking is safe against hostile archives (see stages/sources/fetch.py) and atomic:
the output folder appears only once everything is unpacked.
"""

from __future__ import annotations

import argparse
import shutil

from stages.core import cli, config
from stages.core.files import atomic_path
from stages.core.paths import EXTRACTED, RAW
from stages.sources import fetch

#: Unpacked size (an upper bound) of the official archives, by name and packed size: the one a
#: download verified.  IDX sizes follow from the format (16-byte header + 28x28 bytes per image,
#: 8 + 1 per label); CIFAR-10's six pickled batches hold 186 MB.  Any other file gets the ratio check
#: of :func:`stages.sources.fetch.extract` (a generous multiple of its own size).
OFFICIAL_UNPACKED_BYTES = {
    ("cifar-10-python.tar.gz", 170_498_071): 200_000_000,
    ("train-images-idx3-ubyte.gz", 26_421_880): 47_040_016,
    ("train-labels-idx1-ubyte.gz", 29_515): 60_008,
    ("t10k-images-idx3-ubyte.gz", 4_422_102): 7_840_016,
    ("t10k-labels-idx1-ubyte.gz", 5_148): 10_008,
}


def archive_stem(name: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def main(name: str) -> None:
    params = config.load()
    raw = RAW / name
    if not raw.is_dir():
        raise config.ConfigError(f"{raw}: not found; run `dvc repro download@{name}` first")
    with atomic_path(EXTRACTED / name, is_dir=True) as tmp:
        for f in sorted(raw.iterdir()):
            if f.is_dir():  # a local copy already extracted (sources.<name>.path: a folder)
                shutil.copytree(f, tmp / f.name)
            elif f.suffix != ".pth" and fetch.is_archive(f):  # a .pth is a zip, but data
                fetch.extract(
                    f,
                    tmp / archive_stem(f.name),
                    max_bytes=params.data.max_extract_bytes,
                    expected_bytes=OFFICIAL_UNPACKED_BYTES.get((f.name, f.stat().st_size)),
                )
            else:
                shutil.copyfile(f, tmp / f.name)
    print(f"extract@{name}: {', '.join(sorted(p.name for p in (EXTRACTED / name).iterdir()))}")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("name", help="a source of params.yaml (sources.<name>)")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
