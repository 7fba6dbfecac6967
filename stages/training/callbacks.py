"""The callbacks of a training run: resumable backups, epoch timing, dvclive logging, the study's own
checkpoint / learning-rate / early-stopping rules."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from stages.core import config, paths
from stages.core.errors import PipelineError
from stages.core.files import write_json
from stages.core.live import read_live_metric
from stages.core.paths import CHECKPOINTS
from stages.core.paths import EXPERIMENT_REPORTS as REPORTS

if TYPE_CHECKING:
    from dvclive import Live


def claim_checkpoint(ckpt_dir: Path, settings: dict, label: str) -> None:
    """Keep an interrupted run's checkpoint only if it was made with these ``settings``, else discard it:
    resuming would carry weights trained under other settings into this run. (``settings`` leaves out
    the epoch count, so that a finished or stopped run can be extended.)"""
    record = ckpt_dir / "settings.json"
    settings = json.loads(json.dumps(settings, default=str))
    if ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        if record.is_file() and json.loads(record.read_text()) == settings:
            return
        print(f"{label}: discarding the checkpoint of an interrupted run with other settings ({ckpt_dir}/)")
        shutil.rmtree(ckpt_dir)
    write_json(record, settings)


def diverged(name: str, target: Path, what: str) -> PipelineError:
    """The one line of a run whose numbers stopped being finite: nothing is written, so ``target`` (the
    last good model) and its scores stay as they were."""
    return PipelineError(
        f"train@{name}: {what}; stopped, nothing written ({target}/ is left as it was): "
        f"lower the learning rate in params.yaml's experiments.{name}"
    )


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras' TerminateOnNaN in its raising form, as the project's one-line error, and also at an epoch's
    end when the validation loss is not finite (a single step, or an epoch's last, can ruin the weights
    without the training loss showing it). Raising rather than stopping keeps every later callback of the
    epoch from running: the backup keeps the last finite epoch and the best checkpoint its own weights.
    Put it before them."""

    def __init__(self, name: str, target: Path) -> None:
        super().__init__(raise_error=True)
        self.name, self.target, self.epoch = name, target, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        try:
            super().on_batch_end(batch, logs)
        except RuntimeError:  # raised by TerminateOnNaN for exactly this: a NaN or infinite loss
            where = f"in epoch {self.epoch + 1}, step {batch + 1}"
            raise self._error(f"the training loss became {logs['loss']} {where}") from None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("val_loss")
        if loss is not None and not math.isfinite(loss):
            raise self._error(f"the validation loss became {loss} after epoch {epoch + 1}")

    def _error(self, what: str) -> PipelineError:
        rate = float(self.model.optimizer.learning_rate)  # the schedule's rate at this step
        return diverged(self.name, self.target, f"{what}, at learning rate {rate:g}")


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall time of the epoch, validation included) and ``elapsed_seconds``
    (the run's total so far) to the logged metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.elapsed = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self.start
        self.elapsed += seconds
        if logs is not None:
            logs["epoch_seconds"] = seconds
            logs["elapsed_seconds"] = self.elapsed


class TestTracker(keras.callbacks.Callback):
    """Logs ``test/accuracy`` and ``test/loss`` to dvclive after every epoch, for time-to-accuracy
    curves. Only logged: nothing (checkpoint, early stopping, learning rate) is steered by them."""

    def __init__(self, test_ds: tf.data.Dataset, live: Live) -> None:
        super().__init__()
        self.test_ds, self.live = test_ds, live

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        results = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
        self.live.log_metric("test/accuracy", results["accuracy"])
        self.live.log_metric("test/loss", results["loss"])
        print(f"  test accuracy {results['accuracy']:.4f}, loss {results['loss']:.4f}")


class Lookahead(keras.callbacks.Callback):
    """airbench94's lookahead (:class:`config.Lookahead`): every few steps the weights, batch-norm
    statistics included, move into their moving average and are replaced by it; at each epoch's end they
    are set to the average once more, so the saved model, the backup and the tracked test score use it
    (Keras' own validation runs before the epoch's callbacks: it sees the last step's weights). A resumed
    run starts a new average."""

    def __init__(self, settings: config.Lookahead, steps_per_epoch: int, total_steps: int) -> None:
        super().__init__()
        self.settings, self.steps_per_epoch, self.total_steps = settings, steps_per_epoch, total_steps
        self.weights: list = []  # the model's float variables, once the average has started
        self.average: list[tf.Variable] | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step, s = self.epoch * self.steps_per_epoch + batch + 1, self.settings
        if self.epoch < s.start_epoch or step % s.every_steps:
            return
        if self.average is None:
            self.weights = [w for w in self.model.weights if "float" in str(w.dtype)]
            self.average = [tf.Variable(w.value, trainable=False) for w in self.weights]
            return
        rho = s.decay**s.every_steps * min(1.0, step / self.total_steps) ** s.power
        for average, weight in zip(self.average, self.weights, strict=True):
            average.assign(rho * average + (1 - rho) * weight.value)
            weight.assign(average)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for average, weight in zip(self.average or [], self.weights, strict=True):
            weight.assign(average)


def live_metric_name(monitor: str) -> str:
    """dvclive's name for a Keras log key: ``val_accuracy`` is ``eval/accuracy``, ``accuracy`` is ``train/accuracy``."""
    return monitor.replace("val_", "eval/") if "val_" in monitor else f"train/{monitor}"


def best_so_far(live_dir: Path, monitor: str) -> float | None:
    """The monitored metric's best logged value, so a resumed checkpoint keeps the true best."""

    series = read_live_metric(live_dir, live_metric_name(monitor))
    if series is None or series.empty:
        return None
    return float(series.max() if "acc" in monitor else series.min())


def make_callbacks(
    exp: config.Experiment,
    name: str,
    resuming: bool,
    *,
    run: str | None = None,
    test_ds: tf.data.Dataset | None = None,
    backup: str = "backup",
    first_step: int = 0,
    steps_per_epoch: int = 1,
    total_steps: int = 1,
) -> list[keras.callbacks.Callback]:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    # ``run``: another run of the experiment (an ensemble member), with its own state and logs
    ckpt_dir, live_dir = CHECKPOINTS / (run or name), (paths.REPORTS / run if run else REPORTS / name) / "train"
    live = Live(dir=str(live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None, report=None)
    live.step = max(live.step, first_step)  # dvclive resumes a log whose last step is 0 at step 0 again
    # the backup outlives fit: train() removes it once the final model is written
    backup_cb = keras.callbacks.BackupAndRestore(str(ckpt_dir / backup), delete_checkpoint=False)
    # first: a loss gone non-finite stops the epoch before the backup or the best checkpoint saves its weights
    stop_cb = StopOnNonFiniteLoss(name, paths.MODELS / (run or name))
    cbs: list[keras.callbacks.Callback] = [stop_cb, backup_cb, EpochTimer()]
    if exp.optimizer.lookahead:  # first: the epoch's last copy-back comes before the backup and the scores
        cbs.insert(0, Lookahead(exp.optimizer.lookahead, steps_per_epoch, total_steps))
    if test_ds is not None:  # before DVCLiveCallback, which closes the step
        cbs.append(TestTracker(test_ds, live))
    if exp.callbacks.checkpoint:
        monitor = exp.callbacks.checkpoint.monitor
        cbs.append(
            keras.callbacks.ModelCheckpoint(
                str(ckpt_dir / "best.keras"),
                monitor=monitor,
                save_best_only=True,
                initial_value_threshold=best_so_far(live_dir, monitor) if resuming else None,
            )
        )
    if exp.callbacks.reduce_lr:
        r = exp.callbacks.reduce_lr
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(monitor=r.monitor, factor=r.factor, patience=r.patience, min_lr=r.min_lr)
        )
    if exp.callbacks.early_stopping:
        e = exp.callbacks.early_stopping
        cbs.append(
            keras.callbacks.EarlyStopping(
                monitor=e.monitor,
                patience=e.patience,
                restore_best_weights=e.restore_best_weights,
            )
        )
    cbs.append(DVCLiveCallback(live=live))
    return cbs
