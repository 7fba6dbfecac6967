"""Stage `train@<experiment>`: the one training loop for every study, classification and segmentation.

Reads the experiment's hyperparameters from params.yaml, builds its model from the
registry, feeds the prepared arrays through tf.data, and logs every epoch with
dvclive. An interrupted run resumes from its last completed epoch unless the experiment sets
``resume: false``, and computes what an uninterrupted run does (training/callbacks.py ResumableBackup,
training/data.py Splits.train_from); the checkpoint is kept
until the final model is written, so a failed write costs no epochs either. A checkpoint left by
a run with other settings (anything but the epoch count) is discarded rather than resumed.
The steps live in stages/training/; this file is the order they run in. Last, the model is
scored on the test split (stages/reporting/evaluation.py): metrics, per-class report, figures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.core import cli, config
from stages.core.files import sha256
from stages.core.machine import cpu_has_native_bf16
from stages.core.paths import CHECKPOINTS, MODELS, PREPARED
from stages.reporting.evaluation import evaluate, summary_line

# TensorFlow (with Keras, the models and stages/training/) loads inside the functions that use it, after the
# command has set its environment (stages/core/cli.py), and never for --help
if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from stages.training.data import Splits


def compile_model(
    model: keras.Model,
    params: config.Params,
    exp: config.Experiment,
    optimizer: config.Optimizer,
    epochs: int,
    splits: Splits,
) -> None:
    """Compile for one training phase of ``epochs`` (the learning-rate schedule spans the phase)."""
    import keras

    from stages.training.recipe import make_loss, make_optimizer

    # segmentation: pixel accuracy (the pets study's metric), named as the classifiers' accuracy
    metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy") if splits.segmentation else "accuracy"
    model.compile(
        optimizer=make_optimizer(optimizer, epochs, splits.steps_per_epoch),
        loss=make_loss(exp, splits.one_hot),
        metrics=[metric],
        jit_compile=params.accelerator.jit_compile,
        run_eagerly=exp.run_eagerly,
    )


def fit(
    model: keras.Model,
    exp: config.Experiment,
    name: str,
    splits: Splits,
    *,
    first: int,
    last: int,
    backup: str,
    run: str | None,
) -> int:
    """Epochs ``first`` to ``last`` (one training phase), or from where its backup left off; returns the
    epoch count reached."""
    from stages.training.callbacks import make_callbacks, resume_point

    tracked = splits.test if exp.track_test else None
    done, stopped = resume_point(CHECKPOINTS / (run or name) / backup)
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
            exp,
            name,
            run=run,
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
    params: config.Params,
    exp: config.Experiment,
    name: str,
    splits: Splits,
    *,
    first: int,
    resume: bool,
    run: str | None,
) -> tuple[int, int]:
    """The second phase of a transfer-learning recipe: unfreeze the base's last layers, train on at a lower
    rate. Returns the epoch count reached and the phase's epochs."""
    from stages.training.recipe import unfreeze_last_layers

    phase = exp.fine_tune
    more = min(phase.epochs, params.active.max_epochs or phase.epochs)
    with strategy.scope():
        base = unfreeze_last_layers(model, phase.trainable_layers)
        compile_model(
            model, params, exp, exp.optimizer.model_copy(update={"learning_rate": phase.learning_rate}), more, splits
        )
    print(
        f"train@{name}: fine-tuning the last {phase.trainable_layers} layers of {base.name} for {more} "
        f"epochs at learning rate {phase.learning_rate}" + (" (resuming)" if resume else "")
    )
    return fit(model, exp, name, splits, first=first, last=first + more, backup="backup_fine_tune", run=run), more


