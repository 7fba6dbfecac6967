"""An untrusted ``model.keras`` (pulled from a DVC remote) is checked before Keras reads it: bombs,
lying sizes, unexpected or too many members, Python code, deep nesting, bad zips all end in one
DataError line naming the file and the reason, called directly and through ``python -m
stages.tools.predict``; a real saved model still loads and predicts the same."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import h5py
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.core.errors import DataError
from stages.inference import model_file
from stages.inference.model_file import check_model_file, load_model_file, nesting_depth
from tests.conftest import REPO
from tests.test_predict_inputs import deadline


def tiny_model(name: str = "tiny") -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(x), name=name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("real") / "model.keras"
    tiny_model().save(path)
    return path


@pytest.fixture(scope="module")
def members(saved: Path) -> dict[str, bytes]:
    """A real model file's members, for hostile files that differ from it in one way."""
    with zipfile.ZipFile(saved) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zeros_member(path: Path, members: dict[str, bytes], name: str, size: int) -> Path:
    """``members`` with ``name`` replaced by ``size`` zero bytes, deflated, written in chunks."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for other, data in members.items():
            if other != name:
                zf.writestr(other, data)
        with zf.open(name, "w") as out:
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                out.write(chunk)
    return path


def patch_declared_size(path: Path, name: str, size: int) -> Path:
    """Make the central directory say member ``name`` unpacks to ``size`` bytes (its data unchanged)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        (length,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + length] == name.encode():
            struct.pack_into("<I", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 1)
    path.write_bytes(bytes(data))
    return path


def h5_bytes(build: Callable[[h5py.File], None]) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        build(h5)
    return buffer.getvalue()


def lambda_model(path: Path) -> Path:
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(outputs)).save(path)
    return path


UNITS = 500_000_000  # the tiny model's Dense(3) made 500 M wide: 2 x 500 M weights + 500 M biases, 6 GB


def variable_bomb(path: Path, members: dict[str, bytes]) -> Path:
    """The real (tiny) weights, and a config whose Dense layer would allocate 6 GB as it is built."""
    config = json.loads(members["config.json"])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["units"] = UNITS
    return write_zip(path, {**members, "config.json": json.dumps(config).encode()})


def weights_bomb_reason(path: Path, members: dict[str, bytes]) -> str:
    total = (128 << 20) + len(members["config.json"]) + len(members["metadata.json"])
    return f"zip members unpack to {total} bytes, over 20 times the file's {path.stat().st_size} bytes"


