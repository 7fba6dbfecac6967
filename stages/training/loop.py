"""The one training loop for every study, classification and segmentation (run by ``stages/train.py``).

Builds a resolved run's model from the registry, feeds the prepared arrays through tf.data, and logs
every epoch with dvclive. An interrupted run resumes from its last completed epoch unless the run sets
``resume: false``, and computes what an uninterrupted run does (callbacks.py ResumableBackup,
data.py Splits.train_from); the checkpoint is kept until the final model is written, so a failed write
costs no epochs either. A checkpoint left by a run with other settings (anything but the epoch count) is
discarded rather than resumed. Last, the model's test predictions are saved beside it: the
`evaluate@<experiment>` stage scores them, so an edit to the scoring re-scores without retraining.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stages.core import config
from stages.core.files import sha256
from stages.core.machine import cpu_has_native_bf16
from stages.core.paths import CHECKPOINTS, MODELS, PREPARED
from stages.training.callbacks import claim_checkpoint, diverged, make_callbacks, resume_point
from stages.training.data import Splits, load_splits, read_meta
from stages.training.hardware import distribution_strategy, gpu_capability, precision_policy
from stages.training.losses import pixel_log_loss
from stages.training.outputs import check_writable, model_card, model_size, predict_test, write_model
from stages.training.recipe import (
    adapt_to_training_images,
    build_model,
    make_loss,
    make_optimizer,
    set_batchnorm_momentum,
    unfreeze_last_layers,
)
from stages.training.settings import Run


def compile_model(model: keras.Model, run: Run, optimizer: config.Optimizer, epochs: int, splits: Splits) -> None:
    """Compile for one training phase of ``epochs`` (the learning-rate schedule spans the phase)."""
    # segmentation: pixel accuracy (the pets study's metric), named as the classifiers' accuracy
    metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy") if splits.segmentation else "accuracy"
    model.compile(
        optimizer=make_optimizer(optimizer, epochs, splits.steps_per_epoch),
        loss=make_loss(run, splits.one_hot),
        metrics=[metric],
        jit_compile=run.jit_compile,
        run_eagerly=run.run_eagerly,
    )


def fit(
    model: keras.Model, run: Run, splits: Splits, *, first: int, last: int, backup: str, out_run: str | None
) -> int:
    """Epochs ``first`` to ``last`` (one training phase), or from where its backup left off; returns the
    epoch count reached."""
    tracked = splits.test if run.track_test else None
    done, stopped = resume_point(CHECKPOINTS / (out_run or run.experiment) / backup)
    start = max(first, done)
    if stopped:  # early stopping ended the phase at its backup: nothing more to train
        last = start
    train, steps = splits.train_from(start, last)
    history = model.fit(
        train,
        steps_per_epoch=steps,
        validation_data=splits.val,
        initial_epoch=first,
        epochs=last,
        callbacks=make_callbacks(
            run,
            out_run=out_run,
            test_ds=tracked,
            backup=backup,
            first_step=start,
            steps_per_epoch=splits.steps_per_epoch,
            total_steps=last * splits.steps_per_epoch,
        ),
        verbose="auto" if sys.stdout.isatty() else 2,  # a progress bar at a terminal, one line per epoch in logs
        shuffle=False,  # the tf.data pipeline already reshuffles every epoch, seeded
    )
    return history.epoch[-1] + 1 if history.epoch else last


def fine_tune(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    run: Run,
    splits: Splits,
    *,
    first: int,
    resume: bool,
    out_run: str | None,
) -> tuple[int, int]:
    """The second phase of a transfer-learning recipe: unfreeze the base's last layers, train on at a lower
    rate. Returns the epoch count reached and the phase's epochs."""
    phase, name = run.fine_tune, run.experiment
    more = phase.epochs
    with strategy.scope():
        base = unfreeze_last_layers(model, phase.trainable_layers)
        compile_model(model, run, run.optimizer.model_copy(update={"learning_rate": phase.learning_rate}), more, splits)
    print(
        f"train@{name}: fine-tuning the last {phase.trainable_layers} layers of {base.name} for {more} "
        f"epochs at learning rate {phase.learning_rate}" + (" (resuming)" if resume else "")
    )
    return fit(model, run, splits, first=first, last=first + more, backup="backup_fine_tune", out_run=out_run), more


def test_outputs(model: keras.Model, run: Run, splits: Splits, target: Path) -> tuple[dict, dict]:
    """The test split's predictions, kept in the model folder: scoring (and re-scoring) needs only them."""
    probs, seconds = predict_test(model, splits.test, run.tta_flip, run.tta_shift)
    if not np.isfinite(probs).all():  # weights ruined in the last steps, unseen by the loss checks (no val split)
        raise diverged(run.experiment, target, "the trained model's test predictions are not finite")
    if not splits.segmentation:
        return {"test_probs.npy": probs}, {"test_seconds": round(seconds, 3)}
    # per-pixel probabilities are too big to keep: the predicted masks instead
    masks = probs.argmax(axis=-1).astype(np.uint8)
    return {"test_masks.npy": masks}, {
        "test_seconds": round(seconds, 3),
        "test_loss": round(pixel_log_loss(splits.y_test, probs), 5),
    }


