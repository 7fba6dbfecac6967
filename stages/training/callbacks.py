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
import numpy as np
import tensorflow as tf

from stages.core import config, paths
from stages.core.errors import PipelineError
from stages.core.files import atomic_path, write_json, write_text
from stages.core.live import LIVE_METRICS, read_live_metric
from stages.core.paths import CHECKPOINTS
from stages.core.paths import EXPERIMENT_REPORTS as REPORTS

if TYPE_CHECKING:
    from dvclive import Live

    from stages.training.settings import Run


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


class Resumable:
    """A callback whose attributes ``carried``, which its ``on_train_begin`` resets, go into every backup
    (:class:`ResumableBackup`), so that a resumed run gets them back: ``state()`` gives them, with
    arrays to keep apart; ``restore`` puts them back."""

    carried: tuple[str, ...] = ()

    def state(self) -> tuple[dict, list[np.ndarray]]:
        # numpy scalars as Python numbers, for JSON (a float64 keeps a float32's value exactly)
        values = {name: getattr(self, name) for name in self.carried}
        return {name: v.item() if isinstance(v, np.generic) else v for name, v in values.items()}, []

    def restore(self, state: dict, arrays: list[np.ndarray]) -> None:
        for name in self.carried:
            setattr(self, name, state[name])


class ReduceLROnPlateau(Resumable, keras.callbacks.ReduceLROnPlateau):
    """Keras' own, resumable: its patience count and best score so far survive a kill. (The learning
    rate it lowered is the optimizer's, in the backed-up weights.)"""

    carried = ("best", "wait", "cooldown_counter")


class EarlyStopping(Resumable, keras.callbacks.EarlyStopping):
    """Keras' own, resumable: its patience count, best score and epoch, and best weights survive a kill."""

    carried = ("best", "wait", "best_epoch", "stopped_epoch")

    def state(self) -> tuple[dict, list[np.ndarray]]:
        state, _ = super().state()
        return {**state, "has_best_weights": self.best_weights is not None}, list(self.best_weights or [])

    def restore(self, state: dict, arrays: list[np.ndarray]) -> None:
        super().restore(state, arrays)
        self.best_weights = arrays if state["has_best_weights"] else None