# name -> (make the hostile file in a folder, what the one error line says after "<file>: ", or how
# to work it out from the file and the real members)
Reason = str | Callable[[Path, dict[str, bytes]], str]
CASES: dict[str, tuple[Callable[[Path, dict[str, bytes]], Path], Reason]] = {
    "config bomb": (
        lambda d, m: zeros_member(d / "model.keras", m, "config.json", 64 << 20),
        f"zip member 'config.json' declares {64 << 20} bytes, over its {4 << 20}-byte limit",
    ),
    "weights bomb": (
        lambda d, m: zeros_member(d / "model.keras", m, "model.weights.h5", 128 << 20),
        weights_bomb_reason,
    ),
    "declared size smaller than the data": (
        lambda d, m: patch_declared_size(write_zip(d / "model.keras", m), "model.weights.h5", 100),
        "zip member 'model.weights.h5' is corrupt (BadZipFile: Bad CRC-32",
    ),
    "declared size larger than the data": (
        lambda d, m: patch_declared_size(
            write_zip(d / "model.keras", m), "model.weights.h5", len(m["model.weights.h5"]) + 1000
        ),
        lambda path, m: (
            f"zip member 'model.weights.h5' unpacks to {len(m['model.weights.h5'])} bytes, "
            f"not its declared {len(m['model.weights.h5']) + 1000}"
        ),
    ),
    "too many members": (
        lambda d, m: write_zip(d / "model.keras", {**m, **{f"assets/a{i}": b"" for i in range(64)}}),
        "67 zip members, over the limit of 64",
    ),
    "huge zip directory": (
        lambda d, m: write_zip(d / "model.keras", {**m, **{f"assets/a{i}": b"" for i in range(5000)}}),
        lambda path, m: (  # a directory entry: 46 bytes and the name (no extra fields, no comment)
            f"zip directory of {sum(46 + len(n) for n in [*m, *(f'assets/a{i}' for i in range(5000))])} bytes, "
            "over the 65536-byte limit (a Keras model has 3 members)"
        ),
    ),
    "unexpected member": (
        lambda d, m: write_zip(d / "model.keras", {**m, "run.py": b"import os"}),
        "unexpected zip member 'run.py' (Keras writes config.json, metadata.json, model.weights.h5 and assets/)",
    ),
    "asset escaping its folder": (
        lambda d, m: write_zip(d / "model.keras", {**m, "assets/../../x": b""}),
        "unexpected zip member 'assets/../../x'",
    ),
    "bzip2 member": (
        lambda d, m: write_zip(d / "model.keras", m, zipfile.ZIP_BZIP2),
        "zip member 'metadata.json' uses compression method 12",
    ),
    "no weights": (
        lambda d, m: write_zip(d / "model.keras", {"config.json": m["config.json"]}),
        "no model.weights.h5 in the archive (not a Keras model file)",
    ),
    "lambda layer": (
        lambda d, m: lambda_model(d / "model.keras"),
        "refused by Keras' safe mode: Requested the deserialization of a `Lambda` layer whose `function` is a "
        "Python lambda",
    ),
    "deep nesting": (
        lambda d, m: write_zip(d / "model.keras", {**m, "config.json": b"[" * 100_000 + b"]" * 100_000}),
        "config.json nests 100000 levels deep, over the limit of 64",
    ),
    "config not an object": (
        lambda d, m: write_zip(d / "model.keras", {**m, "config.json": b"[1, 2]"}),
        "config.json holds a list, not a Keras model's config",
    ),
    "weights unwritten in the h5": (
        lambda d, m: write_zip(
            d / "model.keras",
            {**m, "model.weights.h5": h5_bytes(lambda h5: h5.create_dataset("w", (1 << 24,), "f4", chunks=True))},
        ),
        "model.weights.h5's arrays declare 67108864 bytes but the member holds",
    ),
    "weights not hdf5": (
        lambda d, m: write_zip(d / "model.keras", {**m, "model.weights.h5": b"not hdf5"}),
        "model.weights.h5 is not a readable HDF5 file",
    ),
    "variables bigger than the weights": (
        lambda d, m: variable_bomb(d / "model.keras", m),
        f"the model's variables need {4 * (20 + 3 * UNITS)} bytes but model.weights.h5 holds",  # + 20: the conv
    ),
    "not a zip": (
        lambda d, m: _write(d / "model.keras", b"\x89HDF\r\n" + bytes(1000)),
        "not a zip archive, or a truncated one (a .keras model file is a zip)",
    ),
    "truncated zip": (
        lambda d, m: _write(d / "model.keras", write_zip(d / "full.keras", m).read_bytes()[:-30]),
        "not a zip archive, or a truncated one",
    ),
    "bytes cut out of a member": (
        lambda d, m: _write(
            d / "model.keras", (lambda z: z[:2000] + z[3000:])(write_zip(d / "full.keras", m).read_bytes())
        ),
        "zip member 'metadata.json' is corrupt (OSError: ",  # zipfile seeks before the file's start
    ),
    "empty file": (lambda d, m: _write(d / "model.keras", b""), "not a zip archive"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def expected(case: str, path: Path, members: dict[str, bytes], shown: Path | None = None) -> str:
    """The start of ``case``'s error line for the file at ``path``, named ``shown`` (default: ``path``)."""
    reason = CASES[case][1]
    return f"{shown or path}: {reason if isinstance(reason, str) else reason(path, members)}"


@pytest.mark.parametrize("case", CASES)
def test_hostile_file_is_one_data_error_naming_file_and_reason(tmp_path, members, case):
    path = CASES[case][0](tmp_path, members)
    with pytest.raises(DataError) as error:
        load_model_file(path)
    message = str(error.value)
    assert message.startswith(expected(case, path, members)), message
    assert "\n" not in message


def test_bombs_are_refused_before_they_are_inflated(tmp_path, members, monkeypatch):
    reads: list[int] = []
    original = zipfile.ZipExtFile.read

    def counted(self, n=-1):
        data = original(self, n)
        reads.append(len(data))
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counted)
    for case in ("config bomb", "weights bomb"):
        with pytest.raises(DataError):
            check_model_file(CASES[case][0](tmp_path, members))
    assert reads == []


def test_real_model_loads_and_predicts_the_same(saved):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    original = keras.models.load_model(saved, compile=False)
    loaded = load_model_file(saved)
    assert np.array_equal(loaded.predict(x, verbose=0), original.predict(x, verbose=0))
    assert [w.shape for w in loaded.weights] == [w.shape for w in original.weights]


def test_deflated_model_and_an_asset_are_accepted(tmp_path, members):
    path = write_zip(tmp_path / "model.keras", {**members, "assets/vocab/words.txt": b"a\nb\n"}, zipfile.ZIP_DEFLATED)
    config, weights_bytes = check_model_file(path)
    assert config["class_name"] == "Functional" and weights_bytes == len(members["model.weights.h5"])


def test_a_refused_variable_bomb_leaves_nothing_for_keras_to_allocate_later(tmp_path, members):
    with pytest.raises(DataError, match="variables need"):
        load_model_file(variable_bomb(tmp_path / "model.keras", members))
    from keras.src.backend.common import global_state

    assert not global_state.get_global_attribute("uninitialized_variables")


def test_folder_and_giant_sparse_file_are_refused_by_stat(tmp_path):
    (tmp_path / "dir.keras").mkdir()
    with pytest.raises(DataError, match="dir.keras: not a regular file"):
        check_model_file(tmp_path / "dir.keras")
    with open(tmp_path / "big.keras", "wb") as fh:
        fh.truncate(model_file.MAX_FILE_BYTES + 1)
    with pytest.raises(DataError, match=f"big.keras: file is {model_file.MAX_FILE_BYTES + 1} bytes, over the"):
        check_model_file(tmp_path / "big.keras")


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ax\n'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\b'), inner, max_size=3),
    max_leaves=30,
)


