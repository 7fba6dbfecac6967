"""The training loop on a tiny prepared dataset: outputs, and resuming after `kill -9`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.io import save_npy, write_json
from tests.conftest import REPO

EPOCHS = 8


def make_project(root: Path, n: int = 600, epochs: int = EPOCHS) -> None:
    """A params.yaml with one experiment, and its prepared dataset (bright squares vs discs)."""
    rng = np.random.default_rng(0)
    prepared = root / "data/prepared/tiny"
    for part, size in (("train", n), ("val", n // 5), ("test", n // 5)):
        y = rng.integers(0, 2, size)
        x = rng.integers(0, 60, (size, 32, 32, 1)).astype(np.uint8)
        for img, label in zip(x, y):
            if label:
                img[8:24, 8:24] = 220
            else:
                img[12:20, 4:28] = 220
        save_npy(prepared / f"x_{part}.npy", x)
        save_npy(prepared / f"y_{part}.npy", y.astype(np.int64))
    write_json(
        prepared / "meta.json",
        {
            "classes": ["square", "bar"],
            "image_shape": [32, 32, 1],
            "counts": {"train": n},
            "data": "generated sample data",
            "task": "classification",
        },
    )
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "full"
    params["datasets"] = {"tiny": {"source": "cifar10", "color": "gray"}}
    params["ensembles"] = {}
    params["experiments"] = {
        "tiny": {
            "study": "test",
            "dataset": "tiny",
            "model": "cifar_gray_baseline",
            "epochs": epochs,
            "batch_size": 32,
            "callbacks": {"checkpoint": {"monitor": "val_accuracy"}},
        }
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def run_train(root: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train", "tiny"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def logged_epochs(root: Path) -> list[int]:
    tsv = root / "reports/experiments/tiny/train/plots/metrics/train/loss.tsv"
    if not tsv.is_file():
        return []
    return [int(line.split("\t")[0]) for line in tsv.read_text().splitlines()[1:] if line.strip()]


def test_training_writes_model_summary_and_test_outputs(tmp_path):
    make_project(tmp_path, n=200, epochs=2)
    proc = run_train(tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    summary = json.loads((tmp_path / "models/tiny/summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["parameters"] > 0
    probs = np.load(tmp_path / "models/tiny/test_probs.npy")
    assert probs.shape == (40, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-4)
    assert logged_epochs(tmp_path) == [0, 1]
    assert not (tmp_path / "checkpoints/tiny").exists(), "checkpoints of a finished run are removed"


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_epoch(tmp_path):
    make_project(tmp_path)
    proc = run_train(tmp_path, start_new_session=True)
    deadline = time.time() + 300
    while len(logged_epochs(tmp_path)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed: make the test data larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(logged_epochs(tmp_path))
    assert not (tmp_path / "models/tiny").exists(), "a killed run must not leave a model behind"
    assert (tmp_path / "checkpoints/tiny/backup").is_dir()

    proc = run_train(tmp_path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "(resuming)" in out
    summary = json.loads((tmp_path / "models/tiny/summary.json").read_text())
    assert summary["epochs_run"] == EPOCHS
    epochs = logged_epochs(tmp_path)
    assert epochs == list(range(EPOCHS)), f"killed after {done_before} epochs, then logged {epochs}"
    assert out.count("Epoch ") <= EPOCHS - done_before + 1, "resumed run repeated finished epochs"


def test_single_device_strategy_without_gpus_or_tf_config(monkeypatch):
    import tensorflow as tf

    from stages.train import distribution_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if len(tf.config.list_physical_devices("GPU")) > 1:
        pytest.skip("several GPUs visible: MirroredStrategy is expected")
    strategy = distribution_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)