class EpochTimer(Resumable, keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall time of the epoch, validation included) and ``elapsed_seconds``
    (the run's total so far) to the logged metrics."""

    carried = ("elapsed",)  # a resumed run's elapsed time counts the killed run's epochs

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


class Lookahead(Resumable, keras.callbacks.Callback):
    """airbench94's lookahead (:class:`config.Lookahead`): every few steps the weights, batch-norm
    statistics included, move into their moving average and are replaced by it; at each epoch's end they
    are set to the average once more, so the saved model, the backup and the tracked test score use it
    (Keras' own validation runs before the epoch's callbacks: it sees the last step's weights). So a
    backup made at an epoch's end holds the average too, and a resumed run takes it from the weights."""

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

    def state(self) -> tuple[dict, list[np.ndarray]]:
        return {"averaging": self.average is not None}, []

    def restore(self, state: dict, arrays: list[np.ndarray]) -> None:
        """Once the backup's weights are loaded: they are the average (see the class's docstring)."""
        if state["averaging"]:
            self.weights = [w for w in self.model.weights if "float" in str(w.dtype)]
            self.average = [tf.Variable(w.value, trainable=False) for w in self.weights]


BACKUP_STATE = "state.json"


def read_backup(folder: Path) -> dict | None:
    """The backup's record (:class:`ResumableBackup`), or None where no epoch was backed up."""
    path = Path(folder) / BACKUP_STATE
    return json.loads(path.read_text()) if path.is_file() else None


def resume_point(folder: Path) -> tuple[int, bool]:
    """The epochs that the backup in ``folder`` holds (0 without one), and whether its run had stopped
    there (early stopping): then a resumed run trains no further."""
    state = read_backup(folder)
    return (state["epoch"], state["stopped"]) if state else (0, False)


def seed_states(model: keras.Model) -> list:
    """The model's variables that its weights (and weight files) leave out: the states of its random layers'
    seed generators (dropout, random flips and shifts), which each training step moves on."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class ResumableBackup(keras.callbacks.Callback):
    """A backup at every epoch's end of all that the next epoch starts from, so that a killed run, resumed,
    computes what an uninterrupted one does: the weights with the optimizer's state (all that Keras'
    BackupAndRestore keeps), the random layers' seed-generator states (which dropout masks and augmentation
    draws come next), the :class:`Resumable` callbacks' state, whether the run stopped early, and dvclive's
    per-epoch log so far (:func:`restore_live_log`). The data order is the pipeline's (``Splits.train_from``).
    ``state.json`` is written last, atomically, naming the epoch's files: a kill mid-backup leaves the
    previous epoch's backup whole. It must be the last callback: it saves what the others leave at an
    epoch's end, and restores their state after their ``on_train_begin`` has reset it."""

    def __init__(self, folder: Path, stateful: list[Resumable], live_dir: Path) -> None:
        super().__init__()
        self.folder, self.stateful, self.live_dir = Path(folder), stateful, Path(live_dir)

    def on_train_begin(self, logs: dict | None = None) -> None:
        state = read_backup(self.folder)
        # where fit starts, as Keras' BackupAndRestore sets it; cleared without a backup, as Keras keeps the
        # value of an earlier fit (phase 1's, in the fine-tuning phase 2) and would start there again
        self.model._initial_epoch = state["epoch"] if state else None
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # its variables must exist to be loaded
        self.model.load_weights(self.folder / state["weights"])
        with np.load(self.folder / state["arrays"]) as saved:
            for i, variable in enumerate(seed_states(self.model)):
                variable.assign(saved[f"seed_{i}"])
            for j, (cb, cb_state) in enumerate(zip(self.stateful, state["callbacks"], strict=True)):
                cb.restore(cb_state, [saved[f"cb{j}_{i}"] for i in range(cb_state["arrays"])])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        n = epoch + 1
        files = {"weights": f"epoch{n}.weights.h5", "arrays": f"epoch{n}.npz", "log": f"epoch{n}.log.json"}
        arrays = {f"seed_{i}": v.numpy() for i, v in enumerate(seed_states(self.model))}
        states = []
        for j, cb in enumerate(self.stateful):
            cb_state, cb_arrays = cb.state()
            states.append({**cb_state, "arrays": len(cb_arrays)})
            arrays.update({f"cb{j}_{i}": a for i, a in enumerate(cb_arrays)})
        with atomic_path(self.folder / files["weights"]) as tmp:
            self.model.save_weights(str(tmp))
        with atomic_path(self.folder / files["arrays"]) as tmp:
            np.savez(tmp, **arrays)
        metrics = self.live_dir / LIVE_METRICS  # DVCLiveCallback, before this one, has logged the epoch
        write_json(
            self.folder / files["log"],
            {p.relative_to(metrics).as_posix(): p.read_text() for p in sorted(metrics.rglob("*.tsv"))},
        )
        record = {"epoch": n, "stopped": bool(self.model.stop_training), **files, "callbacks": states}
        write_json(self.folder / BACKUP_STATE, record)  # the commit: the epoch's backup is whole from here
        for old in self.folder.glob("epoch*"):
            if old.name not in files.values():
                old.unlink(missing_ok=True)


def restore_live_log(live_dir: Path, backups: list[Path], epochs: int) -> None:
    """Make dvclive's per-epoch log hold epochs 1 to ``epochs`` as their backup saved it, whatever became of
    its files since: a killed run's rows after its last backup, or the committed log put back by git or DVC
    meanwhile (seen on a 40-epoch run resumed after other experiments had run in its workspace: its log began
    with the embedded default's one epoch). ``backups``: the phase's backup, then the one the phase started
    from (phase 1's, for fine-tuning's first epoch)."""
    metrics = live_dir / LIVE_METRICS
    for folder in backups:
        state = read_backup(folder)
        if state and state["epoch"] == epochs and "log" in state:
            saved = json.loads((folder / state["log"]).read_text())
            shutil.rmtree(metrics, ignore_errors=True)
            for name, text in saved.items():
                target = metrics / name
                if not target.resolve().is_relative_to(metrics.resolve()) or target.suffix != ".tsv":
                    raise PipelineError(f"{folder / state['log']}: {name!r} is not a log file inside {metrics}")
                target.parent.mkdir(parents=True, exist_ok=True)
                write_text(target, text)
            return
    trim_live_log(live_dir, epochs)  # a backup made before backups saved the log


