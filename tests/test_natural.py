"""natural (seeds/004) and the cifar-rgb transfer half (seeds/002): generator, image-folder layout,
splits, architectures, FLOPs, Kaggle credentials, confusion pairs."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from stages.core import config
from stages.core.errors import DataError
from stages.core.files import sha256
from stages.prepare import split
from stages.sources import fetch
from stages.sources.formats import decoded, find_class_root, read_raw
from stages.sources.generate import GENERATORS, NATURAL_CLASSES

RESNET50_PARAMS = 23_653_256  # the report's model summary (Figure 2.5.1.1)


@pytest.fixture(scope="module")
def natural_zip(tmp_path_factory):
    dest = tmp_path_factory.mktemp("raw")
    GENERATORS["natural_images"](dest, {"per_class": 6, "min_size": 40, "max_size": 90}, seed=0)
    return dest / "natural-images.zip"


@pytest.fixture(scope="module")
def extracted(natural_zip, tmp_path_factory):
    root = tmp_path_factory.mktemp("extracted")
    fetch.extract(natural_zip, root / "natural-images", max_bytes=10**9)
    return root


def test_generator_writes_the_kaggle_layout(natural_zip):
    names = zipfile.ZipFile(natural_zip).namelist()
    files = [n for n in names if not n.endswith("/")]
    assert {n.split("/")[1] for n in files} == set(NATURAL_CLASSES)
    assert all(n.startswith("natural_images/") for n in files)
    assert "natural_images/airplane/airplane_0000.jpg" in files
    assert "natural_images/airplane/Thumbs.db" in files
    assert "natural_images/car/car_0006.jpg" in files  # the corrupt one
    assert any(n.endswith(".png") for n in files)  # an RGBA PNG among the JPEGs
    assert len(files) == 8 * 6 + 2
    again = natural_zip.parent / "again"
    again.mkdir()
    GENERATORS["natural_images"](again, {"per_class": 6, "min_size": 40, "max_size": 90}, seed=0)
    assert (again / "natural-images.zip").read_bytes() == natural_zip.read_bytes()  # deterministic


def test_image_folder_is_found_and_read_with_bad_files_listed(extracted):
    assert find_class_root(extracted).name == "natural_images"  # two levels down
    raw = decoded(read_raw(extracted, "image_folder"), (50, 50))
    assert raw.classes == NATURAL_CLASSES
    assert raw.x_train.shape == (8 * 6, 50, 50, 3) and raw.x_train.dtype == np.uint8
    assert raw.x_test is None  # prepare splits one off with test_fraction
    assert np.bincount(raw.y_train).tolist() == [6] * 8  # the gray JPEG and RGBA PNG are kept, as RGB
    skipped = dict(raw.skipped)
    assert set(skipped) == {
        "natural-images/natural_images/airplane/Thumbs.db",
        "natural-images/natural_images/car/car_0006.jpg",
    }
    assert all(reason for reason in skipped.values())


def test_the_stated_format_is_read_and_another_layout_refused_in_one_line(tmp_path):
    GENERATORS["cifar10"](tmp_path, {"train_per_class": 1, "test_per_class": 1}, seed=0)
    fetch.extract(next(tmp_path.glob("*.tar.gz")), tmp_path / "x", max_bytes=10**9)
    assert read_raw(tmp_path / "x", "cifar_python").x_train.shape == (10, 32, 32, 3)
    expected = r"x: not in the image_folder layout \(expected <class>/<images>: .*needs sources.cifar10.format set"
    with pytest.raises(DataError, match=expected):
        read_raw(tmp_path / "x", "image_folder", setting="sources.cifar10.format")
    empty = tmp_path / "empty" / "one"
    empty.mkdir(parents=True)
    (empty / "readme.txt").write_text("no images")
    assert find_class_root(tmp_path / "empty") is None


def test_stratified_split_proportions():
    y = np.repeat(np.arange(8), [727, 968, 885, 702, 843, 1000, 788, 986])  # the real class counts
    x = np.arange(len(y))
    x_rest, x_test, y_rest, y_test = split(x, y, 0.2, seed=42)
    x_train, x_val, y_train, y_val = split(x_rest, y_rest, 0.1, seed=42)
    assert len(x_test) == pytest.approx(0.2 * len(y), abs=1)
    assert len(x_val) == pytest.approx(0.1 * len(y_rest), abs=1)
    for part in (y_train, y_val, y_test):  # each class keeps its share in every split
        np.testing.assert_allclose(np.bincount(part) / len(part), np.bincount(y) / len(y), atol=0.005)
    assert len(set(x_train) | set(x_val) | set(x_test)) == len(y)
    assert np.array_equal(split(x, y, 0.2, seed=42)[1], x_test)  # seeded


def test_no_validation_split_still_leaves_the_training_images_in_seeded_random_order():
    """val_fraction 0 (cifar10_all): a class-sorted archive must not stay sorted, or the first images (the
    whitening stem's, max_train_examples') are one class."""
    y = np.repeat(np.arange(10), 100)  # as an image folder train/<class>/ reads
    x = np.arange(len(y))
    x_train, x_val, y_train, _ = split(x, y, 0.0, seed=42)
    assert len(x_val) == 0 and sorted(x_train) == list(x) and (y_train == y[x_train]).all()
    assert len(set(y_train[:100])) == 10  # the first 100 hold every class
    assert np.array_equal(split(x, y, 0.0, seed=42)[0], x_train)  # seeded


def test_params_declare_the_study():
    params = config.load()
    ds = params.datasets["natural_images"]
    assert ds.image_size == [50, 50] and ds.test_fraction > 0 and ds.val_fraction > 0
    assert params.sources["natural_images"].kaggle == "prasunroy/natural-images"
    from stages.training.settings import resolve

    transfer = resolve(params.model_copy(update={"profile": "full"}), "cifar_rgb_transfer")
    assert (transfer.batch_size, transfer.epochs, transfer.model_args["input_size"]) == (256, 4, 299)


def test_resnet50_matches_the_report_and_the_light_model_is_a_fraction():
    from stages.models import build
    from stages.models.flops import model_flops as flops

    resnet = build("natural_resnet50", (50, 50, 3), 8, weights=None)
    assert resnet.count_params() == RESNET50_PARAMS
    assert sum(int(np.prod(w.shape)) for w in resnet.trainable_weights) == 23_600_136
    light = build("natural_light", (50, 50, 3), 8)
    assert light.count_params() < 0.1 * RESNET50_PARAMS
    assert flops(light) < 0.1 * flops(resnet)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 50, 50, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(light(images)).sum(axis=1), 1.0, rtol=1e-5)


def test_flops_counts_conv_and_dense_macs():
    import keras

    from stages.models.flops import model_flops as flops

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 64 positions x 3*3*3*4
    x = keras.layers.SeparableConv2D(5, 3)(x)  # 36 x (3*3*4 + 4*5)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2)(x)  # 180*2
    model = keras.Model(inputs, outputs)
    assert flops(model) == 2 * (64 * 108 + 36 * (36 + 20) + 360)


def test_transfer_head_trainable_count():
    from stages.models import build

    model = build("cifar_rgb_transfer", (32, 32, 3), 10, input_size=75, weights=None)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 855_178
    assert model.count_params() == 55_193_194  # the report's total (the head does not depend on the size)
    tuned = build("cifar_rgb_transfer", (32, 32, 3), 10, input_size=75, weights=None, trainable_layers=3)
    assert sum(int(np.prod(w.shape)) for w in tuned.trainable_weights) > 855_178


def test_imagenet_weights_offline_name_the_inception_resnet_file(tmp_path, monkeypatch):
    from stages.core.errors import ConfigError
    from stages.models.weights import resolve

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(ConfigError, match="inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        resolve("imagenet", "inception_resnet_v2")


def test_kaggle_without_credentials_says_what_to_set(tmp_path, monkeypatch):
    from stages.sources.kaggle import kaggle_download

    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        kaggle_download("prasunroy/natural-images", tmp_path, "natural_images")
    message = str(err.value)
    for needle in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", str(tmp_path / "nowhere"), "natural-images.zip"):
        assert needle in message
    # one line, naming the two ways around Kaggle as the -S settings to give
    assert "\n" not in message and "-S sources.natural_images.path=" in message and "-S data.mirror=" in message


def test_kaggle_without_the_client_says_pip_install(tmp_path, monkeypatch):
    import sys

    from stages.sources.kaggle import kaggle_download

    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    monkeypatch.setitem(sys.modules, "kaggle", None)  # import kaggle -> ImportError
    monkeypatch.setitem(sys.modules, "kaggle.api", None)
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)
    with pytest.raises(DataError, match="pip install kaggle"):
        kaggle_download("prasunroy/natural-images", tmp_path)


def test_mirror_serves_a_kaggle_source(tmp_path, natural_zip):
    from stages.download import fetch_source

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "natural-images.zip").write_bytes(natural_zip.read_bytes())
    params = config.load()
    params = params.model_copy(
        update={"profile": "full", "data": params.data.model_copy(update={"mirror": str(mirror)})}
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    assert fetch_source(params, "natural_images", dest)["origin"].startswith("mirror")
    assert (dest / "natural-images.zip").read_bytes() == natural_zip.read_bytes()


def test_a_kaggle_archive_unlike_the_pinned_one_is_refused_in_one_line(tmp_path, natural_zip):
    from stages.download import fetch_source
    from stages.sources.kaggle import archive_name

    assert (
        archive_name("prasunroy/natural-images/1") == archive_name("prasunroy/natural-images") == "natural-images.zip"
    )
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "natural-images.zip").write_bytes(natural_zip.read_bytes())
    params = config.load()
    source = params.sources["natural_images"]

    def pinned(digest: str) -> config.Params:
        files = [source.files[0].model_copy(update={"size": natural_zip.stat().st_size, "sha256": digest})]
        return params.model_copy(
            update={
                "profile": "full",
                "data": params.data.model_copy(update={"mirror": str(mirror)}),
                "sources": {**params.sources, "natural_images": source.model_copy(update={"files": files})},
            }
        )

    (tmp_path / "ok").mkdir()
    assert fetch_source(pinned(sha256(natural_zip)), "natural_images", tmp_path / "ok")["official"] is True
    (tmp_path / "changed").mkdir()
    with pytest.raises(DataError) as err:
        fetch_source(pinned("0" * 64), "natural_images", tmp_path / "changed")
    message = str(err.value)
    assert "\n" not in message and message.startswith("Kaggle dataset prasunroy/natural-images: natural-images.zip")
    assert "checksum mismatch" in message and "sources.natural_images.files' size and sha256" in message


def test_top_confusions_pick_the_largest_off_diagonal_cells():
    from stages.reporting.evaluation import top_confusions

    cm = np.array([[50, 9, 1], [0, 40, 3], [7, 0, 30]])
    top = top_confusions(cm, ["airplane", "flower", "car"])
    assert [(c["true"], c["predicted"], c["count"]) for c in top] == [
        ("airplane", "flower", 9),
        ("car", "airplane", 7),
        ("flower", "car", 3),
    ]


def test_real_natural_images_mirror_is_read(shared_datasets, tmp_path):
    archive = shared_datasets / "natural-images-30px.zip"
    if not archive.is_file():
        pytest.skip("natural-images-30px.zip not in the shared datasets")
    with zipfile.ZipFile(archive) as zf:  # a few classes' first files only: keep the test quick
        picks = [n for n in zf.namelist() if n.split("/")[-1].endswith(("_0000.jpg", "_0001.jpg", "Thumbs.db"))]
        zf.extractall(tmp_path, members=picks)
    raw = decoded(read_raw(tmp_path, "image_folder"), (50, 50))
    assert len(raw.classes) == 8
    assert any(f.endswith("Thumbs.db") for f, _ in raw.skipped)
