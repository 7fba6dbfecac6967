"""Inputs bounded in size, count and memory (issue #34): the decode budget shared by a process's
threads, the pets reader's list files and masks, and the empty or oversized results of `prepare`."""

from __future__ import annotations

import os
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

from stages.sources.readers import images
from stages.sources.readers.images import (
    DecodeBudget,
    decode_cost,
    decode_image,
    image_dims,
    image_file_dims,
    read_image_files,
)
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
