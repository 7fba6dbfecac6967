"""IDX and Kaggle-CSV readers: round trips, exact error messages, fuzzing."""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.core.errors import DataError
from stages.sources.generate import write_idx, write_label_csv
from stages.sources.readers.tabular import read_idx, read_label_csv

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def sample(dtype, shape=(5, 4, 3), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_idx_round_trip(tmp_path: Path, dtype, compress):
    a = sample(dtype)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, a, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable


def test_idx_matches_the_mnist_layout(tmp_path: Path):
    labels = np.array([5, 0, 4, 1], np.uint8)
    raw = b"\x00\x00\x08\x01" + struct.pack(">I", 4) + labels.tobytes()
    (tmp_path / "l.idx").write_bytes(raw)
    (tmp_path / "l.idx.gz").write_bytes(gzip.compress(raw))
    write_idx(tmp_path / "w.idx", labels, gzip=False)
    assert (tmp_path / "w.idx").read_bytes() == raw
    np.testing.assert_array_equal(read_idx(tmp_path / "l.idx"), labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "l.idx.gz"), labels)
    ints = np.array([[1, -2], [300000, 4]], np.int32)
    write_idx(tmp_path / "i.idx", ints, gzip=False)
    assert (tmp_path / "i.idx").read_bytes()[12:16] == b"\x00\x00\x00\x01"  # big-endian data


def test_idx_gzip_output_is_deterministic(tmp_path: Path):
    a = sample(np.uint8)
    write_idx(tmp_path / "one.gz", a)
    write_idx(tmp_path / "two.gz", a)
    assert (tmp_path / "one.gz").read_bytes() == (tmp_path / "two.gz").read_bytes()


@pytest.mark.parametrize("compress", [True, False])
def test_idx_truncated(tmp_path: Path, compress):
    a = sample(np.uint8, (10, 28, 28))
    raw = b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + a.tobytes()[:-100]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated.*10x28x28.*7840.*7740"):
        read_idx(path)


def test_idx_trailing_bytes(tmp_path: Path):
    raw = b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"abcd"
    (tmp_path / "t.idx").write_bytes(raw)
    (tmp_path / "t.idx.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(tmp_path / "t.idx")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(tmp_path / "t.idx.gz")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x02\x08\x01\x00\x00\x00\x01x", "not an IDX file"),
        (b"PK\x03\x04rest", "not an IDX file"),
        (b"", "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "unknown IDX data type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated IDX header"),
    ],
)
def test_idx_bad_headers(tmp_path: Path, raw, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=f"bad.idx: .*{message}"):
        read_idx(path)


@pytest.mark.parametrize(
    ("dims", "plain_message", "gz_message"),
    [
        ((2**20, 2**20, 8), "truncated: shape 1048576x1048576x8", "impossible for a .*-byte gzip"),
        ((2**32 - 1,) * 3, "impossible shape", "impossible shape"),
    ],
)
def test_idx_absurd_dims_refused_before_allocating(tmp_path: Path, monkeypatch, dims, plain_message, gz_message):
    raw = b"\x00\x00\x0e\x03" + struct.pack(">3I", *dims) + b"\x00" * 64
    (tmp_path / "huge.idx").write_bytes(raw)
    (tmp_path / "huge.idx.gz").write_bytes(gzip.compress(raw))

    def no_alloc(*args, **kwargs):
        raise AssertionError("must not allocate")

    monkeypatch.setattr("stages.sources.readers.tabular.np.empty", no_alloc)
    with pytest.raises(DataError, match=f"huge.idx: .*{plain_message}"):
        read_idx(tmp_path / "huge.idx")
    with pytest.raises(DataError, match=f"huge.idx.gz: .*{gz_message}"):
        read_idx(tmp_path / "huge.idx.gz")


def test_idx_corrupt_gzip_and_missing_file(tmp_path: Path):
    good = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 5000) + bytes(5000))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.gz: "):
        read_idx(tmp_path / "cut.gz")
    bad_crc = bytearray(good)
    bad_crc[-6] ^= 0xFF
    (tmp_path / "crc.gz").write_bytes(bytes(bad_crc))
    with pytest.raises(DataError, match="crc.gz: cannot read IDX file"):
        read_idx(tmp_path / "crc.gz")
    with pytest.raises(DataError, match="nope.idx: file not found"):
        read_idx(tmp_path / "nope.idx")


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


# --------------------------------------------------------------------------- CSV

SIDE, NPIX = 3, 9  # small images keep the CSV tests readable; 28x28 is covered separately


def csv_rows(n: int, labels: bool = True, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, NPIX))
    y = rng.integers(0, 10, n)
    rows = [",".join(map(str, ([int(y[i])] if labels else []) + x[i].tolist())) for i in range(n)]
    return rows, x.reshape(n, SIDE, SIDE).astype(np.uint8), y


