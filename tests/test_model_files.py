"""A saved model loads with plain ``keras.models.load_model`` where the project cannot be imported,
and predicts what the original did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from stages.inference.model_file import load_model_file
from stages.models import MODELS, build, load_all
from tests.test_models import SMALL

# Run by a fresh interpreter in the folder of the saved models: isolated mode (-I) and that cwd keep
# `stages` off sys.path. Loads each <name>.keras, predicts on <name>.npy, writes <name>.out.npy or
# the error; one process for all models, so TensorFlow starts once.
LOADER = """
import importlib.util, json, pathlib, traceback
import numpy as np, keras
errors = {"stages importable": importlib.util.find_spec("stages") is not None}
for path in sorted(pathlib.Path().glob("*.keras")):
    try:
        model = keras.models.load_model(path)
        x = np.load(path.with_suffix(".npy"))
        np.save(path.with_suffix(".out.npy"), np.asarray(model(x, training=False)))
    except Exception:
        errors[path.stem] = traceback.format_exc(limit=-3)
    keras.backend.clear_session()
pathlib.Path("errors.json").write_text(json.dumps(errors))
"""


load_all()
# InceptionResNetV2 alone is half of this test's time; tests/test_pipeline.py loads the trained one
SAVED = sorted(set(MODELS) - {"cifar_rgb_transfer"})


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Every registered model saved with its prediction on a fixed input, then loaded by LOADER."""
    folder = tmp_path_factory.mktemp("saved_models")
    for name in SAVED:
        shape, classes, args = SMALL[name]
        model = build(name, shape, classes, **args)
        x = np.random.default_rng(0).integers(0, 256, size=(2, *shape)).astype("float32")
        np.save(folder / f"{name}.npy", x)
        np.save(folder / f"{name}.expected.npy", np.asarray(model(x, training=False)))
        model.save(folder / f"{name}.keras")
        del model
        keras.backend.clear_session()
    done = subprocess.run([sys.executable, "-I", "-c", LOADER], cwd=folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads((folder / "errors.json").read_text())
    assert errors.pop("stages importable") is False  # the loader ran without the project's code
    return folder, errors


@pytest.mark.parametrize("name", SAVED)
def test_saved_model_loads_without_the_project_and_predicts_the_same(loaded, name):
    folder, errors = loaded
    assert name not in errors, errors.get(name)
    expected = np.load(folder / f"{name}.expected.npy")
    assert np.allclose(np.load(folder / f"{name}.out.npy"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SAVED)
def test_saved_model_passes_the_untrusted_file_check_and_predicts_the_same(loaded, name):
    """What predict does with a pulled model (stages/inference/model_file.py) accepts every model here."""
    folder, _ = loaded
    model = load_model_file(folder / f"{name}.keras")
    x = np.load(folder / f"{name}.npy")
    assert np.allclose(
        np.asarray(model(x, training=False)), np.load(folder / f"{name}.expected.npy"), rtol=1e-5, atol=1e-6
    )
    keras.backend.clear_session()
