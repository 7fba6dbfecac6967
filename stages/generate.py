"""Embedded sample data: raw files in each source's *official* format, made locally.

The embedded profile's `download` stage calls these instead of fetching, so the
same extract/prepare/train/evaluate code runs on them as on the real datasets.
Each generator writes into ``dest`` the files the real source would provide.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.synthetic import shape_dataset

GENERATORS: dict[str, Callable[..., None]] = {}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def generator(fn: Callable[..., None]) -> Callable[..., None]:
    GENERATORS[fn.__name__] = fn
    return fn


def deterministic_tar_gz(path: Path, members: dict[str, bytes]) -> None:
    """A .tar.gz whose bytes depend only on its content (fixed mtimes, no gzip timestamp)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs = sorted({str(Path(n).parent) for n in members} - {"."})
            for d in dirs:
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for name in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(members[name]), 0o644
                tar.addfile(info, io.BytesIO(members[name]))


@generator
def cifar10(dest: Path, options: dict[str, Any], seed: int) -> None:
    """``cifar-10-python.tar.gz`` holding ``cifar-10-batches-py/`` of generated 32x32 images."""
    from stages.readers.cifar import write_cifar_python

    train_n, test_n = int(options.get("train_per_class", 500)), int(options.get("test_per_class", 100))
    x_train, y_train = shape_dataset(train_n, 10, 32, 3, seed)
    x_test, y_test = shape_dataset(test_n, 10, 32, 3, seed + 1)
    batches = dest / "batches"
    write_cifar_python(batches / "cifar-10-batches-py", x_train, y_train, x_test, y_test, CIFAR10_CLASSES)
    members = {
        f"cifar-10-batches-py/{f.name}": f.read_bytes() for f in sorted((batches / "cifar-10-batches-py").iterdir())
    }
    deterministic_tar_gz(dest / "cifar-10-python.tar.gz", members)
    for f in (batches / "cifar-10-batches-py").iterdir():
        f.unlink()
    (batches / "cifar-10-batches-py").rmdir()
    batches.rmdir()