def header(labels: bool = True) -> str:
    return ",".join((["label"] if labels else []) + [f"pixel{i}" for i in range(NPIX)])


def write(tmp_path: Path, lines: list[str], name: str = "train.csv", end: str = "\n") -> Path:
    path = tmp_path / name
    path.write_text(end.join(lines) + end)
    return path


@pytest.mark.parametrize("with_header", [True, False])
@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_csv_with_and_without_header(tmp_path: Path, with_header, end):
    rows, x, y = csv_rows(6)
    path = write(tmp_path, ([header()] if with_header else []) + rows, end=end)
    gx, gy = read_label_csv(path, n_pixels=NPIX, side=SIDE)
    assert gx.dtype == np.uint8 and gx.shape == (6, SIDE, SIDE)
    assert gy.dtype == np.int64
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)


def test_csv_pixels_only_test_file(tmp_path: Path):
    rows, x, _ = csv_rows(4, labels=False)
    gx, gy = read_label_csv(write(tmp_path, [header(False), *rows], "test.csv"), n_pixels=NPIX, side=SIDE)
    assert gy is None
    np.testing.assert_array_equal(gx, x)


def test_csv_bom_and_trailing_blank_lines_are_fine(tmp_path: Path):
    rows, x, _ = csv_rows(3)
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(rows) + "\n\n\n").encode())
    gx, _ = read_label_csv(path, n_pixels=NPIX, side=SIDE)
    np.testing.assert_array_equal(gx, x)


def test_csv_mnist_size_round_trip(tmp_path: Path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 50)
    write_label_csv(tmp_path / "train.csv", x, y)
    write_label_csv(tmp_path / "test.csv", x, header=False)
    first = (tmp_path / "train.csv").read_text().splitlines()[0]
    assert first.startswith("label,pixel0,pixel1,") and first.endswith(",pixel783")
    gx, gy = read_label_csv(tmp_path / "train.csv")
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)
    gx, gy = read_label_csv(tmp_path / "test.csv")
    assert gy is None
    np.testing.assert_array_equal(gx, x)


def bad_csv(tmp_path: Path, line5: str | None = None, with_header: bool = True) -> Path:
    """8 data lines; the one on line 5 of the file (as an editor counts) is replaced."""
    rows, _, _ = csv_rows(8)
    lines = ([header()] if with_header else []) + rows
    if line5 is not None:
        lines[4] = line5
    return write(tmp_path, lines, "digits.csv")


ROW = "3," + ",".join(["0"] * NPIX)


@pytest.mark.parametrize(
    ("line5", "message"),
    [
        (ROW + ",7", "expected 10 columns, found 11"),
        (ROW.rsplit(",", 1)[0], "expected 10 columns, found 9"),
        (ROW.replace(",0", ",abc", 1), "column 2: non-numeric pixel value 'abc'"),
        (ROW.replace(",0", ",", 1), "column 2: empty pixel value"),
        (ROW.replace(",0", ",NA", 1), "column 2: non-numeric pixel value 'NA'"),
        (ROW.replace(",0", ",300", 1), "column 2: pixel value 300 outside the integers 0..255"),
        (ROW.replace(",0", ",-1", 1), "column 2: pixel value -1 outside"),
        (ROW.replace(",0", ",2.5", 1), "column 2: pixel value 2.5 outside"),
        ("3.5" + ROW[1:], "column 1: non-integer label '3.5'"),
        ("cat" + ROW[1:], "column 1: non-numeric label 'cat'"),
        ("-3" + ROW[1:], "column 1: negative label -3"),
        ("16777216" + ROW[1:], "column 1: label 16777216 too large"),
        ("", "blank line"),
    ],
)
@pytest.mark.parametrize("with_header", [True, False])
def test_csv_errors_name_file_and_line(tmp_path: Path, line5, message, with_header):
    path = bad_csv(tmp_path, line5, with_header)
    with pytest.raises(DataError) as info:
        read_label_csv(path, n_pixels=NPIX, side=SIDE)
    text = str(info.value)
    assert "digits.csv" in text and "line 5" in text and message in text, text
    assert "\n" not in text


def test_csv_first_data_line_longer_than_header(tmp_path: Path):
    """pandas would silently turn an extra leading field into an index; we must not."""
    rows, _, _ = csv_rows(3)
    path = write(tmp_path, [header(), rows[0] + ",9", *rows[1:]])
    with pytest.raises(DataError, match="line 2: expected 10 columns, found 11"):
        read_label_csv(path, n_pixels=NPIX, side=SIDE)


