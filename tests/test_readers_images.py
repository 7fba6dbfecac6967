"""Image-folder reader: decoding, skipping bad files, hostile headers, parallel == sequential."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.core.errors import DataError
from stages.sources.readers import images
from stages.sources.readers.images import (
    ImageError,
    decode_image,
    list_image_folder,
    list_split_image_folder,
    read_image_files,
)
from stages.tools.bench import plain_loop_read

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- builders


def solid_rgb(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rgb
    return img


def encode(rgb: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    """Encode an RGB (or gray / RGBA) array; cv2 wants BGR(A)."""
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(ext, rgb, params or [])
    assert ok
    return buf.tobytes()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, well-formed PNG (valid CRCs) whose IHDR claims an enormous image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def huge_jpeg(width: int = 60_000, height: int = 60_000) -> bytes:
    """A real JPEG with its SOF frame size rewritten to something enormous."""
    data = bytearray(encode(solid_rgb(16, 16, (10, 200, 30)), ".jpg"))
    pos = 2
    while True:
        marker, length = data[pos + 1], (data[pos + 2] << 8) | data[pos + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            data[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        pos += 2 + length


def huge_bmp() -> bytes:
    """A real BMP with its header's width and height rewritten to 100000x100000."""
    data = bytearray(encode(noisy(12, 14, 4), ".bmp"))
    data[18:26] = struct.pack("<ii", 100_000, 100_000)
    return bytes(data)


def huge_gif(width: int = 60_000, height: int = 60_000) -> bytes:
    """A minimal GIF (one 2-colour frame) whose screen and frame claim an enormous image."""
    screen = struct.pack("<HH", width, height) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHH", 0, 0, width, height) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def cmyk_jpeg() -> bytes | None:
    try:
        from PIL import Image
    except ImportError:
        return None
    buf = io.BytesIO()
    Image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)  # red
    return buf.getvalue()


