"""params.yaml's download sources against the registry of a maintained library: tensorflow-datasets
records, for every file its builders download, the URL, size and sha256 (its checksums files)."""

from __future__ import annotations

import importlib.resources
from pathlib import PurePosixPath

import pytest

from stages.core import config
from tests.conftest import REPO

# the tensorflow-datasets builder that downloads the same files as our source
TFDS_BUILDERS = {"pets": "oxford_iiit_pet", "fashion_mnist": "fashion_mnist"}


def registered(builder: str) -> dict[str, tuple[str, int, str]]:
    """tensorflow-datasets' checksums of ``builder``: file name -> (url, size, sha256). Read as data:
    importing the package would start TensorFlow."""
    root = importlib.resources.files("tensorflow_datasets")
    for candidate in (root / "datasets" / builder / "checksums.tsv", root / "url_checksums" / f"{builder}.txt"):
        if candidate.is_file():
            rows = [line.split("\t") for line in candidate.read_text().splitlines() if line.strip()]
            return {PurePosixPath(url).name: (url, int(size), sha) for url, size, sha, *_ in rows}
    raise AssertionError(f"tensorflow-datasets registers no checksums for {builder}")


@pytest.mark.parametrize("source", sorted(TFDS_BUILDERS))
def test_source_files_match_the_tensorflow_datasets_registry(source):
    """Same size and sha256 for every file, and the registry's URL is one of our mirrors."""
    files = config.load(REPO / "params.yaml").sources[source].files
    theirs = registered(TFDS_BUILDERS[source])
    for file in files:
        urls = [file.url] if isinstance(file.url, str) else file.url
        name = PurePosixPath(urls[0]).name
        assert name in theirs, f"{source}: tensorflow-datasets does not download {name}"
        url, size, sha256 = theirs[name]
        assert (file.size, file.sha256) == (size, sha256), f"{source}: {name}"
        assert url in urls, f"{source}: {name}: tensorflow-datasets downloads it from {url}"