@given(json_values, st.booleans())
def test_nesting_depth_is_the_json_depth_whatever_the_strings_hold(value, ascii_only):
    assert nesting_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == depth(value)


def test_nesting_depth_of_unterminated_strings_and_trailing_backslash():
    assert nesting_depth(b'[["a\\"]]') == 2  # the string runs to the end: its brackets do not count
    assert nesting_depth(b'[["a\\') == 2
    with deadline(10):  # linear: a scan from each escaped quote would take hours
        assert nesting_depth(b'"' + b'\\"' * 200_000 + b"[") == 0


NAMES = st.sampled_from(["config.json", "metadata.json", "model.weights.h5", "assets/v.txt", "assets/", "x", "../x"])


def changed(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with up to three bytes set to drawn values."""
    out = bytearray(data)
    for at, value in draw(st.lists(st.tuples(st.integers(0, max(len(out) - 1, 0)), st.integers(0, 255)), max_size=3)):
        if out:
            out[at] = value
    return bytes(out)


MODES = ["real", "contents changed", "arbitrary", "zip bytes changed", "zip cut"]


@st.composite
def archives(draw: st.DrawFn, members: dict[str, bytes]) -> bytes:
    """A real model's members, maybe one more, or up to four arbitrary ones (names, contents), in one
    compression; then either member contents changed before zipping (to reach the JSON and HDF5
    readers), bytes of the zip changed, or its end cut off."""
    mode = draw(st.sampled_from(MODES))
    names = [] if mode == "arbitrary" else list(members)
    names += draw(st.lists(NAMES | st.text(max_size=12), max_size=4 if mode == "arbitrary" else 1))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2]))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", method) as zf:
        warnings.simplefilter("ignore")  # zipfile's "Duplicate name": a case worth drawing
        for name in names:
            data = members[name] if name in members and mode != "arbitrary" else draw(st.binary(max_size=64))
            zf.writestr(zipfile.ZipInfo(name or "-"), changed(draw, data) if mode == "contents changed" else data)
    data = changed(draw, buffer.getvalue()) if mode == "zip bytes changed" else buffer.getvalue()
    return data[: draw(st.integers(0, len(data) - 1))] if mode == "zip cut" else data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_archive_is_accepted_or_one_data_error(tmp_path, members, data):
    path = tmp_path / "model.keras"
    path.write_bytes(data.draw(archives(members)))
    try:
        check_model_file(path)
    except DataError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)


def run_predict(root: Path, *words: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "stages.tools.predict", *words]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_predict_prints_one_line_for_each_hostile_file(tmp_path, members):
    """``python -m stages.tools.predict m<i> photo.png`` per case, with the case's file as models/m<i>/model.keras;
    two at a time (each is mostly Python's start-up and imports)."""
    cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((8, 8), np.uint8))
    paths = []
    for i, case in enumerate(CASES):
        (tmp_path / "models" / f"m{i}").mkdir(parents=True)
        paths.append(CASES[case][0](tmp_path / "models" / f"m{i}", members))
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda i: run_predict(tmp_path, f"m{i}", "photo.png"), range(len(CASES))))
    for case, path, done in zip(CASES, paths, runs):
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 1 and "Traceback" not in done.stderr, (case, done.stderr[-2000:])
        assert len(lines) == 1, (case, done.stderr[-2000:])
        assert lines[0].startswith(f"error: {expected(case, path, members, path.relative_to(tmp_path))}"), lines


def test_predict_runs_a_checked_real_model(tmp_path, saved):
    (tmp_path / "models/real").mkdir(parents=True)
    (tmp_path / "models/real/model.keras").write_bytes(saved.read_bytes())
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((8, 8), 200, np.uint8))
    done = run_predict(tmp_path, "real", "photo.png", "--top-k", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "photo.png: " in done.stdout and (tmp_path / "predictions/predictions.csv").is_file()
