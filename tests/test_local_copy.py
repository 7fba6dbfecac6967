"""`sources.<name>.path`: a single archive, a folder of IDX files, the pets sample's two archives
(not the official release) and an already-extracted folder, all through download -> extract -> read;
official files are recognised by name and size and then checksum-verified; mirrors tried in order."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from stages import download, extract
from stages.core import config
from stages.core.errors import DataError
from stages.sources.formats import decoded, read_raw
from stages.sources.generate import GENERATORS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with the repository's params.yaml in the full profile; returns a setter for params."""
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "full"

    def set_path(source: str, path: str | list[str]) -> None:
        params["sources"][source]["path"] = path
        Path("params.yaml").write_text(yaml.safe_dump(params))

    return set_path


def _fetch(source: str) -> dict:
    download.main(source)
    extract.main(source)
    return json.loads(Path(f"data/raw/{source}/provenance.json").read_text())


def test_single_archive_under_its_official_name_but_not_official(project, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    GENERATORS["cifar10"](tmp_path / "mine", {"train_per_class": 3, "test_per_class": 2}, seed=0)
    archive = tmp_path / "mine" / "cifar-10-python.tar.gz"
    project("cifar10", str(archive))
    provenance = _fetch("cifar10")
    assert "sources.cifar10.path: not the official release" in capsys.readouterr().out
    assert provenance["official"] is False
    assert provenance["sha256"] == {"cifar-10-python.tar.gz": hashlib.sha256(archive.read_bytes()).hexdigest()}
    raw = read_raw(Path("data/extracted/cifar10"), "cifar_python")
    assert (len(raw.x_train), len(raw.x_test)) == (30, 20)


def test_folder_of_idx_files(project, tmp_path, capsys):
    (tmp_path / "idx").mkdir()
    GENERATORS["fashion_mnist"](
        tmp_path / "idx", {"train_per_class": 10, "test_per_class": 2, "format": "mnist_idx"}, seed=0
    )
    project("fashion_mnist", str(tmp_path / "idx"))
    provenance = _fetch("fashion_mnist")
    assert provenance["official"] is False and provenance["file_count"] == 4
    assert sorted(provenance["sha256"]) == sorted(p.name for p in (tmp_path / "idx").iterdir())
    raw = read_raw(Path("data/extracted/fashion_mnist"), "mnist_idx", options={"class_names": list("abcdefghij")})
    assert (len(raw.x_train), len(raw.x_test), raw.classes[:2]) == (100, 20, ["a", "b"])

    from stages.prepare import main as prepare

    prepare("gray28")  # the names in params.yaml are Fashion-MNIST's: say they may not fit this copy
    assert "datasets.gray28.options.class_names: names from params.yaml" in capsys.readouterr().out


def test_copy_in_another_layout_than_the_format_says(project, tmp_path):
    (tmp_path / "kaggle").mkdir()
    GENERATORS["fashion_mnist"](tmp_path / "kaggle", {"train_per_class": 30, "test_per_class": 2}, seed=0)
    project("fashion_mnist", str(tmp_path / "kaggle"))  # Kaggle's CSVs, while the source says mnist_idx
    _fetch("fashion_mnist")
    from stages.prepare import main as prepare

    expected = r"^data/extracted/fashion_mnist: not in the mnist_idx layout \(expected train-images-idx3-ubyte"
    with pytest.raises(DataError, match=expected + r".*needs params.yaml: sources.fashion_mnist.format set") as err:
        prepare("gray28")
    assert "\n" not in str(err.value) and "label_csv" in str(err.value)  # one line, naming the format that fits
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["sources"]["fashion_mnist"]["format"] = "label_csv"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    prepare("gray28")
    assert json.loads(Path("data/prepared/gray28/meta.json").read_text())["counts"]["train"] > 0


def test_pets_sample_archives_and_an_extracted_folder(project, tmp_path):
    (tmp_path / "sample").mkdir()
    GENERATORS["pets"](tmp_path / "sample", {"images_per_breed": 2}, seed=0)
    archives = [str(tmp_path / "sample" / n) for n in ("images.tar.gz", "annotations.tar.gz")]
    for path in (str(tmp_path / "sample"), archives):  # the folder holding both, or the two files
        project("pets", path)
        assert _fetch("pets")["official"] is False
        raw = decoded(read_raw(Path("data/extracted/pets"), "oxford_pets", options={"species": "all"}), (32, 32))
        assert len(raw.x_train) > 0 and len(raw.x_test) > 0
        trainval = len(raw.x_train)
        shutil.rmtree("data")
    extracted = tmp_path / "extracted"
    for name in ("images", "annotations"):
        shutil.unpack_archive(tmp_path / "sample" / f"{name}.tar.gz", extracted, "tar")
    project("pets", str(extracted))
    assert _fetch("pets")["file_count"] > 100
    raw = decoded(read_raw(Path("data/extracted/pets"), "oxford_pets", options={"species": "all"}), (32, 32))
    assert len(raw.x_train) == trainval


def test_missing_path_and_name_clash_are_one_line_errors(project, tmp_path):
    project("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"^sources.cifar10.path: .*nowhere does not exist$"):
        download.main("cifar10")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.bin").write_bytes(b"1")
    project("cifar10", [str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(DataError, match="two files would both be data/raw/…/x.bin"):
        download.main("cifar10")


def test_official_name_and_size_means_checksums_are_checked(tmp_path):
    good = tmp_path / "data.bin"
    good.write_bytes(b"official bytes")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    src = config.Source(
        files=[{"url": "https://example.org/data.bin", "sha256": digest, "size": 14}],
        format="cifar_python",
        generator="x",
    )
    assert download.official_release(src, [(good, "data.bin")]) is True
    other_name = tmp_path / "mine.bin"
    shutil.copyfile(good, other_name)
    assert download.official_release(src, [(other_name, "mine.bin")]) is False
    smaller = tmp_path / "small" / "data.bin"
    smaller.parent.mkdir()
    smaller.write_bytes(b"subset")
    assert download.official_release(src, [(smaller, "data.bin")]) is False
    good.write_bytes(b"corrupt bytes!")  # same name and size, other content: stop
    with pytest.raises(DataError, match="checksum mismatch"):
        download.official_release(src, [(good, "data.bin")])
