"""What `predict` is given: anything that is not a small regular file is refused before it is opened
(FIFOs, devices, link loops, giant sparse files), every path left out gets a line and a CSV row,
overlay names never collide, --top-k is checked, and predictions are batched. Fake models keep
these fast (no TensorFlow); tests/test_predict.py runs a real one."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.sources.readers.images import MAX_FILE_BYTES
from stages.tools.predict import OptionError, check_top_k, mask_names, predict_files


class FakeClassifier:
    """Keras-like: ``input_shape``, ``output_shape``, ``predict``; probabilities from the mean pixel."""

    def __init__(self, n_classes: int = 3, size: int = 8, channels: int = 1) -> None:
        self.input_shape = (None, size, size, channels)
        self.output_shape = (None, n_classes)
        self.calls: list[int] = []

    def predict(self, x: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        assert x.dtype == np.float32 and x.shape[1:] == self.input_shape[1:]
        self.calls.append(len(x))
        means = x.reshape(len(x), -1).mean(axis=1) / 255.0
        logits = np.stack([means * (k + 1) for k in range(self.output_shape[1])], axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class FakeSegmenter(FakeClassifier):
    def __init__(self, size: int = 8) -> None:
        super().__init__(3, size, 3)
        self.output_shape = (None, size, size, 3)

    def predict(self, x: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        self.calls.append(len(x))
        return np.eye(3, dtype=np.float32)[(x[..., 0] > 127).astype(int)]


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (a FIFO opened for reading waits for a writer forever)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: something blocked")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def image(path: Path, seed: int = 0, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3)).astype(np.uint8)
    path.write_bytes(cv2.imencode(path.suffix if path.suffix.lower() == ".jpg" else ".png", pixels)[1].tobytes())
    return path


def rows_of(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_fifo_device_and_sparse_giant_on_the_command_line_are_refused_unread(tmp_path, capsys):
    good = image(tmp_path / "good.png")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB that takes no disk
    inputs = [str(good), str(fifo), "/dev/zero", str(huge), str(tmp_path / "missing.png")]
    with deadline(30):
        failed = predict_files(FakeClassifier(), None, inputs, top_k=2, out=tmp_path / "out")
    assert failed == 4
    rows = rows_of(tmp_path / "out")
    assert [r["file"] for r in rows] == inputs
    errors = [r["error"] for r in rows]
    assert errors[0] == "" and rows[0]["class1"] in {"0", "1", "2"}
    assert errors[1] == f"{fifo}: not a regular file (a FIFO)"
    assert errors[2] == "/dev/zero: not a regular file (a character device)"
    assert errors[3] == f"{huge}: file is {1 << 30} bytes, over the {MAX_FILE_BYTES}-byte limit for an image"
    assert errors[4] == f"{tmp_path / 'missing.png'}: cannot read (No such file or directory)"
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {e}" for e in errors[1:]]


def test_links_fifos_and_unreadable_entries_inside_a_folder_are_reported(tmp_path, capsys):
    root = tmp_path / "photos"
    image(root / "a.png")
    image(tmp_path / "elsewhere" / "b.png", 1)
    os.symlink("loop.jpg", root / "loop.jpg")  # points at itself
    os.symlink(tmp_path / "nowhere.png", root / "broken.png")
    os.symlink(tmp_path / "elsewhere" / "b.png", root / "linked.png")  # a link to a file is followed
    os.symlink(tmp_path / "elsewhere", root / "folder_link")
    (root / "sub").mkdir()
    os.mkfifo(root / "sub" / "fifo.png")
    with deadline(30):
        failed = predict_files(FakeClassifier(), None, [str(root)], top_k=1, out=tmp_path / "out")
    rows = {Path(r["file"]).name: r["error"] for r in rows_of(tmp_path / "out")}
    assert set(rows) == {"a.png", "broken.png", "folder_link", "linked.png", "loop.jpg", "fifo.png"}
    assert rows["a.png"] == rows["linked.png"] == ""
    assert "loop.jpg: broken or looping symbolic link (Too many levels of symbolic links)" in rows["loop.jpg"]
    assert "broken.png: broken or looping symbolic link (No such file or directory)" in rows["broken.png"]
    assert rows["folder_link"].endswith("folder_link: symbolic link to a folder (not followed)")
    assert rows["fifo.png"].endswith("fifo.png: not a regular file (a FIFO)")
    assert failed == 4 and len(capsys.readouterr().err.splitlines()) == 4


def test_same_file_names_in_different_folders_get_their_own_overlays(tmp_path):
    inputs = [image(tmp_path / "a" / "dog.jpg", 1), image(tmp_path / "b" / "dog.png", 2), image(tmp_path / "dog-2.png")]
    model = FakeSegmenter()
    assert predict_files(model, None, [str(p) for p in inputs], out=tmp_path / "out") == 0
    masks = [r["mask"] for r in rows_of(tmp_path / "out")]
    assert [Path(m).name for m in masks] == ["dog_mask.png", "dog-3_mask.png", "dog-2_mask.png"]
    for src, mask in zip(inputs, masks):
        assert cv2.imread(mask).shape == cv2.imread(str(src)).shape  # each overlay is its own image's
    assert model.calls == [3]


@pytest.mark.parametrize("top_k", [0, -1, 4])
def test_top_k_out_of_range_is_one_line_naming_the_option(tmp_path, top_k):
    image(tmp_path / "x.png")
    with pytest.raises(OptionError, match=rf"^--top-k {top_k}: must be from 1 to 3 \(the model's number of classes\)$"):
        predict_files(FakeClassifier(3), None, [str(tmp_path / "x.png")], top_k=top_k, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_predictions_are_batched_and_equal_one_at_a_time(tmp_path):
    for i in range(150):
        image(tmp_path / "many" / f"{i:03d}.png", i)
    batched, single = FakeClassifier(), FakeClassifier()
    assert predict_files(batched, ["a", "b", "c"], [str(tmp_path / "many")], out=tmp_path / "o1") == 0
    assert predict_files(single, ["a", "b", "c"], [str(tmp_path / "many")], out=tmp_path / "o2", batch=1) == 0
    assert batched.calls == [64, 64, 22] and len(single.calls) == 150
    assert rows_of(tmp_path / "o1") == rows_of(tmp_path / "o2")
    assert [Path(r["file"]).name for r in rows_of(tmp_path / "o1")] == [f"{i:03d}.png" for i in range(150)]


# ---------------------------------------------------------------------- properties

KINDS = ["png", "filelink", "junk", "empty", "big", "fifo", "loop", "broken", "dirlink"]
GOOD = {"png", "filelink"}
ENTRY = st.tuples(
    st.sampled_from(["", "d1", "d1/d2", "d3"]),
    st.sampled_from(["x", "X", "dog", "dog-2", "y"]),
    st.sampled_from([".png", ".jpg", ".PNG", ""]),
    st.sampled_from(KINDS),
)
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(root: Path, entries: list[tuple[str, str, str, str]]) -> dict[Path, str]:
    """Make each entry under ``root``; return {path: kind}."""
    made: dict[Path, str] = {}
    source = image(root.parent / "src.png")
    for folder, stem, ext, kind in entries:
        path = root / folder / f"{stem}{ext}"
        if path in made:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "png":
            image(path, len(made))
        elif kind == "filelink":
            os.symlink(source, path)
        elif kind in ("junk", "empty"):
            path.write_bytes(b"not an image" if kind == "junk" else b"")
        elif kind == "big":
            with open(path, "wb") as fh:
                fh.truncate(1 << 30)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "loop":
            os.symlink(path.name, path)
        elif kind == "broken":
            os.symlink(root / "nowhere", path)
        else:
            os.symlink(root.parent, path)
        made[path] = kind
    return made


@PROPS
@given(entries=st.lists(ENTRY, min_size=1, max_size=12), top_k=st.integers(1, 3), segment=st.booleans())
def test_any_folder_every_entry_gets_exactly_one_row(entries, top_k, segment):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        made = build(root, entries)
        model = FakeSegmenter() if segment else FakeClassifier()
        with deadline(60):
            failed = predict_files(model, None, [str(root)], top_k=top_k, out=Path(tmp) / "out", max_bytes=4096)
        with open(Path(tmp) / "out" / "predictions.csv", newline="") as fh:
            table = list(csv.reader(fh))
        width = 3 if segment else 2 * top_k + 2
        assert all(len(row) == width for row in table)
        rows = {row[0]: row[-1] for row in table[1:]}
        assert len(rows) == len(table) - 1 == len(made)
        assert set(rows) == {str(p) for p in made}
        for path, kind in made.items():
            assert (rows[str(path)] == "") == (kind in GOOD), (kind, rows[str(path)])
            assert rows[str(path)] == "" or rows[str(path)].startswith(f"{path}: ")
        assert failed == sum(kind not in GOOD for kind in made.values())
        assert sum(model.calls) == len(made) - failed
        if segment:
            masks = [row[1] for row in table[1:] if row[1]]
            assert len({m.casefold() for m in masks}) == len(masks)
            assert all(Path(m).is_file() for m in masks)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "a/c"]), st.sampled_from(["dog", "Dog", "dog-2", "dog-3", "cat"])),
        max_size=12,
    )
)
def test_mask_names_are_unique_and_unique_stems_keep_their_name(parts):
    paths = [Path(folder, f"{stem}.png") for folder, stem in parts]
    names = mask_names(paths)
    assert len(names) == len(paths) and len({n.casefold() for n in names}) == len(names)
    stems = [p.stem.casefold() for p in paths]
    for p, name in zip(paths, names):
        if stems.count(p.stem.casefold()) == 1:
            assert name == f"{p.stem}_mask.png"


@given(top_k=st.integers(-5, 30), n_classes=st.integers(1, 20))
def test_top_k_is_accepted_exactly_from_1_to_the_number_of_classes(top_k, n_classes):
    if 1 <= top_k <= n_classes:
        check_top_k(top_k, n_classes)
    else:
        with pytest.raises(OptionError, match=f"^--top-k {top_k}: must be from 1 to {n_classes}"):
            check_top_k(top_k, n_classes)