def test_csv_column_of_booleans_is_not_read_as_ones_and_zeros(tmp_path: Path):
    """pandas turns a column made only of True/False into 1/0 even when asked for integers."""
    rows, _, _ = csv_rows(4)
    rows = [",".join(["True" if i == 3 else v for i, v in enumerate(r.split(","))]) for r in rows]
    with pytest.raises(DataError, match="line 2: column 4: non-numeric pixel value 'True'"):
        read_label_csv(write(tmp_path, [header(), *rows]), n_pixels=NPIX, side=SIDE)


def test_csv_first_error_wins(tmp_path: Path):
    rows, _, _ = csv_rows(8)
    rows[2] = rows[2].replace(",", ",xyz,", 1).rsplit(",", 1)[0]  # non-numeric, right width
    rows[5] = rows[5] + ",1"  # too many columns, later in the file
    with pytest.raises(DataError, match="line 4: column 2: non-numeric pixel value 'xyz'"):
        read_label_csv(write(tmp_path, [header(), *rows]), n_pixels=NPIX, side=SIDE)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "line 1: empty"),
        (b"label,a,b\n1,2,3\n", "line 1: expected 10 columns .* found 3"),
        (("\n".join([header()]) + "\n").encode(), "no data lines"),
        (b"\xff\xfe" + b"1,2\n", "line 1: not UTF-8"),
    ],
)
def test_csv_whole_file_problems(tmp_path: Path, content, message):
    path = tmp_path / "odd.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"odd.csv: {message}"):
        read_label_csv(path, n_pixels=NPIX, side=SIDE)


def test_csv_missing_file_and_bad_args(tmp_path: Path):
    with pytest.raises(DataError, match="none.csv: file not found"):
        read_label_csv(tmp_path / "none.csv")
    with pytest.raises(ValueError, match="side"):
        read_label_csv(tmp_path / "none.csv", n_pixels=10, side=3)


def test_write_label_csv_checks_values(tmp_path: Path):
    with pytest.raises(ValueError, match="0..255"):
        write_label_csv(tmp_path / "x.csv", np.full((1, 3, 3), 256))
    with pytest.raises(ValueError, match="labels"):
        write_label_csv(tmp_path / "x.csv", np.zeros((2, 3, 3)), np.array([1]))


def test_negative_labels_stop_the_dataset_read_naming_file_and_line_or_item(tmp_path: Path):
    """Negative labels used to reach np.bincount in prepare (a traceback) or index classes from the end."""
    from stages.sources.formats import read_raw

    csv_dir, idx_dir = tmp_path / "csv", tmp_path / "idx"
    csv_dir.mkdir()
    idx_dir.mkdir()
    rows = ["label," + ",".join(f"pixel{i}" for i in range(784))] + [
        f"{y}," + ",".join(["0"] * 784) for y in (1, 0, -2)
    ]
    (csv_dir / "train.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"train\.csv: line 4: column 1: negative label -2"):
        read_raw(csv_dir, "label_csv")
    write_idx(idx_dir / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    write_idx(idx_dir / "train-labels-idx1-ubyte.gz", np.array([0, -1, 2], np.int8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: label -1 at item 1 is negative"):
        read_raw(idx_dir, "mnist_idx")


# --------------------------------------------------------------------------- fuzz

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
IDX_SEEDS = [
    b"\x00\x00\x08\x02" + struct.pack(">2I", 3, 4) + bytes(range(12)),
    b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + np.arange(3, dtype=">f4").tobytes(),
]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    if draw(st.booleans()):
        data = bytearray(gzip.compress(bytes(data), mtime=0))
        if draw(st.booleans()) and len(data) > 2:
            del data[draw(st.integers(2, len(data) - 1)) :]
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=64), mutated(IDX_SEEDS)))
def test_fuzz_read_idx_only_succeeds_or_raises_data_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.idx"
        path.write_bytes(data)
        try:
            out = read_idx(path)
        except DataError as exc:
            assert "\n" not in str(exc)
            return
        assert isinstance(out, np.ndarray) and out.dtype.isnative


CSV_SEEDS = [
    b"a,b,c,d,e\n1,0,255,3,4\n2,9,9,9,9\n",
    b"0,1,2,3\n4,5,6,7\n",
]
CSV_ALPHABET = st.sampled_from(list(b'0123456789,,,\n\r .-e"ax'))


@FUZZ
@given(
    st.one_of(
        mutated(CSV_SEEDS),
        st.lists(CSV_ALPHABET, max_size=60).map(bytes),
        st.binary(max_size=40),
    )
)
def test_fuzz_read_label_csv_only_succeeds_or_raises_data_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.csv"
        path.write_bytes(data)
        try:
            x, y = read_label_csv(path, n_pixels=4, side=2)
        except DataError as exc:
            assert "\n" not in str(exc)
            return
        assert x.dtype == np.uint8 and x.shape[1:] == (2, 2)
        assert y is None or (y.dtype == np.int64 and y.shape == (len(x),) and (not len(y) or y.min() >= 0))
