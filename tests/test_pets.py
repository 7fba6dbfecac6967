"""pets-unet (seeds/000 part 1): the Oxford-IIIT Pet layout, its reader, the U-Net, joint
augmentation, segmentation metrics and the prediction command. Small and fast (< 1 min)."""

from __future__ import annotations

import re
import tarfile

import cv2
import numpy as np
import pytest

from stages.core.errors import DataError
from stages.reporting.evaluation import segmentation_metrics
from stages.sources import fetch
from stages.sources.generate import GENERATORS, PET_BREEDS, PET_ODD_FILES
from stages.sources.readers.pets import read_pets

LINE = re.compile(r"^(\S+) (\d+) ([12]) (\d+)$")


@pytest.fixture(scope="module")
def pets_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    GENERATORS["pets"](raw, {"images_per_breed": 2}, seed=0)
    return raw


@pytest.fixture()
def pets_root(pets_raw, tmp_path):
    """The generated archives, extracted as `extract@pets` does (a fresh copy per test)."""
    for name in ("images", "annotations"):
        fetch.extract(pets_raw / f"{name}.tar.gz", tmp_path / name)
    return tmp_path


# --------------------------------------------------------------------------- generated layout


def test_generated_archives_are_uncompressed_tar_under_tar_gz_names(pets_raw):
    for name in ("images.tar.gz", "annotations.tar.gz"):
        data = (pets_raw / name).read_bytes()
        assert data[:2] != b"\x1f\x8b"  # not gzip, like the official archives
        with tarfile.open(pets_raw / name, "r:") as tar:
            assert all(m.name.split("/")[0] == name.split(".")[0] for m in tar.getmembers())