def run_settings(run: Run, policy: str) -> dict:
    """What an interrupted run's checkpoint must have been made with to be resumed: the resolved run but its
    epoch count (so that a finished or stopped run can be extended), the dtype policy that its precision
    setting gave on this machine, and the prepared data."""
    return {
        "run": run.model_dump(mode="json", exclude={"epochs"}),
        "precision": policy,
        "data": sha256(PREPARED / run.dataset / "meta.json"),  # the prepared dataset
        "backup": "ResumableBackup",  # Keras' BackupAndRestore's, of earlier versions, lacks what resumes exactly
    }


def checkpoint_dir(name: str, out: Path | None = None) -> Path:
    """Where a run of ``name`` (into ``out``: an ensemble member) keeps its epochs until its model is written."""
    return CHECKPOINTS / (Path(out).relative_to(MODELS) if out is not None else name)


def interrupted(name: str, ckpt_dir: Path, resume: bool) -> str:
    """The line of a run stopped by Ctrl-C: what its checkpoint holds now, and what the next run does with it."""
    if not any(resume_point(ckpt_dir / backup)[0] for backup in ("backup", "backup_fine_tune")):
        return f"train@{name} stopped before its first epoch ended; run again to start over"
    if not resume:
        return f"train@{name} stopped; with resume: false the next run starts over"
    return f"train@{name} stopped; the checkpoint in {ckpt_dir}/ is kept, run again to resume"


def train(run: Run, *, out: Path | None = None) -> dict:
    """Train resolved experiment ``run``; ``out`` (under models/) holds another run of it (an ensemble member,
    resolved with its own seed), logging to the same path under reports/."""
    name = run.experiment
    out_run = str(Path(out).relative_to(MODELS)) if out is not None else None
    keras.utils.set_random_seed(run.seed)
    # the same inputs give the same weights, so re-running unchanged code reproduces the metrics exactly
    tf.config.experimental.enable_op_determinism()
    meta = read_meta(run.dataset)
    policy = precision_policy(run.mixed_precision, gpu_capability(), cpu_has_native_bf16())
    keras.mixed_precision.set_global_policy(policy)
    strategy = distribution_strategy()
    with strategy.scope():  # before any data is read: a bad model_args value stops here
        model = build_model(run, meta["image_shape"], len(meta["classes"]))
    target, ckpt_dir = Path(out or MODELS / name), checkpoint_dir(name, out)
    check_writable(target.parent, ckpt_dir.parent)
    splits = load_splits(run, meta)
    if not run.resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    claim_checkpoint(ckpt_dir, run_settings(run, policy), f"train@{name}")
    backed_up = resume_point(ckpt_dir / "backup")[0]  # phase 1's epochs that a killed run left
    in_fine_tune = resume_point(ckpt_dir / "backup_fine_tune")[0] > 0
    with strategy.scope():
        if run.batchnorm_momentum:
            set_batchnorm_momentum(model, run.batchnorm_momentum)
        adapt_to_training_images(model, splits.x_train)
        compile_model(model, run, run.optimizer, run.epochs, splits)
    print(
        f"train@{name}: {run.model} ({model.count_params():,} parameters) on {run.dataset} "
        f"{meta['counts']}, {run.epochs} epochs, batch {run.batch_size}"
        + ("" if policy == "float32" else f", {policy}")
        + (f", first {len(splits.x_train)} train images" if run.max_train_examples else "")
        + (" (resuming)" if backed_up else "")
    )
    start, epochs = time.perf_counter(), run.epochs
    if run.fine_tune and in_fine_tune:  # a run killed in phase 2 goes straight back to it
        epochs_run = backed_up  # where phase 1 ended (early stopping: before its last epoch)
    else:
        epochs_run = fit(model, run, splits, first=0, last=epochs, backup="backup", out_run=out_run)
    if run.fine_tune:
        epochs_run, more = fine_tune(
            model, strategy, run, splits, first=epochs_run, resume=in_fine_tune, out_run=out_run
        )
        epochs += more
    seconds = time.perf_counter() - start
    if run.callbacks.checkpoint and (ckpt_dir / "best.keras").is_file():
        model = keras.models.load_model(ckpt_dir / "best.keras")  # the study kept the best epoch, not the last
    outputs, test_summary = test_outputs(model, run, splits, target)
    summary = {
        "model": run.model,
        **model_size(model),
        "epochs_run": epochs_run,
        "epochs_requested": epochs,
        "batch_size": run.batch_size,
        "seed": run.seed,
        "train_seconds": round(seconds, 2),
        **test_summary,
        "data": meta["data"],
        "classes": meta["classes"],
    }
    write_model(target, model, outputs, summary, model_card(run, meta, summary, splits.y_test, outputs))
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # only now: a failed write above leaves the run resumable
    return summary
