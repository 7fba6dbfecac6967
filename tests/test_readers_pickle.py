"""The pickle-based readers: .pth files (zip and legacy) and CIFAR-10 python batches.

Everything here is built without torch; hostile pickles must be refused before any
callable they name runs.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import re
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.core.errors import DataError
from stages.sources.generate import CompatPickler, GlobalRef, Reduce, numpy_reduce, write_cifar_python
from stages.sources.readers.cifar import read_cifar_python
from stages.sources.readers.pth import LEGACY_MAGIC, LEGACY_PROTOCOL, load_pth, read_pth_object
from stages.sources.readers.safe_pickle import ALLOWED_GLOBALS, safe_load
from tests.writers import write_pth_zip

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pth"
FIXTURE_FILES = [
    "dict_uint8_nhwc.pth",
    "dict_uint8_nhwc_legacy.pth",
    "dict_float_nchw.pth",
    "dict_numpy.pth",
    "tuple_tensors.pth",
]
EIGHT = ["Airplane", "Automobile", "Bird", "Cat", "Deer", "Dog", "Frog", "Horse"]


def make_data(n_train: int = 12, n_test: int = 4, n_classes: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    y_train = rng.integers(0, n_classes, n_train).astype(np.int64)
    y_test = rng.integers(0, n_classes, n_test).astype(np.int64)
    return x_train, y_train, x_test, y_test


def assert_dataset(d: dict, x_train, y_train, x_test, y_test, classes=None) -> None:
    assert set(d) == {"x_train", "y_train", "x_test", "y_test", "classes"}
    for key, want in (
        ("x_train", x_train),
        ("y_train", y_train),
        ("x_test", x_test),
        ("y_test", y_test),
    ):
        assert d[key].dtype == want.dtype, key
        np.testing.assert_array_equal(d[key], want, err_msg=key)
    assert d["x_train"].dtype == np.uint8 and d["x_train"].flags.c_contiguous
    assert d["y_train"].dtype == np.int64
    assert d["classes"] == classes


# ----------------------------------------------------------- hand-made torch files


class Stor:
    """A storage to be written: ``cls`` (e.g. "ByteStorage"), raw little-endian bytes."""

    def __init__(self, key: str, cls: str, array: np.ndarray) -> None:
        self.key, self.cls, self.array = key, cls, np.ascontiguousarray(array).ravel()


def tensor_ref(stor: Stor, offset: int, size: tuple, stride: tuple) -> Reduce:
    return Reduce(
        GlobalRef("torch._utils", "_rebuild_tensor_v2"),
        (stor, offset, size, stride, False, collections.OrderedDict()),
    )


def zip_pth(path: Path, obj, storages: list[Stor], *, prefix: str = "archive") -> None:
    """A torch zip archive whose data.pkl is ``obj`` (with tensor_ref markers)."""

    def pid(o):
        if isinstance(o, Stor):
            return ("storage", GlobalRef("torch", o.cls), o.key, "cpu", o.array.size)
        return None

    buf = io.BytesIO()
    CompatPickler(buf, persistent_id=pid).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
        zf.writestr(f"{prefix}/byteorder", b"little")
        for s in storages:
            zf.writestr(f"{prefix}/data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{prefix}/version", b"3\n")


def legacy_pth(path: Path, obj, storages: list[Stor], views: dict | None = None) -> None:
    """torch's legacy (non-zip) format: magic, protocol, sys_info, object, keys, storages.

    ``views`` maps a Stor to (root Stor, offset, size, view_key) for legacy storage views.
    """
    views = views or {}

    def pid(o):
        if isinstance(o, Stor):
            if o in views:
                root, offset, size, view_key = views[o]
                return (
                    "storage",
                    GlobalRef("torch", root.cls),
                    root.key,
                    "cpu",
                    root.array.size,
                    (view_key, offset, size),
                )
            return ("storage", GlobalRef("torch", o.cls), o.key, "cpu", o.array.size, None)
        return None

    out = io.BytesIO()
    for header in (
        LEGACY_MAGIC,
        LEGACY_PROTOCOL,
        {
            "protocol_version": LEGACY_PROTOCOL,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4},
        },
    ):
        pickle.dump(header, out, protocol=2)
    CompatPickler(out, persistent_id=pid).dump(obj)
    pickle.dump([s.key for s in storages], out, protocol=2)
    for s in storages:
        out.write(struct.pack("<q", s.array.size))
        out.write(s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(out.getvalue())


# -------------------------------------------------------------------- round trips


def test_roundtrip_uint8_nhwc_dict(tmp_path):
    x_train, y_train, x_test, y_test = make_data()
    path = tmp_path / "data.pth"
    write_pth_zip(
        path,
        {
            "train_imgs": x_train,
            "train_labels": y_train,
            "test_imgs": x_test,
            "test_labels": y_test,
        },
    )
    assert zipfile.is_zipfile(path)
    assert_dataset(load_pth(path), x_train, y_train, x_test, y_test)


def test_roundtrip_float_nchw_dict_with_classes(tmp_path):
    x_train, y_train, x_test, y_test = make_data(seed=1)
    to_float = lambda x: (x.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)  # noqa: E731
    path = tmp_path / "float.pth"
    write_pth_zip(
        path,
        {
            "train_imgs": to_float(x_train),
            "train_labels": y_train,
            "test_imgs": to_float(x_test),
            "test_labels": y_test,
            "classes": EIGHT,
        },
    )
    assert_dataset(load_pth(path), x_train, y_train, x_test, y_test, EIGHT)


def test_roundtrip_tuple_layout(tmp_path):
    x_train, y_train, x_test, y_test = make_data(seed=2)
    path = tmp_path / "tuple.pth"
    write_pth_zip(path, ((x_train, y_train), (x_test, y_test)))
    assert_dataset(load_pth(path), x_train, y_train, x_test, y_test)


def test_roundtrip_numpy_arrays_inside(tmp_path):
    x_train, y_train, x_test, y_test = make_data(seed=3)
    path = tmp_path / "numpy.pth"
    obj = {
        "train_imgs": x_train,
        "train_labels": y_train,
        "test_imgs": x_test,
        "test_labels": y_test,
    }
    write_pth_zip(path, obj, numpy_arrays=True)
    with zipfile.ZipFile(path) as zf:
        assert [n for n in zf.namelist() if "/data/" in n] == []  # no tensor storages at all
    assert_dataset(load_pth(path), x_train, y_train, x_test, y_test)


def test_alternative_keys_float_0_255_and_label_lists(tmp_path):
    x_train, y_train, x_test, y_test = make_data(seed=4)
    path = tmp_path / "alt.pth"
    write_pth_zip(
        path,
        {
            "x_train": x_train.astype(np.float64),
            "y_train": y_train.tolist(),
            "x_test": x_test.astype(np.float64),
            "y_test": y_test.astype(np.int32),
            "class_names": EIGHT,
        },
    )
    assert_dataset(load_pth(path), x_train, y_train, x_test, y_test, EIGHT)


def test_train_test_split_dict_and_grayscale(tmp_path):
    x_train, y_train, x_test, y_test = make_data(seed=5)
    gray_tr, gray_te = x_train[..., :1], x_test[..., :1]
    path = tmp_path / "split.pth"
    write_pth_zip(
        path,
        {
            "train": {"images": gray_tr.transpose(0, 3, 1, 2), "labels": y_train},
            "test": (gray_te, y_test),
        },
    )
    d = load_pth(path)
    assert_dataset(d, np.repeat(gray_tr, 3, axis=3), y_train, np.repeat(gray_te, 3, axis=3), y_test)


def test_strided_and_offset_tensors_share_a_storage(tmp_path):
    """Tensors as views: NCHW strides over an NHWC buffer, test images at an offset."""
    x_train, y_train, x_test, y_test = make_data(n_train=5, n_test=3, seed=6)
    images = Stor("0", "ByteStorage", np.concatenate([x_train, x_test]))
    labels = Stor("1", "LongStorage", np.concatenate([[99], y_train, y_test]))
    nchw_strides = (3072, 1, 96, 3)  # NCHW view of NHWC memory, as x.permute(0, 3, 1, 2)
    obj = {
        "train_imgs": tensor_ref(images, 0, (5, 3, 32, 32), nchw_strides),
        "test_imgs": tensor_ref(images, 5 * 3072, (3, 32, 32, 3), (3072, 96, 3, 1)),
        "train_labels": tensor_ref(labels, 1, (5,), (1,)),
        "test_labels": tensor_ref(labels, 6, (3,), (1,)),
    }
    zip_pth(tmp_path / "views.pth", obj, [images, labels])
    assert_dataset(load_pth(tmp_path / "views.pth"), x_train, y_train, x_test, y_test)
    # every other label via a stride of 2
    obj["test_labels"] = tensor_ref(labels, 1, (3,), (2,))
    zip_pth(tmp_path / "views2.pth", obj, [images, labels])
    np.testing.assert_array_equal(load_pth(tmp_path / "views2.pth")["y_test"], y_train[::2])


def test_tensor_past_its_storage_is_refused(tmp_path):
    x_train, y_train, x_test, y_test = make_data(n_train=2, n_test=1)
    images = Stor("0", "ByteStorage", x_train)
    labels = Stor("1", "LongStorage", y_train)
    obj = {
        "train_imgs": tensor_ref(images, 3072, (2, 32, 32, 3), (3072, 96, 3, 1)),
        "train_labels": tensor_ref(labels, 0, (2,), (1,)),
        "test_imgs": tensor_ref(images, 0, (1, 32, 32, 3), (3072, 96, 3, 1)),
        "test_labels": tensor_ref(labels, 0, (1,), (1,)),
    }
    zip_pth(tmp_path / "bad.pth", obj, [images, labels])
    with pytest.raises(DataError, match="runs past its storage"):
        load_pth(tmp_path / "bad.pth")


@pytest.mark.parametrize("writer", [zip_pth, legacy_pth])
def test_many_stretched_views_of_one_storage_have_a_total_budget(tmp_path, writer):
    """Each zero-stride view stays under the per-tensor limit (4M elements, 32 MiB); 8 of them
    would take 256 MiB from a file of about a kilobyte."""
    one = Stor("0", "DoubleStorage", np.zeros(1))
    obj = {f"t{i}": tensor_ref(one, 0, (1 << 22,), (0,)) for i in range(8)}
    path = tmp_path / "stretched.pth"
    writer(path, obj, [one])
    assert path.stat().st_size < 4096
    with pytest.raises(
        DataError, match=r"stretched\.pth: tensor of shape \(4194304,\) would bring the file's tensors past"
    ):
        read_pth_object(path)
    # two views of a storage, or small stretched ones, are fine
    obj = {"a": tensor_ref(one, 0, (1 << 20,), (0,)), "b": tensor_ref(one, 0, (1,), (1,))}
    writer(path, obj, [one])
    assert read_pth_object(path)["a"].shape == (1 << 20,)


def test_deflated_zeros_entry_is_refused_before_it_is_read(tmp_path):
    """A re-zipped .pth whose storage entry deflates 96 MiB of zeros into a few hundred KB."""
    n = 96 << 20
    ref = object()
    obj = {"x": Reduce(GlobalRef("torch._utils", "_rebuild_tensor_v2"), (ref, 0, (n,), (1,), False, {}))}
    buf = io.BytesIO()
    pid = lambda o: ("storage", GlobalRef("torch", "ByteStorage"), "0", "cpu", n) if o is ref else None  # noqa: E731
    CompatPickler(buf, persistent_id=pid).dump(obj)
    path = tmp_path / "zeros.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        with zf.open("archive/data/0", "w") as fh:
            for _ in range(n >> 20):
                fh.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"zeros\.pth: its entries unpack to \d+ bytes, over 50 times") as err:
            read_pth_object(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "archive/data/0" in str(err.value) and peak < 8 << 20


def test_legacy_format_with_views_and_offsets(tmp_path):
    x_train, y_train, x_test, y_test = make_data(n_train=4, n_test=2, seed=7)
    images = Stor("140001", "ByteStorage", np.concatenate([x_train, x_test]))
    labels = Stor("140002", "LongStorage", np.concatenate([y_train, y_test]))
    test_view = Stor("view-of-labels", "LongStorage", y_test)
    obj = {
        "train_imgs": tensor_ref(images, 0, (4, 32, 32, 3), (3072, 96, 3, 1)),
        "test_imgs": tensor_ref(images, 4 * 3072, (2, 32, 32, 3), (3072, 96, 3, 1)),
        "train_labels": tensor_ref(labels, 0, (4,), (1,)),
        "test_labels": tensor_ref(test_view, 0, (2,), (1,)),
    }
    path = tmp_path / "legacy.pth"
    legacy_pth(path, obj, [labels, images], views={test_view: (labels, 4, 2, "view-of-labels")})
    assert not zipfile.is_zipfile(path)
    assert_dataset(load_pth(path), x_train, y_train, x_test, y_test)


def test_other_tensor_dtypes_and_big_endian_zip(tmp_path):
    values = np.array([0.0, 0.5, 1.0, -2.0], dtype=np.float32)
    half = Stor("0", "HalfStorage", values.astype(np.float16))
    bf16 = Stor("1", "BFloat16Storage", (values.view(np.uint32) >> 16).astype(np.uint16))
    obj = [tensor_ref(half, 0, (4,), (1,)), tensor_ref(bf16, 1, (3,), (1,))]
    zip_pth(tmp_path / "dt.pth", obj, [half, bf16])
    got = read_pth_object(tmp_path / "dt.pth")
    np.testing.assert_array_equal(got[0], values.astype(np.float16))
    assert got[1].dtype == np.float32
    np.testing.assert_array_equal(got[1], values[1:])
    # the same storages written big-endian, with the archive's byteorder record saying so
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(tmp_path / "dt.pth") as src, zipfile.ZipFile(big, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("byteorder"):
                data = b"big"
            elif "/data/" in name:
                data = np.frombuffer(data, dtype="<u2").astype(">u2").tobytes()
            dst.writestr(name, data)
    got = read_pth_object(big)
    np.testing.assert_array_equal(got[0], values.astype(np.float16))
    np.testing.assert_array_equal(got[1], values[1:])


# ------------------------------------------------------------------- bad content


def _write_dict(tmp_path, **overrides):
    x_train, y_train, x_test, y_test = make_data(n_train=4, n_test=2)
    obj = {
        "train_imgs": x_train,
        "train_labels": y_train,
        "test_imgs": x_test,
        "test_labels": y_test,
    }
    obj.update(overrides)
    obj = {k: v for k, v in obj.items() if v is not None}
    path = tmp_path / "bad.pth"
    write_pth_zip(path, obj)
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_imgs": np.zeros((4, 32, 32), np.uint8)}, "train images must be 4-D"),
        ({"test_labels": np.zeros(3, np.int64)}, "test labels has 3 labels for 2 images"),
        ({"train_labels": np.zeros(4, np.float32)}, "train labels are not integers"),
        ({"train_labels": np.zeros((4, 8), np.int64)}, "train labels must be 1-D"),
        ({"train_labels": -np.ones(4, np.int64)}, "negative labels"),
        ({"train_imgs": np.zeros((4, 32, 32, 5), np.uint8)}, "no channel axis"),
        ({"train_imgs": np.zeros((4, 28, 28, 3), np.uint8)}, "expected 32×32"),
        (
            {"train_imgs": np.full((4, 32, 32, 3), 300.0, np.float32)},
            r"expected \[0, 1\] or \[0, 255\]",
        ),
        (
            {"train_imgs": np.full((4, 32, 32, 3), -0.5, np.float32)},
            r"expected \[0, 1\] or \[0, 255\]",
        ),
        ({"train_imgs": np.full((4, 32, 32, 3), np.nan, np.float32)}, "NaN"),
        ({"train_imgs": np.full((4, 32, 32, 3), 256, np.int32)}, "expected 0..255"),
        ({"test_labels": None}, "no train/test images and labels found"),
        ({"classes": ["a", "b"]}, "out of range for 2 classes"),
        ({"classes": [1, 2]}, "classes must be strings"),
    ],
)
def test_bad_content_is_a_one_line_data_error(tmp_path, overrides, message):
    path = _write_dict(tmp_path, **overrides)
    with pytest.raises(DataError, match=message) as info:
        load_pth(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_unsupported_top_level_layout(tmp_path):
    write_pth_zip(tmp_path / "l.pth", [1, 2, 3])
    with pytest.raises(DataError, match="unsupported layout list"):
        load_pth(tmp_path / "l.pth")


def test_missing_file_and_not_a_pth(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_pth(tmp_path / "absent.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(DataError, match="not a PyTorch .pth file"):
        load_pth(tmp_path / "text.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(DataError, match="empty.pth: not a PyTorch"):
        load_pth(tmp_path / "empty.pth")


def _rezip(src: Path, dst: Path, *, drop=(), add=()) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name not in drop:
                zout.writestr(name, zin.read(name))
        for name, data in add:
            zout.writestr(name, data)


def test_zip_with_two_data_pkl_is_refused(tmp_path):
    good = _write_dict(tmp_path)
    with zipfile.ZipFile(good) as zf:
        pkl = zf.read("bad/data.pkl")
    _rezip(good, tmp_path / "two.pth", add=[("other/data.pkl", pkl)])
    with pytest.raises(DataError, match="2 data.pkl entries"):
        load_pth(tmp_path / "two.pth")
    _rezip(good, tmp_path / "none.pth", drop=("bad/data.pkl",))
    with pytest.raises(DataError, match="no data.pkl"):
        load_pth(tmp_path / "none.pth")


def test_zip_duplicate_entry_names_are_refused(tmp_path):
    good = _write_dict(tmp_path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        _rezip(good, tmp_path / "dup.pth", add=[("bad/data/0", b"\x00" * 10)])
    with pytest.raises(DataError, match="duplicate entries"):
        load_pth(tmp_path / "dup.pth")


def test_zip_missing_or_short_storage_entry(tmp_path):
    good = _write_dict(tmp_path)
    _rezip(good, tmp_path / "missing.pth", drop=("bad/data/1",))
    with pytest.raises(DataError, match="lacks the storage entry bad/data/1"):
        load_pth(tmp_path / "missing.pth")
    with zipfile.ZipFile(good) as zf:
        short = zf.read("bad/data/1")[:-8]
    _rezip(good, tmp_path / "short.pth", drop=("bad/data/1",), add=[("bad/data/1", short)])
    with pytest.raises(DataError, match="holds 24 bytes, expected 32"):
        load_pth(tmp_path / "short.pth")


def test_zip_storage_entry_cut_or_altered_behind_a_right_header(tmp_path):
    """The header says 32 bytes and the entry holds fewer, or other bytes: zipfile's own checks refuse it."""
    good = _write_dict(tmp_path)
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("bad/data/1")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the entry's bytes, after its local header
    altered = tmp_path / "altered.pth"
    altered.write_bytes(data[:start] + bytes(b ^ 0xFF for b in data[start : start + 4]) + data[start + 4 :])
    cut = tmp_path / "cut.pth"  # 8 bytes gone from the entry, the central directory moved along: stored size 32
    cut.write_bytes(data[: start + 24] + data[start + 32 :])
    for path, reason in ((altered, "BadZipFile: Bad CRC-32"), (cut, "BadZipFile")):
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: .*{reason}") as err:
            load_pth(path)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------ fixtures