def test_generated_layout_matches_the_official_one(pets_root):
    images = pets_root / "images" / "images"
    ann = pets_root / "annotations" / "annotations"
    jpgs = sorted(p.stem for p in images.glob("*.jpg"))
    assert {n.rsplit("_", 1)[0] for n in jpgs} == set(PET_BREEDS) and len(PET_BREEDS) == 37
    assert sum(b[0].islower() for b in PET_BREEDS) == 25  # dog breeds lower-case, 12 cat breeds capitalised
    assert all(re.fullmatch(r"[A-Za-z_]+_\d+", n) for n in jpgs)
    assert set(PET_ODD_FILES) <= set(jpgs) and len(PET_ODD_FILES) == 12
    assert list(images.glob("*.mat"))
    heads = {(images / f"{n}.jpg").read_bytes()[:4] for n in PET_ODD_FILES}
    assert b"\x89PNG" in heads  # some "jpg"s are PNG data
    # trimaps + macOS junk that is not an image; xmls; the three lists
    trimaps = ann / "trimaps"
    junk = list(trimaps.glob("._*.png"))
    assert junk and cv2.imdecode(np.frombuffer(junk[0].read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED) is None
    assert list((ann / "xmls").glob("*.xml"))
    text = (ann / "list.txt").read_text().splitlines()
    assert text[0].startswith("#") and any(line.startswith("#SPECIES") for line in text)
    rows = [LINE.match(line) for line in text if not line.startswith("#")]
    assert rows and all(rows)
    for m in rows:
        name, class_id, species = m.group(1), int(m.group(2)), int(m.group(3))
        assert species == (1 if name[0].isupper() else 2)  # 1 cat, 2 dog
        assert PET_BREEDS[class_id - 1] == name.rsplit("_", 1)[0]
        trimap = cv2.imread(str(trimaps / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert trimap.ndim == 2 and set(np.unique(trimap)) <= {1, 2, 3}
    split = {p: [line.split()[0] for line in (ann / f"{p}.txt").read_text().splitlines()] for p in ("trainval", "test")}
    assert not set(split["trainval"]) & set(split["test"])
    assert sorted(split["trainval"] + split["test"]) == sorted(m.group(1) for m in rows)


# --------------------------------------------------------------------------- reader


def _listed(root, part, dogs_only=True):
    lines = (root / "annotations" / "annotations" / f"{part}.txt").read_text().split("\n")
    return [line.split()[0] for line in lines if line and (line[0].islower() or not dogs_only)]


def test_reader_takes_dogs_only_and_honours_the_lists(pets_root):
    x_train, y_train, x_test, y_test, skipped = read_pets(pets_root, (96, 96), species="dog")
    assert len(x_train) == len(_listed(pets_root, "trainval")) and len(x_test) == len(_listed(pets_root, "test"))
    assert x_train.shape[1:] == (96, 96, 3) and y_train.shape[1:] == (96, 96) and y_train.dtype == np.uint8
    assert set(np.unique(np.concatenate([y_train, y_test]))) == {0, 1, 2}
    assert all("Abyssinian" not in f for f, _ in skipped)  # no cat even looked at
    every = read_pets(pets_root, (96, 96), species="all")
    assert len(every[0]) == len(_listed(pets_root, "trainval", dogs_only=False)) > len(x_train)
    # a shorter trainval list is honoured; without lists, every dog image is training data
    ann = pets_root / "annotations" / "annotations"
    (ann / "trainval.txt").write_text("".join(f"{n} 2 2 1\n" for n in _listed(pets_root, "trainval")[:3]))
    assert len(read_pets(pets_root, (96, 96))[0]) == 3
    (ann / "trainval.txt").unlink()
    x_all, _, x_none, _, _ = read_pets(pets_root, (96, 96))
    assert x_none is None and len(x_all) >= len(x_train) + len(x_test)


def _tiny_layout(root, trimap, image=None, name="pug_1"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    img = image if image is not None else np.full((*trimap.shape, 3), 128, np.uint8)
    cv2.imwrite(str(root / "images" / f"{name}.jpg"), img)
    cv2.imwrite(str(root / "annotations" / "trimaps" / f"{name}.png"), trimap)


def test_trimap_values_are_offset_and_resized_nearest(tmp_path):
    rng = np.random.default_rng(0)
    trimap = rng.choice(np.array([1, 3], np.uint8), size=(150, 211))  # pet and border only
    trimap[:40, :60] = 2
    _tiny_layout(tmp_path, trimap)
    exact = read_pets(tmp_path, (150, 211))[1][0]
    np.testing.assert_array_equal(exact, trimap - 1)
    small = read_pets(tmp_path, (96, 96))[1][0]
    # an interpolating resize would create background (1) between pet (0) and border (2)
    assert set(np.unique(small[40:, 60:])) <= {0, 2}
    assert set(np.unique(small)) == {0, 1, 2}


def test_bad_trimap_value_names_the_file(tmp_path):
    trimap = np.full((50, 50), 2, np.uint8)
    trimap[10, 10] = 4
    _tiny_layout(tmp_path, trimap, name="boxer_7")
    with pytest.raises(DataError, match=r"boxer_7\.png.*\[4\]"):
        read_pets(tmp_path, (96, 96))


def test_missing_mask_and_broken_images_are_skipped_odd_formats_converted(tmp_path):
    trimap = np.full((60, 80), 2, np.uint8)
    trimap[20:40, 20:60] = 1
    _tiny_layout(tmp_path, trimap, name="pug_1")
    img = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    images, trimaps = tmp_path / "images", tmp_path / "annotations" / "trimaps"
    odd = {
        "pug_2": cv2.imencode(".jpg", img[..., 0])[1].tobytes(),  # grayscale JPEG
        "pug_3": cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGRA))[1].tobytes(),  # RGBA PNG as .jpg
        "pug_4": cv2.imencode(".jpg", img)[1].tobytes()[:300],  # truncated
    }
    from PIL import Image

    Image.fromarray(img).convert("CMYK").save(images / "pug_5.jpg", format="JPEG")
    for name, data in odd.items():
        (images / f"{name}.jpg").write_bytes(data)
    for n in range(2, 6):
        cv2.imwrite(str(trimaps / f"pug_{n}.png"), trimap)
    cv2.imwrite(str(images / "pug_9.jpg"), img)  # no trimap
    (trimaps / "._pug_1.png").write_bytes(b"\x00\x05\x16\x07junk")
    x, y, _, _, skipped = read_pets(tmp_path, (96, 96))
    assert x.shape == (4, 96, 96, 3) and y.shape == (4, 96, 96)  # pug_1, 2, 3, 5
    reasons = {f.rsplit("/", 1)[-1]: r for f, r in skipped}
    assert set(reasons) == {"pug_4.jpg", "pug_9.jpg"}
    assert "trimap" in reasons["pug_9.jpg"] and "truncated" in reasons["pug_4.jpg"]


# --------------------------------------------------------------------------- model, augmentation


@pytest.mark.parametrize(("batch_norm", "expected"), [(False, 1_941_139), (True, 1_943_123)])
def test_unet_parameter_counts(batch_norm, expected):
    """Models 1 and 2 share one architecture; model 3 adds 5 batch-norms (4 x 496 channels)."""
    from stages.models import build

    model = build("pets_unet", (96, 96, 3), 3, batch_norm=batch_norm)
    assert model.count_params() == expected
    assert model.output_shape == (None, 96, 96, 3)


def test_augmentation_flips_image_and_mask_together():
    import tensorflow as tf

    from stages.training.data import make_dataset

    n, h, w = 64, 8, 12
    cols = np.tile(np.arange(w, dtype=np.uint8), (n, h, 1))  # pixel value = its column
    x = np.repeat(cols[..., None], 3, axis=-1)
    y = cols.copy()
    flipped = 0
    for _ in range(2):  # two epochs: fresh draws each time
        for images, masks in make_dataset(x, y, 16, shuffle_seed=0, augment_seed=1):
            images, masks = images.numpy(), masks.numpy()
            np.testing.assert_array_equal(images[..., 0].astype(np.uint8), masks)
            flipped += int((masks[:, 0, 0] == w - 1).sum())
    assert 0.25 * 2 * n < flipped < 0.75 * 2 * n  # about half flipped, so the check above had teeth
    assert tf.reduce_all(next(iter(make_dataset(x, y, n)))[1] == cols)  # no augmentation unless asked


def test_zoom_crops_image_and_mask_together():
    from stages.training.data import make_dataset

    n, h, w = 32, 24, 24
    stripes = np.tile((np.arange(w) // 8).astype(np.uint8), (n, h, 1))  # labels 0 | 1 | 2, 8 columns each
    x = np.repeat((stripes * 100)[..., None], 3, axis=-1)
    zoomed = 0
    for images, masks in make_dataset(x, stripes, 8, shuffle_seed=0, augment_seed=1, augment_zoom=0.5):
        images, masks = images.numpy()[..., 0], masks.numpy()
        assert images.shape == (8, h, w) and masks.shape == (8, h, w) and masks.dtype == np.uint8
        assert set(np.unique(masks)) <= {0, 1, 2}  # nearest-neighbour: no blended label
        unblended = np.isclose(images % 100, 0, atol=1e-3)  # bilinear blends only across a stripe border
        np.testing.assert_allclose(images[unblended], masks[unblended] * 100.0, atol=1e-3)
        zoomed += int(((masks[:, 0, :] == 1).sum(axis=1) != 8).sum())  # the middle stripe grew or was cut
    assert zoomed > n // 4  # the zoom happened, so the checks above had teeth


# --------------------------------------------------------------------------- metrics, prediction


def test_segmentation_metrics_on_hand_made_masks():
    truth = np.array([[[0, 0], [1, 2]]], np.uint8)
    pred = np.array([[[0, 1], [1, 2]]], np.uint8)
    m = segmentation_metrics(truth, pred, ["pet", "background", "border"])
    assert m["test_accuracy"] == pytest.approx(3 / 4)
    assert (m["test_iou_pet"], m["test_iou_background"], m["test_iou_border"]) == pytest.approx((0.5, 0.5, 1.0))
    assert m["test_mean_iou"] == pytest.approx(2 / 3)
    assert m["test_dice_pet"] == pytest.approx(2 / 3) and m["test_dice_mean"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # a class in neither truth nor prediction has no IoU and does not count in the means
    m = segmentation_metrics(np.zeros((1, 2, 2), np.uint8), np.zeros((1, 2, 2), np.uint8), ["a", "b", "c"])
    assert m["test_mean_iou"] == 1.0 and m["test_iou_b"] is None


def test_predict_writes_a_mask_overlay_for_an_image_of_any_size(tmp_path, monkeypatch):
    from stages.models import build
    from stages.sources.synthetic import pet_scene
    from stages.tools.predict import predict

    monkeypatch.chdir(tmp_path)
    model = build("pets_unet", (32, 32, 3), 3, filters=(4, 8), dropouts=(0.1, 0.1), up_dropouts=(0.1,))
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    model.save(tmp_path / "models" / "tiny" / "model.keras")
    img, _ = pet_scene(np.random.default_rng(3), 137, 211, dog=True)
    cv2.imwrite(str(tmp_path / "dog.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert predict("tiny", [str(tmp_path / "dog.jpg")], out=tmp_path / "out") == 0
    out = cv2.imread(str(tmp_path / "out" / "dog_mask.png"))
    assert out.shape == (137, 211, 3)
    with pytest.raises(DataError, match="not found"):
        predict("missing", [str(tmp_path / "dog.jpg")])
