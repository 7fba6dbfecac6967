"""Inputs bounded in size, count and memory (issue #34): the decode budget shared by a process's
threads, the pets reader's list files and masks, and the empty or oversized results of `prepare`."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages import prepare
from stages.core import config
from stages.core.errors import DataError
from stages.sources.formats import RawData
from stages.sources.readers import images, pets
from stages.sources.readers.images import (
    DecodeBudget,
    decode_cost,
    decode_image,
    image_dims,
    image_file_dims,
    read_image_files,
)
from stages.sources.readers.pets import read_pets
from tests.conftest import REPO


def bilevel_png(width: int, height: int) -> bytes:
    """A 1-bit grayscale PNG of zeros: a few KB that decode to width x height x 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" * (1 + (width + 7) // 8)) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- the budget itself


def test_budget_holds_never_exceed_the_total_and_a_large_request_is_not_starved():
    budget = DecodeBudget(100)
    held, peak, order = [0], [0], []
    lock = threading.Lock()

    def work(name: str, nbytes: int | None, pause: float) -> None:
        with budget.hold(nbytes):
            take = 100 if nbytes is None else min(nbytes, 100)
            with lock:
                held[0] += take
                peak[0] = max(peak[0], held[0])
                order.append(name)
            time.sleep(pause)
            with lock:
                held[0] -= take

    small = [threading.Thread(target=work, args=(f"s{i}", 30, 0.02)) for i in range(12)]
    for t in small[:3]:
        t.start()
    time.sleep(0.005)
    big = threading.Thread(target=work, args=("big", 10**9, 0.01))  # over the total: takes all of it
    big.start()
    time.sleep(0.005)
    for t in small[3:]:
        t.start()
    for t in [*small, big]:
        t.join(10)
    assert peak[0] <= 100 and budget.free == 100
    assert order.index("big") <= 3, order  # queued before the nine later small ones, it went before them


def test_a_hold_inside_a_hold_takes_nothing_more():
    budget = DecodeBudget(10)
    with budget.hold(10):
        assert budget.holding()
        with budget.hold(None):  # would wait forever if it queued behind its own thread
            assert budget.free == 0
    assert budget.free == 10 and not budget.holding()