def _fixtures_or_skip() -> Path:
    if not (FIXTURES / "expected.npz").is_file():
        pytest.skip("no ../shared/fixtures/pth here (a user's clone has no ../shared)")
    return FIXTURES


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_real_torch_fixtures(name):
    folder = _fixtures_or_skip()
    sums = json.loads((folder / "sha256.json").read_text())
    assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sums[name]
    with np.load(folder / "expected.npz", allow_pickle=False) as npz:
        expected = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    d = load_pth(folder / name)
    assert_dataset(d, **expected, classes=EIGHT if name == "dict_float_nchw.pth" else None)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_truncated_fixtures(tmp_path, name):
    folder = _fixtures_or_skip()
    data = (folder / name).read_bytes()
    for cut in (1, 10, 100, 700, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(DataError) as info:
            load_pth(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_truncated_own_files(tmp_path):
    x_train, y_train, x_test, y_test = make_data(n_train=3, n_test=2)
    obj = {
        "train_imgs": x_train,
        "train_labels": y_train,
        "test_imgs": x_test,
        "test_labels": y_test,
    }
    zpath, lpath = tmp_path / "z.pth", tmp_path / "l.pth"
    write_pth_zip(zpath, obj)
    imgs = Stor("1", "ByteStorage", np.concatenate([x_train, x_test]))
    labs = Stor("2", "LongStorage", np.concatenate([y_train, y_test]))
    legacy_pth(
        lpath,
        {
            "train_imgs": tensor_ref(imgs, 0, (3, 32, 32, 3), (3072, 96, 3, 1)),
            "test_imgs": tensor_ref(imgs, 9216, (2, 32, 32, 3), (3072, 96, 3, 1)),
            "train_labels": tensor_ref(labs, 0, (3,), (1,)),
            "test_labels": tensor_ref(labs, 3, (2,), (1,)),
        },
        [imgs, labs],
    )
    assert_dataset(load_pth(lpath), x_train, y_train, x_test, y_test)
    for src in (zpath, lpath):
        data = src.read_bytes()
        for cut in range(1, len(data), max(1, len(data) // 37)):
            bad = tmp_path / "cut.pth"
            bad.write_bytes(data[:cut])
            with pytest.raises(DataError):
                load_pth(bad)


# ------------------------------------------------------------------ hostile pickles


class Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _assert_refused(exc: DataError, file: str, *qualnames: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert msg.startswith(f"{file}: refusing to load: the pickle asks for ")
    assert msg.endswith(", which is not tensor/array data")
    assert any(q in msg for q in qualnames), msg


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_os_system_is_refused_before_it_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"train_imgs": Payload(os.system, f"touch {marker}")}, protocol=protocol)
    with pytest.raises(DataError) as info:
        safe_load(io.BytesIO(payload), name="evil.pkl")
    _assert_refused(info.value, "evil.pkl", "posix.system", "os.system", "nt.system")
    # as a whole .pth (legacy path: it starts like a pickle) and inside a torch zip
    if protocol >= 2:
        raw = tmp_path / "evil.pth"
        raw.write_bytes(payload)
        with pytest.raises(DataError) as info:
            load_pth(raw)
        _assert_refused(info.value, str(raw), "posix.system", "os.system")
    zipped = tmp_path / "evil_zip.pth"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("evil_zip/data.pkl", payload)
        zf.writestr("evil_zip/version", b"3\n")
    with pytest.raises(DataError) as info:
        load_pth(zipped)
    _assert_refused(info.value, str(zipped), "posix.system", "os.system")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("func", "args", "qualname"),
    [
        (eval, ("__import__('os').system('touch {m}')",), "builtins.eval"),
        (exec, ("open('{m}', 'w').close()",), "builtins.exec"),
        (__import__, ("os",), "builtins.__import__"),
        (getattr, (os, "system"), "builtins.getattr"),
        (open, ("{m}", "w"), "io.open"),
        (collections.Counter, ("abc",), "collections.Counter"),
        (np.load, ("{m}",), "numpy.load"),
        (np.frombuffer, (b"x",), "numpy.frombuffer"),
    ],
)
def test_other_globals_are_refused(tmp_path, func, args, qualname):
    marker = tmp_path / "pwned"
    args = tuple(a.format(m=marker) if isinstance(a, str) else a for a in args)
    try:
        payload = pickle.dumps(Payload(func, *args), protocol=2)
    except (TypeError, pickle.PicklingError):  # getattr(os, ...) pickles the module: hand-write it
        payload = b"\x80\x02cbuiltins\ngetattr\ncos\nsystem\n."
    with pytest.raises(DataError) as info:
        safe_load(io.BytesIO(payload), name="f.pkl")
    _assert_refused(info.value, "f.pkl", qualname)
    assert not marker.exists()


def test_python2_and_stack_global_names_are_refused():
    py2 = b"c__builtin__\neval\n(S'1+1'\ntR."
    with pytest.raises(DataError) as info:
        safe_load(io.BytesIO(py2), name="p2")
    _assert_refused(info.value, "p2", "builtins.eval")  # reported under its Python 3 name
    # protocol 4 STACK_GLOBAL with a dotted name reaching through an allowed module
    p4 = b"\x80\x04\x8c\x05numpy\x94\x8c\x0endarray.tofile\x94\x93\x94."
    with pytest.raises(DataError) as info:
        safe_load(io.BytesIO(p4), name="p4")
    _assert_refused(info.value, "p4", "numpy.ndarray.tofile")


def test_build_cannot_tamper_with_allowed_stand_ins():
    before = {k: (type(v), getattr(v, "dtype", None)) for k, v in ALLOWED_GLOBALS.items()}
    for target in (
        b"ctorch\nFloatStorage\n",
        b"ctorch._utils\n_rebuild_tensor_v2\n",
        b"cnumpy\nndarray\n",
    ):
        for state in (b"}S'dtype'\nS'O'\ns", b"N}S'dtype'\nS'O'\ns\x86"):
            evil = b"\x80\x02" + target + state + b"b."
            with pytest.raises(DataError, match="not a valid pickle"):
                safe_load(io.BytesIO(evil), name="tamper")
    after = {k: (type(v), getattr(v, "dtype", None)) for k, v in ALLOWED_GLOBALS.items()}
    assert before == after


def test_persistent_ids_need_a_loader_and_must_be_storages(tmp_path):
    with pytest.raises(DataError, match="persistent id"):
        safe_load(io.BytesIO(b"\x80\x02X\x01\x00\x00\x00aQ."), name="pid")
    # a zip whose persistent id tries to walk out of data/
    zpath = tmp_path / "walk.pth"
    stor = Stor("../../etc/passwd", "ByteStorage", np.zeros(4, np.uint8))
    zip_pth(zpath, tensor_ref(stor, 0, (4,), (1,)), [])
    with pytest.raises(DataError, match="bad storage key"):
        load_pth(zpath)


def test_safe_load_plain_values_and_numpy_pickles():
    arrays = {
        "a": np.arange(12, dtype=">i4").reshape(3, 4),
        "b": np.zeros((0, 3), np.float32),
        "c": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "d": np.bool_(True),
        "e": np.float32(1.5),
        "f": [1, 2.5, "x", b"y", None, (True, -3)],
    }
    for protocol in (2, 3, 4):
        got = safe_load(io.BytesIO(pickle.dumps(arrays, protocol=protocol)), name="ok")
        for k in "abc":
            np.testing.assert_array_equal(got[k], arrays[k])
            assert got[k].dtype.newbyteorder("=") == arrays[k].dtype.newbyteorder("=")
        assert got["d"] is True and got["e"] == 1.5 and got["f"] == arrays["f"]
    with pytest.raises(DataError, match="unsupported NumPy dtype 'O8'"):  # no object arrays
        safe_load(io.BytesIO(pickle.dumps(np.array([{}], dtype=object), protocol=2)), name="obj")


@pytest.mark.parametrize("data", [b"", b"\x80\x02", b"\x80\x02}q\x00(X", b"garbage\n", b"\x80\x05\x95" + b"\xff" * 8])
def test_malformed_pickles(data):
    with pytest.raises(DataError, match="^bad.pkl: ") as info:
        safe_load(io.BytesIO(data), name="bad.pkl")
    assert "\n" not in str(info.value)


# -------------------------------------------------------------------------- CIFAR


def _cifar(tmp_path, n_train=10, n_test=4, n_batches=5):
    x_train, y_train, x_test, y_test = make_data(n_train, n_test, n_classes=10, seed=9)
    names = [f"class {i}" for i in range(10)]
    root = write_cifar_python(
        tmp_path / "cifar-10-batches-py",
        x_train,
        y_train,
        x_test,
        y_test,
        names,
        n_train_batches=n_batches,
    )
    return root, (x_train, y_train, x_test, y_test, names)


def test_cifar_roundtrip_dir_and_parent(tmp_path):
    root, expected = _cifar(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == [
        "batches.meta",
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ]
    for folder in (root, tmp_path):
        got = read_cifar_python(folder)
        for a, b in zip(got[:4], expected[:4], strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert got[4] == expected[4]
        assert got[0].shape == (10, 32, 32, 3) and got[1].dtype == np.int64


def test_cifar_files_look_like_the_official_ones(tmp_path):
    root, (x_train, y_train, *_rest) = _cifar(tmp_path)
    raw = (root / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02}") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw  # bytes written as Python 2 strings, not encode() calls
    # our own trusted file: the stock unpickler (with NumPy) reads it as the real ones are read
    batch = pickle.loads(raw, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (2, 3072) and batch[b"data"].dtype == np.uint8
    assert batch[b"batch_label"] == b"training batch 1 of 5"
    np.testing.assert_array_equal(batch[b"data"][0, :1024].reshape(32, 32), x_train[0, :, :, 0])
    meta = pickle.loads((root / "batches.meta").read_bytes(), encoding="bytes")
    assert meta[b"label_names"][0] == b"class 0" and meta[b"num_vis"] == 3072


def test_cifar_missing_batch_file_is_named(tmp_path):
    root, _ = _cifar(tmp_path)
    (root / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch") as info:
        read_cifar_python(root)
    assert "missing" in str(info.value)
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        read_cifar_python(root)
    with pytest.raises(DataError, match="no such folder"):
        read_cifar_python(tmp_path / "nowhere")


def test_cifar_wrong_data_length_and_labels(tmp_path):
    root, _ = _cifar(tmp_path)
    batch = pickle.loads((root / "data_batch_2").read_bytes(), encoding="bytes")  # our own file
    bad = dict(batch)
    bad[b"data"] = numpy_reduce(batch[b"data"][:, :3000], py2=True)
    with open(root / "data_batch_2", "wb") as fh:
        CompatPickler(fh, py2_strings=True).dump(bad)
    with pytest.raises(DataError, match=r"data_batch_2: data holds 6000 values"):
        read_cifar_python(root)
    bad[b"data"] = numpy_reduce(batch[b"data"], py2=True)
    bad[b"labels"] = [3, 10]
    with open(root / "data_batch_2", "wb") as fh:
        CompatPickler(fh, py2_strings=True).dump(bad)
    with pytest.raises(DataError, match=r"labels span 3..10, out of range for 10 classes"):
        read_cifar_python(root)
    bad[b"labels"] = [3]
    with open(root / "data_batch_2", "wb") as fh:
        CompatPickler(fh, py2_strings=True).dump(bad)
    with pytest.raises(DataError, match=r"expected 1×3072 for 1 labels"):
        read_cifar_python(root)


def test_cifar_hostile_batch_is_refused(tmp_path):
    root, _ = _cifar(tmp_path)
    marker = tmp_path / "pwned"
    (root / "data_batch_1").write_bytes(pickle.dumps(Payload(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises(DataError) as info:
        read_cifar_python(root)
    _assert_refused(info.value, str(root / "data_batch_1"), "posix.system", "os.system")
    assert not marker.exists()


# ---------------------------------------------------------------------- hypothesis

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Small valid files to mutate: zip, zip holding NumPy arrays, legacy."""
    d = tmp_path_factory.mktemp("seeds")
    x_train, y_train, x_test, y_test = make_data(n_train=2, n_test=1)
    obj = {
        "train_imgs": x_train,
        "train_labels": y_train,
        "test_imgs": x_test,
        "test_labels": y_test,
    }
    write_pth_zip(d / "z.pth", obj)
    write_pth_zip(d / "n.pth", obj, numpy_arrays=True)
    imgs = Stor("1", "ByteStorage", np.concatenate([x_train, x_test]))
    labs = Stor("2", "LongStorage", np.concatenate([y_train, y_test]))
    legacy_pth(
        d / "l.pth",
        {
            "train_imgs": tensor_ref(imgs, 0, (2, 32, 32, 3), (3072, 96, 3, 1)),
            "test_imgs": tensor_ref(imgs, 6144, (1, 32, 32, 3), (3072, 96, 3, 1)),
            "train_labels": tensor_ref(labs, 0, (2,), (1,)),
            "test_labels": tensor_ref(labs, 2, (1,), (1,)),
        },
        [imgs, labs],
    )
    with zipfile.ZipFile(d / "n.pth") as zf:
        pkl = zf.read("n/data.pkl")
    out = {p.stem: p.read_bytes() for p in (d / "z.pth", d / "n.pth", d / "l.pth")}
    out["pkl"] = pkl
    return out


def _mutate(data: bytes, edits: list[tuple[float, int]], cut: float | None, head_bias: bool) -> bytes:
    buf = bytearray(data)
    span = min(len(buf), 1024) if head_bias else len(buf)
    for where, value in edits:
        buf[int(where * (span - 1))] = value
    if cut is not None:
        buf = buf[: int(cut * len(buf))]
    return bytes(buf)


def _only_success_or_data_error(fn, *args) -> None:
    try:
        fn(*args)
    except DataError as exc:
        assert "\n" not in str(exc)


EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(
    data=st.binary(max_size=2000),
    prefix=st.sampled_from([b"", b"\x80\x02", b"PK\x03\x04", b"\x80\x02\x8a\n"]),
)
def test_fuzz_random_bytes(tmp_path_factory, data, prefix):
    path = tmp_path_factory.getbasetemp() / "fuzz_random.pth"
    path.write_bytes(prefix + data)
    _only_success_or_data_error(load_pth, path)


@FUZZ
@given(
    which=st.sampled_from(["z", "n", "l"]),
    edits=EDITS,
    cut=st.none() | st.floats(0, 1),
    head=st.booleans(),
)
def test_fuzz_mutated_pth(tmp_path_factory, seeds, which, edits, cut, head):
    path = tmp_path_factory.getbasetemp() / "fuzz_mutated.pth"
    path.write_bytes(_mutate(seeds[which], edits, cut, head))
    _only_success_or_data_error(load_pth, path)


@FUZZ
@given(edits=EDITS, cut=st.none() | st.floats(0, 1))
def test_fuzz_mutated_pickle_inside_valid_zip(tmp_path_factory, seeds, edits, cut):
    path = tmp_path_factory.getbasetemp() / "fuzz_inner.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("n/data.pkl", _mutate(seeds["pkl"], edits, cut, head_bias=False))
        zf.writestr("n/byteorder", b"little")
    _only_success_or_data_error(load_pth, path)


@pytest.fixture(scope="module")
def cifar_seed(tmp_path_factory) -> tuple[Path, bytes]:
    d = tmp_path_factory.mktemp("cifar_seed")
    x_train, y_train, x_test, y_test = make_data(2, 2, n_classes=10)
    root = write_cifar_python(d, x_train, y_train, x_test, y_test, [str(i) for i in range(10)], n_train_batches=1)
    return root, (root / "test_batch").read_bytes()


@FUZZ
@given(
    edits=EDITS,
    cut=st.none() | st.floats(0, 1),
    head=st.booleans(),
    noise=st.none() | st.binary(max_size=300),
)
def test_fuzz_cifar_batches(cifar_seed, edits, cut, head, noise):
    root, good = cifar_seed
    try:
        (root / "test_batch").write_bytes(noise if noise is not None else _mutate(good, edits, cut, head))
        _only_success_or_data_error(lambda: read_cifar_python(root, n_train_batches=1))
    finally:
        (root / "test_batch").write_bytes(good)
