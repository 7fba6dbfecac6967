"""Resuming is exact (issue #34): a training run killed with SIGKILL right after an epoch's backup, then run
again, ends with the weights, per-epoch logs and test scores of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_train import make_project, run_train

EPOCHS = 4
CASES = {
    # reshuffled batches and dropout; validation accuracy soon stays put (at 1.0 on these easy images), so
    # the learning rate is lowered on the plateau after the resume point, early stopping keeps the first
    # epoch's weights and stops the run
    "dropout_plateau": {
        "model": "cifar_gray_grid",
        "model_args": {"units": 16, "dense_units": 32, "dropout": 0.3},
        "callbacks": {
            "reduce_lr": {"monitor": "val_accuracy", "patience": 1, "factor": 0.5},
            "early_stopping": {"monitor": "val_accuracy", "patience": 2, "restore_best_weights": True},
        },
    },
    # random shifts (a Keras layer), alternating flips (the pipeline), lookahead, a per-step schedule
    "augment_lookahead": {
        "model": "airbench",
        "model_args": {"widths": [8, 16, 16], "flip": False},
        "alternating_flip": True,
        "optimizer": {
            "name": "sgd",
            "learning_rate": 0.2,
            "momentum": 0.85,
            "schedule": "triangle",
            "lookahead": {"start_epoch": 1, "every_steps": 2, "decay": 0.9, "power": 3.0},
        },
        "track_test": True,
        "callbacks": {},
    },
    # killed in phase 1 of two: phase 2 (fine-tuning) starts where phase 1 ended, its batches reshuffled
    "fine_tune": {
        "n": 60,
        "epochs": 2,
        "model": "gray28_vgg19",  # a frozen pretrained base (no weights here) under a small head
        "model_args": {"input_size": 32, "weights": None},
        "fine_tune": {"epochs": 1, "trainable_layers": 3, "learning_rate": 1e-4},
        "callbacks": {},
    },
}
TIMES = {"epoch_seconds.tsv", "elapsed_seconds.tsv"}  # wall time: the only logs that may differ


def test_a_pipeline_made_ready_at_an_epoch_gives_it_in_fits_order():
    """What a resumed run's data order rests on (``Splits.train_from``): Keras' fit reads epoch ``e`` in the
    order of the reshuffling pipeline's iterator ``2 * e`` (it makes two a epoch), and a new pipeline that
    :func:`at_epoch` made ready for epoch ``e`` gives that order first."""
    import keras

    from stages.training.data import at_epoch, make_dataset

    keras.utils.set_random_seed(0)
    x, y = np.zeros((12, 1, 1, 1), np.uint8), np.arange(12)
    seen: list[list[int]] = []

    class Recorder(keras.Model):
        def train_step(self, data: tuple) -> dict:
            seen.append(data[1].numpy().tolist())  # the epoch's one batch: its labels are the image order
            return {"loss": 0.0}

    inputs = keras.Input((1, 1, 1))
    model = Recorder(inputs, keras.layers.Flatten()(inputs))
    model.compile(run_eagerly=True)
    model.fit(make_dataset(x, y, 12, shuffle_seed=0), epochs=3, verbose=0, shuffle=False)
    assert len({tuple(order) for order in seen}) == 3, "each epoch reshuffled"
    for epoch, order in enumerate(seen):
        _, labels = next(iter(at_epoch(make_dataset(x, y, 12, shuffle_seed=0), epoch)))
        assert labels.numpy().tolist() == order, f"epoch {epoch}"


def backup_epoch(root: Path) -> int:
    state = root / "checkpoints/tiny/backup/state.json"
    try:
        return json.loads(state.read_text())["epoch"]
    except (OSError, ValueError):  # not written yet (it is replaced atomically: never half-written)
        return 0


def train_to_end(root: Path) -> str:
    proc = run_train(root)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def outputs(root: Path) -> dict[str, object]:
    """What a run leaves: its summary (epochs run, test loss...) and test predictions, the per-epoch logs, the
    final weights. (The test scores are computed from the predictions by evaluate@, which trains nothing.)"""
    import keras

    live = root / "reports/experiments/tiny/train/plots/metrics"
    logs = {str(p.relative_to(live)): p.read_text() for p in sorted(live.rglob("*.tsv")) if p.name not in TIMES}
    summary = json.loads((root / "models/tiny/summary.json").read_text())
    metrics = {k: v for k, v in summary.items() if not k.endswith("_seconds")}
    weights = keras.models.load_model(root / "models/tiny/model.keras").get_weights()
    return {
        "metrics": metrics,
        "probs": np.load(root / "models/tiny/test_probs.npy").tobytes(),
        "logs": logs,
        "weights": [w.tobytes() for w in weights],
    }


def rows(log: str) -> list[list[str]]:
    return [row.split("\t") for row in log.splitlines()[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_and_resumed_run_ends_as_an_uninterrupted_one(tmp_path, case):
    make_project(tmp_path, **{"n": 400, "epochs": EPOCHS, "batch_size": 32, **CASES[case]})
    train_to_end(tmp_path)
    uninterrupted = outputs(tmp_path)
    epochs = uninterrupted["metrics"]["epochs_run"]
    for folder in ("models", "checkpoints", "reports"):
        shutil.rmtree(tmp_path / folder)

    proc = run_train(tmp_path, start_new_session=True)
    deadline = time.time() + 300
    while backup_epoch(tmp_path) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # right after epoch 1's backup
    proc.wait()
    killed_at = backup_epoch(tmp_path)
    assert 1 <= killed_at < epochs, f"killed with {killed_at} epochs backed up: make the test data larger"
    assert not (tmp_path / "models/tiny").exists()
    # meanwhile the log is put back as committed (git or DVC checks out the embedded default's): one other run's
    # epoch, which the resumed run must not keep nor append to
    for tsv in (tmp_path / "reports/experiments/tiny/train/plots/metrics").rglob("*.tsv"):
        header = tsv.read_text().splitlines()[0]
        tsv.write_text(header + "\n" + "\t".join(["0"] + ["0.125"] * (header.count("\t"))) + "\n")

    out = train_to_end(tmp_path)
    assert "(resuming)" in out and out.count("Epoch ") == epochs - killed_at, out
    resumed = outputs(tmp_path)
    differ = [key for key in uninterrupted if resumed[key] != uninterrupted[key]]
    assert not differ, (
        f"{differ} differ after a resume at epoch {killed_at}: {resumed['metrics']}, not {uninterrupted['metrics']}"
    )
    assert [int(row[0]) for row in rows(resumed["logs"]["train/loss.tsv"])] == list(range(epochs)), "a row an epoch"
    elapsed = tmp_path / "reports/experiments/tiny/train/plots/metrics/train/elapsed_seconds.tsv"
    seconds = [float(row[1]) for row in rows(elapsed.read_text())]
    assert seconds[killed_at] > seconds[killed_at - 1], f"elapsed time goes on from the killed run's: {seconds}"
    if "reduce_lr" in CASES[case]["callbacks"]:  # else the case would not test the callback's resumed state
        rates = [float(row[1]) for row in rows(resumed["logs"]["train/learning_rate.tsv"])]
        assert any(rates[e] < rates[e - 1] for e in range(killed_at, epochs)), f"not lowered after a resume: {rates}"