def test_header_sizes_of_png_jpeg_and_the_formats_pillow_reads(tmp_path):
    img = np.zeros((23, 41, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp"):
        data = cv2.imencode(ext, img)[1].tobytes()
        assert image_dims(data) == (41, 23), ext
    assert image_dims(bilevel_png(16000, 16000)) == (16000, 16000)
    assert image_dims(b"Thumbs.db is not an image") is None
    assert decode_cost(None) is None and decode_cost((10, 3)) == 30 * images.DECODE_BYTES_PER_PIXEL
    exif_first = tmp_path / "late.jpg"  # the frame header behind 100 KB of APP segments
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    app = b"".join(b"\xff\xe1" + struct.pack(">H", 50_002) + bytes(50_000) for _ in range(2))
    exif_first.write_bytes(jpeg[:2] + app + jpeg[2:])
    assert image_dims(exif_first.read_bytes()[: images.HEADER_BYTES]) is None
    assert image_file_dims(exif_first) == (41, 23)


# --------------------------------------------------------------------------- decoding within it


def _spy_on_decodes(monkeypatch) -> list[int]:
    """Count the decodes running at once (each made to last 30 ms); returns [most at once]."""
    real, running, most = cv2.imdecode, [0], [0]
    lock = threading.Lock()

    def slow(buf, flags):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.03)
            return real(buf, flags)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(images.cv2, "imdecode", slow)
    return most


def test_images_costing_most_of_the_budget_decode_one_at_a_time_whatever_the_workers(tmp_path, monkeypatch):
    data = bilevel_png(300, 200)
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(data)
    one = len(data) + decode_cost((300, 200))
    monkeypatch.setattr(images, "DECODE_BUDGET", DecodeBudget(one * 3 // 2))
    most = _spy_on_decodes(monkeypatch)
    x, ok, skipped = read_image_files(paths, (20, 30), workers=4)
    assert len(ok) == 6 and not skipped and most[0] == 1
    # the same images with room for four: the workers still decode side by side
    monkeypatch.setattr(images, "DECODE_BUDGET", DecodeBudget(one * 4))
    most[0] = 0
    read_image_files(paths, (20, 30), workers=4)
    assert most[0] >= 2


def test_decode_image_from_bytes_is_charged_too(monkeypatch):
    monkeypatch.setattr(images, "DECODE_BUDGET", DecodeBudget(10**6))
    seen = []
    real_hold = images.DECODE_BUDGET.hold
    monkeypatch.setattr(images.DECODE_BUDGET, "hold", lambda n: seen.append(n) or real_hold(n))
    decode_image(bilevel_png(50, 40), (5, 5))
    assert seen == [50 * 40 * images.DECODE_BYTES_PER_PIXEL]


PEAK_SCRIPT = """
import sys
import stages
from stages.sources.readers.images import read_image_files

def peak_of(paths):  # KB over the resident size before: Linux resets the high-water mark on request
    def status(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = status("VmRSS")
    read_image_files(paths, (50, 50), workers=len(paths))
    return status("VmHWM") - before

paths = sys.argv[1:]
print(peak_of(paths[:1]), peak_of(paths))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's peak-memory reset is needed")
def test_peak_memory_of_large_images_does_not_grow_with_the_workers(tmp_path):
    """Four 1-bit PNGs at the pixel limit (set to 4000x4000 here, so the budget is one such image),
    four workers: peak memory stays that of one decode (~94 MB), where it was four times that."""
    data = bilevel_png(4000, 4000)
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        Path(paths[-1]).write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENCV_IO_MAX_IMAGE_PIXELS": str(4000 * 4000)}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, *paths], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    single, four = (int(v) for v in done.stdout.split())
    assert single > 60_000, single  # KB: the decode did take its ~94 MB
    assert four < single * 1.5, (single, four)


# --------------------------------------------------------------------------- pets: lists and masks

DOGS = ("pug_1", "pug_2", "boxer_1", "boxer_2")


def pets_layout(root: Path, names: tuple[str, ...] = DOGS, shape: tuple[int, int] = (40, 60)) -> Path:
    """A small Oxford-IIIT Pet layout: ``names`` as photos of ``shape`` with fitting trimaps; the
    first half in trainval.txt, the rest in test.txt. Returns the annotations folder."""
    images, annotations = root / "images", root / "annotations"
    (annotations / "trimaps").mkdir(parents=True, exist_ok=True)
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(images / f"{name}.jpg"), rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
        trimap = np.full(shape, 2, np.uint8)
        trimap[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = 1
        cv2.imwrite(str(annotations / "trimaps" / f"{name}.png"), trimap)
    half = len(names) // 2
    write_list(annotations / "trainval.txt", names[:half])
    write_list(annotations / "test.txt", names[half:])
    return annotations


def write_list(path: Path, names) -> None:
    path.write_text("".join(f"{n} 1 2 1\n" for n in names))


def test_a_list_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    annotations = pets_layout(tmp_path)
    line = b"gone_00000000 1 2 1\n"
    (annotations / "test.txt").write_bytes(line * (pets.MAX_LIST_BYTES // len(line) + 1))
    size = (annotations / "test.txt").stat().st_size
    with pytest.raises(
        DataError, match=rf"test\.txt: {size:,} bytes, over the 4,194,304-byte limit for an image list$"
    ):
        read_pets(tmp_path, (32, 32))


def test_more_missing_images_than_the_cap_stop_the_read(tmp_path):
    annotations = pets_layout(tmp_path)
    write_list(annotations / "trainval.txt", [*DOGS[:2], *(f"gone_{i}" for i in range(pets.MAX_MISSING - 1))])
    write_list(annotations / "test.txt", [*DOGS[2:], "gone_a", "gone_b"])  # 10,001 missing in all
    with pytest.raises(DataError, match=r"test\.txt: more than 10,000 listed images are missing .*first: gone_0\.jpg"):
        read_pets(tmp_path, (32, 32))
    write_list(annotations / "test.txt", [*DOGS[2:], "gone_a"])  # exactly the cap: read, skipped and counted
    x_train, _, x_test, _, skipped = read_pets(tmp_path, (32, 32))
    assert (len(x_train), len(x_test), len(skipped)) == (2, 2, pets.MAX_MISSING)


def test_a_list_whose_images_are_all_missing_stops_the_read_naming_it(tmp_path):
    annotations = pets_layout(tmp_path)
    write_list(annotations / "test.txt", ["pug_900", "pug_901", "pug_902"])
    expected = (
        r"test\.txt: none of its 3 dog images could be read "
        r"\(first: pug_900\.jpg: listed, but the image file is missing\)$"
    )
    with pytest.raises(DataError, match=expected):
        read_pets(tmp_path, (32, 32))
    write_list(annotations / "test.txt", ["Bengal_1"])  # a cat, while the dataset reads dogs
    with pytest.raises(DataError, match=r"test\.txt: no dog images in it$"):
        read_pets(tmp_path, (32, 32))


def test_repeated_names_are_read_once_and_noted(tmp_path):
    annotations = pets_layout(tmp_path)
    write_list(annotations / "trainval.txt", ["pug_1"] * 1000 + ["pug_2", "pug_1"])
    x_train, y_train, _, _, skipped = read_pets(tmp_path, (32, 32))
    assert len(x_train) == len(y_train) == 2
    assert skipped == [(str(annotations / "trainval.txt"), "1 name(s) listed more than once, read once (first: pug_1)")]


def test_a_name_in_both_lists_is_refused(tmp_path):
    annotations = pets_layout(tmp_path)
    write_list(annotations / "test.txt", ["boxer_1", "pug_2"])
    with pytest.raises(DataError, match=r"test\.txt: 1 image\(s\) also in trainval\.txt \(first: pug_2\)"):
        read_pets(tmp_path, (32, 32))


def test_list_names_never_reach_outside_the_images_folder(tmp_path):
    annotations = pets_layout(tmp_path / "data")
    pets_layout(tmp_path / "elsewhere", ("pug_9",))  # a readable pair outside data/images
    write_list(annotations / "trainval.txt", ["pug_1", "../../elsewhere/images/pug_9"])
    x_train, _, _, _, skipped = read_pets(tmp_path / "data", (32, 32))
    assert len(x_train) == 1
    assert (
        str(tmp_path / "data/images/../../elsewhere/images/pug_9.jpg"),
        "listed, but the image file is missing",
    ) in skipped


def test_a_list_that_is_not_utf8_is_a_one_line_error(tmp_path):
    annotations = pets_layout(tmp_path)
    (annotations / "test.txt").write_bytes(b"boxer_1 1 2 1\n\xff\xfe 1 2 1\n")
    with pytest.raises(DataError, match=r"test\.txt: not UTF-8 text \(byte 14\)$"):
        read_pets(tmp_path, (32, 32))


@pytest.mark.parametrize(
    ("trimap_shape", "shown"), [((9, 17), "17x9"), ((60, 40), "40x60")], ids=["17x9", "transposed"]
)
def test_a_trimap_of_another_size_than_its_photo_is_skipped_never_stretched(tmp_path, trimap_shape, shown):
    annotations = pets_layout(tmp_path)  # photos 60 wide, 40 high
    cv2.imwrite(str(annotations / "trimaps" / "pug_2.png"), np.full(trimap_shape, 2, np.uint8))
    x_train, y_train, _, _, skipped = read_pets(tmp_path, (32, 32))
    assert len(x_train) == len(y_train) == 1
    assert skipped == [
        (
            str(tmp_path / "images" / "pug_2.jpg"),
            f"trimap pug_2.png is {shown}, the image 60x40 (never stretched to fit)",
        )
    ]
    # the pair that fits is the one kept: its mask has the pet where its trimap has it
    assert y_train[0][8:16, 8:16].max() == 0 and y_train[0][20:, 20:].min() == 1


# --------------------------------------------------------------------------- pets: any list at all

NAMES = st.one_of(
    st.sampled_from([*DOGS, "Bengal_1", "pug_900", "../images/pug_1", "pug_1.jpg", "#pug_1"]),
    st.text(min_size=1, max_size=10).filter(lambda t: not any(c.isspace() for c in t)),
)
LIST_LINE = st.one_of(
    st.builds("{} {} {} {}".format, NAMES, st.integers(0, 40), st.integers(1, 2), st.integers(0, 40)),
    st.sampled_from(["", "# a comment", "pug_1 1 2", "pug_1 one 2 1"]),
    st.text(max_size=24),
)
LIST_TEXT = st.lists(LIST_LINE, max_size=14).map("\n".join)


@pytest.fixture(scope="module")
def list_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lists")


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), LIST_TEXT.map(str.encode)))
def test_any_list_file_reads_to_unique_names_or_a_data_error(list_dir, data):
    path = list_dir / "test.txt"
    path.write_bytes(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pets, "MAX_LIST_BYTES", 120)
        try:
            names, repeated = pets.read_list(path)
        except DataError as exc:
            assert str(exc).startswith(f"{path}") and "\n" not in str(exc)
            return
    assert len(data) <= 120  # anything longer was refused
    assert len(set(names)) == len(names) and set(repeated) <= set(names)
    assert all(name and not any(c.isspace() for c in name) for name in names)
    assert len(names) <= len(data) // 7 + 1  # the shortest line is 'a 1 2 3'


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pets")
    pets_layout(root)
    return root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trainval=LIST_TEXT, test=LIST_TEXT)
def test_any_pets_lists_give_a_bounded_result_or_a_data_error(pets_root, trainval, test):
    annotations = pets_root / "annotations"
    (annotations / "trainval.txt").write_text(trainval)
    (annotations / "test.txt").write_text(test)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pets, "MAX_MISSING", 5)
        try:
            x_train, y_train, x_test, y_test, skipped = read_pets(pets_root, (16, 16))
        except DataError as exc:
            assert "\n" not in str(exc)
            return
    assert len(x_train) == len(y_train) >= 1 and len(x_test) == len(y_test) >= 1
    assert len(x_train) + len(x_test) <= len(DOGS)  # each image once, in one split only
    assert len(skipped) <= len(DOGS) + 5 + 2  # unlisted or unreadable, missing up to the cap, repeat notes


# --------------------------------------------------------------------------- prepare


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A folder with the repository's params.yaml, as the working directory."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def masks_source(n_train: int, n_test: int, skipped: list[tuple[str, str]]) -> RawData:
    """What the pets reader returns: images, masks, and the files it skipped."""

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((n, 8, 8, 3), np.uint8), np.zeros((n, 8, 8), np.uint8)

    return RawData(*part(n_train), *part(n_test), ["pet", "background", "border"], skipped)


def test_an_empty_split_is_an_error_never_a_success(project, monkeypatch):
    monkeypatch.setattr(prepare, "load_source", lambda params, name: masks_source(10, 0, [("a/x.jpg", "why")]))
    with pytest.raises(
        DataError,
        match=r"^params\.yaml: datasets\.pets_dogs: no test images left \(1 file\(s\) skipped; first: a/x\.jpg: why\)$",
    ):
        prepare.prepare(config.load(), "pets_dogs")
    assert not (project / "data/prepared/pets_dogs").exists()


def test_too_few_images_to_split_off_validation_is_a_data_error(project, monkeypatch):
    monkeypatch.setattr(prepare, "load_source", lambda params, name: masks_source(1, 3, []))
    with pytest.raises(
        DataError, match=r"^params\.yaml: datasets\.pets_dogs\.val_fraction: cannot split 0\.1 of 1 image\(s\) off \("
    ):
        prepare.prepare(config.load(), "pets_dogs")


def test_meta_names_a_bounded_sample_of_the_skipped_files_and_their_count(project, monkeypatch):
    many = [(f"images/gone_{i}.jpg", "listed, but the image file is missing") for i in range(5000)]
    monkeypatch.setattr(prepare, "load_source", lambda params, name: masks_source(10, 3, many))
    meta = prepare.prepare(config.load(), "pets_dogs")
    written = json.loads((project / "data/prepared/pets_dogs/meta.json").read_text())
    assert written == meta and meta["skipped_total"] == 5000
    assert [s["file"] for s in meta["skipped"]] == [f for f, _ in many[: prepare.MAX_SKIPPED_LISTED]]
    # under the bound, meta.json is what it always was: every skipped file, and no count
    monkeypatch.setattr(prepare, "load_source", lambda params, name: masks_source(10, 3, many[:3]))
    meta = prepare.prepare(config.load(), "pets_dogs")
    assert "skipped_total" not in meta and len(meta["skipped"]) == 3


def run_prepare(root: Path, dataset: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "stages.prepare", dataset]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def three_missing_test_images(annotations: Path) -> None:
    write_list(annotations / "test.txt", ["pug_900", "pug_901", "pug_902"])


def oversized_list(annotations: Path) -> None:
    (annotations / "trainval.txt").write_bytes(b"gone_1 1 2 1\n" * 400_000)


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (three_missing_test_images, "test.txt: none of its 3 dog images could be read (first: pug_900.jpg: "),
        (oversized_list, "trainval.txt: 5,200,000 bytes, over the 4,194,304-byte limit for an image list"),
    ],
    ids=["three-missing", "oversized-list"],
)
def test_prepare_stops_with_one_line_naming_the_list(project, spoil, expected):
    spoil(pets_layout(project / "data/extracted/pets"))
    done = run_prepare(project, "pets_dogs")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], done.stderr[-2000:]
    assert not (project / "data/prepared/pets_dogs").exists()