def test_outputs(
    model: keras.Model, exp: config.Experiment, splits: Splits, name: str, target: Path
) -> tuple[dict, dict]:
    """The test split's predictions, kept in the model folder: scoring (and re-scoring) needs only them."""
    from stages.training.callbacks import diverged
    from stages.training.losses import pixel_log_loss
    from stages.training.outputs import predict_test

    probs, seconds = predict_test(model, splits.test, exp.tta_flip, exp.tta_shift)
    if not np.isfinite(probs).all():  # weights ruined in the last steps, unseen by the loss checks (no val split)
        raise diverged(name, target, "the trained model's test predictions are not finite")
    if not splits.segmentation:
        return {"test_probs.npy": probs}, {"test_seconds": round(seconds, 3)}
    # per-pixel probabilities are too big to keep: the predicted masks instead
    masks = probs.argmax(axis=-1).astype(np.uint8)
    return {"test_masks.npy": masks}, {
        "test_seconds": round(seconds, 3),
        "test_loss": round(pixel_log_loss(splits.y_test, probs), 5),
    }


def run_settings(params: config.Params, exp: config.Experiment, batch_size: int, seed: int, policy: str) -> dict:
    """What an interrupted run's checkpoint must have been made with to be resumed: all but the epoch count.
    (``exp`` already holds the active profile's overrides; its raw ``profiles`` would count their epochs.)"""
    return {
        "experiment": exp.model_dump(exclude={"epochs", "profiles"}),
        "batch_size": batch_size,
        "seed": seed,
        "precision": policy,
        "batchnorm_momentum": params.active.batchnorm_momentum,
        "data": sha256(PREPARED / exp.dataset / "meta.json"),  # the prepared dataset
        "backup": "ResumableBackup",  # Keras' BackupAndRestore's, of earlier versions, lacks what resumes exactly
    }


def checkpoint_dir(name: str, out: Path | None = None) -> Path:
    """Where a run of ``name`` (into ``out``: an ensemble member) keeps its epochs until its model is written."""
    return CHECKPOINTS / (Path(out).relative_to(MODELS) if out is not None else name)


def interrupted(name: str, ckpt_dir: Path, resume: bool) -> str:
    """The line of a run stopped by Ctrl-C: what its checkpoint holds now, and what the next run does with it."""
    from stages.training.callbacks import resume_point

    if not any(resume_point(ckpt_dir / backup)[0] for backup in ("backup", "backup_fine_tune")):
        return f"train@{name} stopped before its first epoch ended; run again to start over"
    if not resume:
        return f"train@{name} stopped; with resume: false the next run starts over"
    return f"train@{name} stopped; the checkpoint in {ckpt_dir}/ is kept, run again to resume"