def trim_live_log(live_dir: Path, epochs: int) -> None:
    """Drop the rows of dvclive's per-epoch logs for epochs from ``epochs`` on: the epochs that a killed run
    logged after its last backup, which the resumed run trains and logs again."""
    for tsv in sorted((live_dir / LIVE_METRICS).rglob("*.tsv")):
        header, *rows = tsv.read_text().splitlines() or [""]
        column = header.split("\t").index("step") if "step" in header.split("\t") else 0
        width = len(header.split("\t"))
        # a row cut short by the kill has fewer fields (or a bad step): it is one of the dropped epochs
        kept = [r for r in rows if len(r.split("\t")) == width and r.split("\t")[column].isdigit()]
        kept = [r for r in kept if int(r.split("\t")[column]) < epochs]
        if not kept:
            tsv.unlink()  # dvclive writes the header again with the first row
        elif len(kept) < len(rows):
            write_text(tsv, "\n".join([header, *kept]) + "\n")


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
    run: Run,
    *,
    out_run: str | None = None,
    test_ds: tf.data.Dataset | None = None,
    backup: str = "backup",
    first_step: int = 0,
    steps_per_epoch: int = 1,
    total_steps: int = 1,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a ``fit`` whose first epoch is ``first_step`` (where its backup, or the phase
    before, left off): the logs of that epoch on, if any, are a killed run's and are dropped."""
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    # ``out_run``: another run of the experiment (an ensemble member), with its own state and logs
    name = run.experiment
    ckpt_dir = CHECKPOINTS / (out_run or name)
    live_dir = (paths.REPORTS / out_run if out_run else REPORTS / name) / "train"
    resuming = first_step > 0
    if resuming:
        restore_live_log(live_dir, [ckpt_dir / backup, ckpt_dir / "backup"], first_step)
    live = Live(dir=str(live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None, report=None)
    live.step = first_step  # dvclive's own resume goes on from its last logged step (and repeats a step 0)
    # first: a loss gone non-finite stops the epoch before the backup or the best checkpoint saves its weights
    cbs: list[keras.callbacks.Callback] = [StopOnNonFiniteLoss(name, paths.MODELS / (out_run or name)), EpochTimer()]
    if run.optimizer.lookahead:  # first: the epoch's last copy-back comes before the backup and the scores
        cbs.insert(0, Lookahead(run.optimizer.lookahead, steps_per_epoch, total_steps))
    if test_ds is not None:  # before DVCLiveCallback, which closes the step
        cbs.append(TestTracker(test_ds, live))
    if run.callbacks.checkpoint:
        monitor = run.callbacks.checkpoint.monitor
        cbs.append(
            keras.callbacks.ModelCheckpoint(
                str(ckpt_dir / "best.keras"),
                monitor=monitor,
                save_best_only=True,
                initial_value_threshold=best_so_far(live_dir, monitor) if resuming else None,
            )
        )
    if run.callbacks.reduce_lr:
        r = run.callbacks.reduce_lr
        cbs.append(ReduceLROnPlateau(monitor=r.monitor, factor=r.factor, patience=r.patience, min_lr=r.min_lr))
    if run.callbacks.early_stopping:
        e = run.callbacks.early_stopping
        cbs.append(EarlyStopping(monitor=e.monitor, patience=e.patience, restore_best_weights=e.restore_best_weights))
    cbs.append(DVCLiveCallback(live=live))
    # last (see ResumableBackup); it outlives fit: train() removes it once the final model is written
    cbs.append(ResumableBackup(ckpt_dir / backup, [cb for cb in cbs if isinstance(cb, Resumable)], live_dir))
    return cbs