def noisy(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    cat, dog, zebra = root / "cat", root / "dog", root / "zebra"
    for d in (cat, dog, zebra):
        d.mkdir(parents=True)
    (cat / "a_red.png").write_bytes(encode(solid_rgb(20, 30, (255, 0, 0)), ".png"))
    (cat / "b_gray.png").write_bytes(encode(np.full((16, 16), 77, np.uint8), ".png"))
    rgba = np.zeros((9, 9, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 40
    (cat / "c_rgba.png").write_bytes(encode(rgba, ".png"))
    (cat / "d_odd.jpg").write_bytes(encode(noisy(17, 41, 1), ".jpg"))
    cmyk = cmyk_jpeg()
    if cmyk is not None:
        (cat / "e_cmyk.jpg").write_bytes(cmyk)
    (cat / "empty.jpg").write_bytes(b"")
    (cat / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 4)
    good_jpeg = encode(noisy(40, 40, 2), ".jpg")
    (dog / "a_blue.jpg").write_bytes(encode(solid_rgb(8, 8, (0, 0, 255)), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 100]))
    (dog / "b_trunc.jpg").write_bytes(good_jpeg[: len(good_jpeg) * 2 // 3])
    (dog / "c_huge.png").write_bytes(huge_png())
    (dog / "d_noise.png").write_bytes(encode(noisy(33, 25, 3), ".png"))
    (dog / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    (zebra / "a_stripes.bmp").write_bytes(encode(noisy(12, 14, 4), ".bmp"))
    (root / "README.txt").write_text("not an image\n")
    return root


# --------------------------------------------------------------------------- decode_image


def test_decode_red_png_is_rgb_and_resized():
    img = decode_image(encode(solid_rgb(20, 30, (255, 0, 0)), ".png"), (8, 6))
    assert img.shape == (8, 6, 3) and img.dtype == np.uint8
    assert (img == [255, 0, 0]).all()


def test_decode_keeps_size_without_resize_and_gray_has_one_channel():
    data = encode(noisy(17, 41, 0), ".png")
    assert decode_image(data, None).shape == (17, 41, 3)
    gray = decode_image(data, (5, 7), color="gray")
    assert gray.shape == (5, 7, 1) and gray.dtype == np.uint8


def test_decode_grayscale_and_rgba_sources_become_three_channels():
    gray = decode_image(encode(np.full((4, 5), 77, np.uint8), ".png"), None)
    assert gray.shape == (4, 5, 3) and (gray == 77).all()
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0  # fully transparent: alpha is dropped, colour kept
    assert (decode_image(encode(rgba, ".png"), None) == [255, 0, 0]).all()


def test_16_bit_pngs_come_back_as_8_bits():
    """OpenCV's own conversion (no IMREAD_ANYDEPTH), which the reader relies on: the high byte of each value."""
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[..., 0] = 0xABCD  # red
    color = decode_image(encode(rgb16, ".png"), None)
    assert color.dtype == np.uint8 and (color == [0xAB, 0, 0]).all()
    gray = decode_image(encode(np.full((2, 3), 0x1234, np.uint16), ".png"), None, color="gray")
    assert gray.dtype == np.uint8 and gray.shape == (2, 3, 1) and (gray == 0x12).all()


def test_decode_cmyk_jpeg():
    data = cmyk_jpeg()
    if data is None:
        pytest.skip("PIL not installed: no way to write a CMYK JPEG")
    img = decode_image(data, None)
    assert img.shape == (10, 12, 3)
    assert img[..., 0].min() > 200 and img[..., 1:].max() < 50  # still red


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\xd0\xcf\x11\xe0 this is Thumbs.db", "not a recognised image format"),
        (encode(noisy(40, 40, 0), ".jpg")[:-200], "truncated JPEG"),
        (encode(noisy(40, 40, 0), ".jpg")[:150], "truncated JPEG"),
        (encode(noisy(40, 40, 0), ".png")[:-300], "corrupt or truncated PNG"),
        (encode(noisy(40, 40, 0), ".png")[:20], "corrupt or truncated PNG"),
        (huge_png(), "PNG header claims an image over the limit of"),
        (huge_jpeg(), "claims 60000x60000"),
        (huge_bmp(), "BMP header claims an image over the limit of"),
        (huge_gif(), "GIF header claims an image over the limit of"),
        (b"P6\n100000 100000\n255\n" + bytes(64), "PNM header claims an image over the limit of"),
    ],
)
def test_decode_bad_data_raises_image_error(data, reason):
    with pytest.raises(ImageError, match=reason) as info:
        decode_image(data, (8, 8), source="some/file.jpg")
    assert isinstance(info.value, DataError)
    assert str(info.value).startswith("some/file.jpg: ")
    assert "\n" not in str(info.value)


def test_huge_header_is_refused_before_opencv_allocates(monkeypatch):
    # OpenCV checks a header's size against OPENCV_IO_MAX_IMAGE_PIXELS before it allocates
    for data in (huge_png(), huge_png(20_000, 20_000), huge_bmp(), huge_gif()):
        with pytest.raises(ImageError, match=r"claims an image over the limit of \d+ pixels"):
            decode_image(data, None)

    # but checks a JPEG decoded at reduced scale at that scale: its header is checked first
    def boom(*args, **kwargs):
        raise AssertionError("cv2.imdecode must not be reached for an oversized JPEG header")

    monkeypatch.setattr(images.cv2, "imdecode", boom)
    for size in (None, (8, 8)):
        with pytest.raises(ImageError, match="claims 60000x60000 pixels, over the limit"):
            decode_image(huge_jpeg(), size)


def fresh_python(code: str) -> str:
    """What ``code`` prints in a new interpreter whose environment does not set OpenCV's pixel limit."""
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def test_decoding_refuses_to_start_without_opencvs_pixel_limit():
    """cv2 loaded before any stages module keeps OpenCV's own limit (2**30): refused, not trusted."""
    code = (
        "import cv2, numpy as np\n"
        "import stages.sources.readers.images as images\n"
        "try:\n"
        "    images.decode_image(cv2.imencode('.png', np.zeros((4, 4, 3), np.uint8))[1], None)\n"
        "except RuntimeError as e:\n"
        "    print('REFUSED' if 'OPENCV_IO_MAX_IMAGE_PIXELS was set' in str(e) else e)\n"
    )
    assert "REFUSED" in fresh_python(code)


def test_opencv_honours_the_pixel_limit_set_by_the_module():
    """The module sets OPENCV_IO_MAX_IMAGE_PIXELS before cv2 loads; OpenCV must then refuse."""
    code = (
        "import stages.sources.readers.images, cv2, numpy as np, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_readers_images import huge_png\n"
        "try:\n"
        "    cv2.imdecode(np.frombuffer(huge_png(20000, 20000), np.uint8), cv2.IMREAD_COLOR)\n"
        "except cv2.error as e:\n"
        "    print('REFUSED' if 'MAX_IMAGE_PIXELS' in str(e) else e)\n"
    )
    assert "REFUSED" in fresh_python(code)


def test_bad_arguments():
    data = encode(noisy(4, 4, 0), ".png")
    with pytest.raises(ValueError, match="color"):
        decode_image(data, None, color="cmyk")
    with pytest.raises(ValueError, match="size"):
        decode_image(data, (0, 4))


# --------------------------------------------------------------------------- many files


def test_read_image_files_matches_sequential_and_plain_loop(tmp_path: Path):
    paths = []
    for i in range(150):  # > 1 chunk per worker, so ordering across chunks is exercised
        p = tmp_path / f"{i:03d}.{'png' if i % 3 else 'jpg'}"
        p.write_bytes(encode(noisy(10 + i % 7, 12 + i % 5, i), p.suffix))
        paths.append(p)
    paths[40].write_bytes(b"")
    paths[99].write_bytes(b"garbage")

    x, ok, skipped = read_image_files(paths, (9, 11), workers=3)
    assert x.shape == (148, 9, 11, 3) and x.dtype == np.uint8
    assert ok == [i for i in range(150) if i not in (40, 99)]
    assert [p for p, _ in skipped] == [str(paths[40]), str(paths[99])]

    expected = np.stack([decode_image(paths[i].read_bytes(), (9, 11)) for i in ok])
    np.testing.assert_array_equal(x, expected)
    x1, ok1, skipped1 = read_image_files(paths, (9, 11), workers=1)
    np.testing.assert_array_equal(x1, x)
    assert (ok1, skipped1) == (ok, skipped)
    xp, okp, _ = plain_loop_read(paths, (9, 11))
    assert okp == ok
    np.testing.assert_array_equal(xp, x)


def test_read_image_files_without_size_skips_mismatched_shapes(tmp_path: Path):
    paths = []
    for i, shape in enumerate([(8, 8), (8, 8), (9, 8), (8, 8)]):
        p = tmp_path / f"{i}.png"
        p.write_bytes(encode(noisy(*shape, i), ".png"))
        paths.append(p)
    x, ok, skipped = read_image_files(paths, None, color="gray", workers=2)
    assert x.shape == (3, 8, 8, 1)
    assert ok == [0, 1, 3]
    assert skipped[0][0] == str(paths[2]) and "differs" in skipped[0][1]


def test_read_image_files_empty_and_all_bad(tmp_path: Path):
    x, ok, skipped = read_image_files([], (4, 4))
    assert x.shape == (0, 4, 4, 3) and ok == [] and skipped == []
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    x, ok, skipped = read_image_files([bad, tmp_path / "missing.jpg"], (4, 4), workers=2)
    assert x.shape == (0, 4, 4, 3) and ok == []
    assert [r for _, r in skipped] == [
        "not a recognised image format",
        "cannot read file (No such file or directory)",
    ]


def test_read_image_files_oversized_file_and_directory(tmp_path: Path, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(encode(noisy(20, 20, 0), ".png"))
    small = tmp_path / "small.png"
    small.write_bytes(encode(np.zeros((2, 2), np.uint8), ".png"))
    monkeypatch.setattr(images, "MAX_FILE_BYTES", small.stat().st_size)
    x, ok, skipped = read_image_files([big, small, tmp_path], (2, 2), workers=1)
    assert ok == [1] and x.shape == (1, 2, 2, 3)
    assert "over the" in skipped[0][1] and "byte limit" in skipped[0][1]
    assert skipped[1] == (str(tmp_path), "not a regular file")


def test_opencv_thread_setting_is_restored(tmp_path: Path):
    before = cv2.getNumThreads()
    paths = [tmp_path / f"{i}.png" for i in range(20)]
    for i, p in enumerate(paths):
        p.write_bytes(encode(noisy(6, 6, i), ".png"))
    read_image_files(paths, (4, 4), workers=2)
    assert cv2.getNumThreads() == before


# --------------------------------------------------------------------------- folders


def test_read_image_folder(folder: Path):
    out = list_image_folder(folder).decode((8, 8), workers=2)
    has_cmyk = (folder / "cat" / "e_cmyk.jpg").exists()
    cat_files = ["a_red.png", "b_gray.png", "c_rgba.png", "d_odd.jpg"] + (["e_cmyk.jpg"] if has_cmyk else [])
    expected_files = [f"cat/{f}" for f in cat_files] + [
        "dog/a_blue.jpg",
        "dog/d_noise.png",
        "zebra/a_stripes.bmp",
    ]
    assert out["classes"] == ["cat", "dog", "zebra"]
    assert out["files"] == expected_files
    assert out["x"].shape == (len(expected_files), 8, 8, 3) and out["x"].dtype == np.uint8
    assert out["y"].dtype == np.int64
    assert out["y"].tolist() == [0] * len(cat_files) + [1, 1, 2]
    x = dict(zip(out["files"], out["x"], strict=True))
    assert (x["cat/a_red.png"] == [255, 0, 0]).all()
    assert (x["cat/b_gray.png"] == 77).all()
    assert (x["cat/c_rgba.png"] == [0, 255, 0]).all()
    assert (np.abs(x["dog/a_blue.jpg"].astype(int) - [0, 0, 255]) <= 2).all()
    if has_cmyk:
        assert x["cat/e_cmyk.jpg"][..., 0].min() > 200

    reasons = dict(out["skipped"])
    assert set(reasons) == {
        "README.txt",
        "cat/Thumbs.db",
        "cat/empty.jpg",
        "dog/.DS_Store",
        "dog/b_trunc.jpg",
        "dog/c_huge.png",
    }
    assert reasons["README.txt"] == "not inside a class folder"
    assert "empty" in reasons["cat/empty.jpg"]
    assert "truncated" in reasons["dog/b_trunc.jpg"]
    assert "over the limit" in reasons["dog/c_huge.png"]
    assert "not a recognised image format" in reasons["cat/Thumbs.db"]
    assert "not a recognised image format" in reasons["dog/.DS_Store"]

    # same result as the naive loop over the kept files (JPEGs close, not equal: the project
    # decodes large JPEGs at reduced scale), and as a single worker
    xp, okp, _ = plain_loop_read([folder / f for f in out["files"]], (8, 8))
    assert okp == list(range(len(out["files"])))
    diff = np.abs(xp.astype(int) - out["x"].astype(int))
    pngs = [i for i, f in enumerate(out["files"]) if f.endswith(".png")]
    assert diff[pngs].max() == 0 and diff.mean() < 2
    seq = list_image_folder(folder).decode((8, 8), workers=1)
    np.testing.assert_array_equal(seq["x"], out["x"])
    assert seq["files"] == out["files"] and seq["skipped"] == out["skipped"]


def test_read_image_folder_given_class_order(folder: Path):
    out = list_image_folder(folder, classes=["zebra", "dog", "cat"]).decode((4, 4), color="gray")
    assert out["classes"] == ["zebra", "dog", "cat"]
    assert out["files"][0] == "zebra/a_stripes.bmp"
    labels = dict(zip(out["files"], out["y"].tolist(), strict=True))
    assert labels["zebra/a_stripes.bmp"] == 0 and labels["dog/a_blue.jpg"] == 1 and labels["cat/a_red.png"] == 2
    assert out["x"].shape[1:] == (4, 4, 1)
    with pytest.raises(DataError, match="missing: \\['bird'\\]"):
        list_image_folder(folder, classes=["cat", "dog", "zebra", "bird"]).decode((4, 4))
    with pytest.raises(DataError, match="unexpected: \\['zebra'\\]"):
        list_image_folder(folder, classes=["cat", "dog"]).decode((4, 4))


def test_read_image_folder_ignores_hidden_and_macosx_folders(folder: Path):
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / "__MACOSX" / "cat").mkdir(parents=True)
    (folder / "__MACOSX" / "cat" / "._a_red.png").write_bytes(b"\x00\x05\x16\x07junk")
    assert list_image_folder(folder).decode((4, 4))["classes"] == ["cat", "dog", "zebra"]


def test_read_image_folder_errors(tmp_path: Path):
    with pytest.raises(DataError, match="nowhere.*not found"):
        list_image_folder(tmp_path / "nowhere").decode((4, 4))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(encode(noisy(4, 4, 0), ".png"))
    with pytest.raises(DataError, match="flat: no class folders"):
        list_image_folder(tmp_path / "flat").decode((4, 4))
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="bad: no readable images.*cls/x.jpg: empty file"):
        list_image_folder(tmp_path / "bad").decode((4, 4))


def make_split(base: Path, train: dict[str, int], test: dict[str, int]) -> None:
    seed = 0
    for split, counts in (("train", train), ("test", test)):
        for cls, n in counts.items():
            d = base / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                seed += 1
                (d / f"{i:04d}.jpg").write_bytes(encode(noisy(32, 32, seed), ".jpg"))


def test_read_split_image_folder_finds_single_top_folder(tmp_path: Path):
    base = tmp_path / "cifar10-jpeg"
    make_split(base, {"airplane": 3, "cat": 2}, {"airplane": 1, "cat": 2})
    (base / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    out = list_split_image_folder(tmp_path).decode((32, 32), workers=2)
    assert out["classes"] == ["airplane", "cat"]
    assert out["x_train"].shape == (5, 32, 32, 3) and out["x_test"].shape == (3, 32, 32, 3)
    assert out["y_train"].tolist() == [0, 0, 0, 1, 1] and out["y_test"].tolist() == [0, 1, 1]
    assert out["files_test"] == ["airplane/0000.jpg", "cat/0000.jpg", "cat/0001.jpg"]
    assert [p for p, _ in out["skipped"]] == ["train/cat/broken.jpg"]
    same = list_split_image_folder(base).decode((32, 32), workers=1)
    np.testing.assert_array_equal(same["x_train"], out["x_train"])
    np.testing.assert_array_equal(same["x_test"], out["x_test"])


def test_read_split_image_folder_errors(tmp_path: Path):
    make_split(tmp_path / "a", {"cat": 1, "dog": 1}, {"cat": 1, "frog": 1})
    with pytest.raises(
        DataError,
        match="test classes differ.*only in train: \\['dog'\\].*only in test: \\['frog'\\]",
    ):
        list_split_image_folder(tmp_path / "a").decode((8, 8))
    make_split(tmp_path / "b" / "one", {"cat": 1}, {"cat": 1})
    make_split(tmp_path / "b" / "two", {"cat": 1}, {"cat": 1})
    with pytest.raises(DataError, match="several folders"):
        list_split_image_folder(tmp_path / "b").decode((8, 8))
    (tmp_path / "c" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no train/ and test/"):
        list_split_image_folder(tmp_path / "c").decode((8, 8))


# --------------------------------------------------------------------------- fuzz

SEEDS = [
    encode(noisy(12, 10, 5), ".png"),
    encode(noisy(12, 10, 6), ".jpg"),
    encode(noisy(12, 10, 7), ".bmp"),
    encode(noisy(12, 10, 8), ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    huge_png(),
]


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), mutated_images()), st.sampled_from([None, (7, 5)]))
def test_fuzz_decode_image_only_succeeds_or_raises_data_error(data, size):
    try:
        img = decode_image(data, size)
    except DataError:
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    if size is not None:
        assert img.shape[:2] == size


def test_large_jpeg_decoded_at_reduced_scale_matches_full_decode():
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3)).astype(np.uint8), (0, 0), 3)
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    full = cv2.resize(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), (50, 50), interpolation=cv2.INTER_AREA
    )[..., ::-1]
    fast = decode_image(data, (50, 50))
    assert fast.shape == (50, 50, 3)
    diff = np.abs(full.astype(int) - fast.astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 4


def test_thumbnails_decode_sequentially_photos_in_parallel(tmp_path: Path, monkeypatch):
    import stages.sources.readers.images as images

    rng = np.random.default_rng(0)
    thumbs, photos = [], []
    for i in range(6):
        thumbs.append(tmp_path / f"t{i}.jpg")
        cv2.imwrite(str(thumbs[-1]), rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))
        photos.append(tmp_path / f"p{i}.jpg")
        cv2.imwrite(str(photos[-1]), rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))  # noise: ~100 KB
    assert images._small_files([str(p) for p in thumbs]) and not images._small_files([str(p) for p in photos])
    pools = []
    monkeypatch.setattr(images, "ThreadPoolExecutor", lambda n, **kw: pools.append(n) or ThreadPoolExecutor(n, **kw))
    monkeypatch.setattr(images.os, "cpu_count", lambda: 2)
    x, ok, _ = read_image_files(thumbs, (8, 8))
    assert len(ok) == 6 and pools == [], "thumbnails: no thread pool"
    x, ok, _ = read_image_files(photos, (8, 8))
    assert len(ok) == 6 and pools == [2], "photos: one thread per core"