def train(params: config.Params, name: str, *, seed: int | None = None, out: Path | None = None) -> dict:
    """Train experiment ``name``; ``seed``/``out`` retrain it as another run (an ensemble member)
    into ``out`` (under models/), logging to the same path under reports/."""
    import keras
    import tensorflow as tf

    from stages.training.callbacks import claim_checkpoint, resume_point
    from stages.training.data import load_splits, read_meta
    from stages.training.hardware import distribution_strategy, gpu_capability, precision_policy
    from stages.training.outputs import check_writable, model_card, model_size, write_model
    from stages.training.recipe import adapt_to_training_images, build_model, set_batchnorm_momentum

    exp = config.experiment(params, name)
    run = str(Path(out).relative_to(MODELS)) if out is not None else None
    seed = seed if seed is not None else params.seed if exp.seed is None else exp.seed
    keras.utils.set_random_seed(seed)
    # the same inputs give the same weights, so re-running unchanged code reproduces the metrics exactly
    tf.config.experimental.enable_op_determinism()
    meta = read_meta(exp.dataset)
    policy = precision_policy(config.precision_setting(params, exp), gpu_capability(), cpu_has_native_bf16())
    keras.mixed_precision.set_global_policy(policy)
    strategy = distribution_strategy()
    with strategy.scope():  # before any data is read: a bad model_args value stops here
        model = build_model(name, exp, meta["image_shape"], len(meta["classes"]))
    target, ckpt_dir = Path(out or MODELS / name), checkpoint_dir(name, out)
    check_writable(target.parent, ckpt_dir.parent)
    epochs, batch_size = config.effective_epochs(params, exp), config.effective_batch_size(params, exp)
    splits = load_splits(exp, meta, batch_size, seed)
    if not exp.resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    claim_checkpoint(ckpt_dir, run_settings(params, exp, batch_size, seed, policy), f"train@{name}")
    backed_up = resume_point(ckpt_dir / "backup")[0]  # phase 1's epochs that a killed run left
    in_fine_tune = resume_point(ckpt_dir / "backup_fine_tune")[0] > 0
    with strategy.scope():
        if params.active.batchnorm_momentum:
            set_batchnorm_momentum(model, params.active.batchnorm_momentum)
        adapt_to_training_images(model, splits.x_train)
        compile_model(model, params, exp, exp.optimizer, epochs, splits)
    print(
        f"train@{name}: {exp.model} ({model.count_params():,} parameters) on {exp.dataset} "
        f"{meta['counts']}, {epochs} epochs, batch {batch_size}"
        + ("" if policy == "float32" else f", {policy}")
        + (f", first {len(splits.x_train)} train images" if exp.max_train_examples else "")
        + (" (resuming)" if backed_up else "")
    )
    start = time.perf_counter()
    if exp.fine_tune and in_fine_tune:  # a run killed in phase 2 goes straight back to it
        epochs_run = backed_up  # where phase 1 ended (early stopping: before its last epoch)
    else:
        epochs_run = fit(model, exp, name, splits, first=0, last=epochs, backup="backup", run=run)
    if exp.fine_tune:
        epochs_run, more = fine_tune(
            model, strategy, params, exp, name, splits, first=epochs_run, resume=in_fine_tune, run=run
        )
        epochs += more
    seconds = time.perf_counter() - start
    if exp.callbacks.checkpoint and (ckpt_dir / "best.keras").is_file():
        model = keras.models.load_model(ckpt_dir / "best.keras")  # the study kept the best epoch, not the last
    outputs, test_summary = test_outputs(model, exp, splits, name, target)
    summary = {
        "model": exp.model,
        **model_size(model),
        "epochs_run": epochs_run,
        "epochs_requested": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "train_seconds": round(seconds, 2),
        **test_summary,
        "data": meta["data"],
        "classes": meta["classes"],
    }
    write_model(target, model, outputs, summary, model_card(name, exp, meta, summary, splits.y_test, outputs))
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # only now: a failed write above leaves the run resumable
    return summary


def main(name: str, seed: int | None = None, out: Path | None = None) -> None:
    from stages import models

    if seed is not None and not 0 <= seed <= config.MAX_SEED:  # params.yaml's seeds: the schema's range
        raise config.ConfigError(f"--seed {seed}: must be between 0 and {config.MAX_SEED}")
    if out is not None and not out.is_relative_to(MODELS):
        raise config.ConfigError(f"--out {out}: must be a folder under {MODELS}/")
    params = config.load()
    exp = config.experiment(params, name)
    models.check_experiment(name, exp)
    with cli.on_interrupt(lambda: interrupted(name, checkpoint_dir(name, out), exp.resume)):
        summary = train(params, name, seed=seed, out=out)
    print(f"train@{name}: done, {summary['epochs_run']} epochs in {summary['train_seconds']} s")
    if out is None:  # an ensemble member is scored by its ensemble's vote instead
        print(f"train@{summary_line(name, evaluate(params, name))}")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("name", metavar="experiment", help="an experiment of params.yaml (experiments.<name>)")
    command.add_argument("--seed", type=int, metavar="N", help="train with this seed instead (an ensemble member)")
    command.add_argument(
        "--out", type=Path, metavar="DIR", help="into this folder under models/ instead (an ensemble member)"
    )
    return command


if __name__ == "__main__":
    cli.run(main, parser())
