"""Stage `train@<experiment>`: the one training loop for every classification study.

Reads the experiment's hyperparameters from params.yaml, builds its model from the
registry, feeds the prepared arrays through tf.data, and logs every epoch with
dvclive. An interrupted run resumes from its last completed epoch (Keras
BackupAndRestore) unless the experiment sets ``resume: false``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stages import config
from stages.io import atomic_path, load_npy, save_npy, write_json
from stages.models import build
from stages.paths import CHECKPOINTS, MODELS, PREPARED
from stages.paths import EXPERIMENT_REPORTS as REPORTS


def load_split(dataset: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    folder = PREPARED / dataset
    return load_npy(folder / f"x_{part}.npy"), load_npy(folder / f"y_{part}.npy")


def make_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle_seed: int | None = None, num_classes: int | None = None
) -> tf.data.Dataset:
    """uint8 arrays -> batches of float32 0..255 images (the models scale them).

    ``shuffle_seed`` set: a seeded reshuffle every epoch (training). ``num_classes``
    set: one-hot labels, for categorical cross-entropy with label smoothing.
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def to_float(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        labels = tf.one_hot(labels, num_classes) if num_classes else labels
        return tf.cast(images, tf.float32), labels

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def distribution_strategy() -> tf.distribute.Strategy:
    """Several GPUs: mirror across them; TF_CONFIG set: multi-worker; else the default device."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def make_optimizer(opt: config.Optimizer, epochs: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr: float | keras.optimizers.schedules.LearningRateSchedule = opt.learning_rate
    if opt.schedule != "constant":
        total = epochs * steps_per_epoch
        warmup = int(0.2 * total) if opt.schedule == "onecycle" else 0
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else opt.learning_rate,
            decay_steps=max(1, total - warmup),
            warmup_target=opt.learning_rate if warmup else None,
            warmup_steps=warmup,
            alpha=0.0,
        )
    kwargs = {"learning_rate": lr}
    if opt.weight_decay is not None:
        kwargs["weight_decay"] = opt.weight_decay
    if opt.name == "sgd":
        return keras.optimizers.SGD(momentum=opt.momentum or 0.0, nesterov=bool(opt.momentum), **kwargs)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "rmsprop": keras.optimizers.RMSprop}[
        opt.name
    ](**kwargs)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training wall time of the epoch) to the logged metrics."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.start


def _best_so_far(live_dir: Path, monitor: str) -> float | None:
    """The monitored metric's best logged value, so a resumed checkpoint keeps the true best."""
    tsv = live_dir / "plots" / "metrics" / f"{monitor}.tsv"
    if not tsv.is_file():
        return None
    values = [float(line.split("\t")[-1]) for line in tsv.read_text().splitlines()[1:] if line.strip()]
    if not values:
        return None
    return max(values) if "acc" in monitor else min(values)


def callbacks(exp: config.Experiment, name: str, resuming: bool) -> list[keras.callbacks.Callback]:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    ckpt_dir, live_dir = CHECKPOINTS / name, REPORTS / name / "train"
    cbs: list[keras.callbacks.Callback] = [keras.callbacks.BackupAndRestore(str(ckpt_dir / "backup")), EpochTimer()]
    if exp.callbacks.checkpoint:
        monitor = exp.callbacks.checkpoint.monitor
        cbs.append(
            keras.callbacks.ModelCheckpoint(
                str(ckpt_dir / "best.keras"),
                monitor=monitor,
                save_best_only=True,
                initial_value_threshold=_best_so_far(live_dir, monitor) if resuming else None,
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
    live = Live(dir=str(live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None, report=None)
    cbs.append(DVCLiveCallback(live=live))
    return cbs


def train(params: config.Params, name: str) -> dict:
    exp = config.experiment(params, name)
    if exp.callbacks.reduce_lr and exp.optimizer.schedule != "constant":
        raise config.ConfigError(
            f"params.yaml: experiments.{name}: callbacks.reduce_lr and optimizer.schedule "
            f"{exp.optimizer.schedule!r} both set the learning rate; keep one"
        )
    seed = params.seed if exp.seed is None else exp.seed
    keras.utils.set_random_seed(seed)
    meta = json.loads((PREPARED / exp.dataset / "meta.json").read_text())
    num_classes = len(meta["classes"])
    x_train, y_train = load_split(exp.dataset, "train")
    x_val, y_val = load_split(exp.dataset, "val")
    one_hot = num_classes if exp.loss == "categorical_crossentropy" else None
    epochs, batch_size = config.effective_epochs(params, exp), config.effective_batch_size(params, exp)
    train_ds = make_dataset(x_train, y_train, batch_size, shuffle_seed=seed, num_classes=one_hot)
    val_ds = make_dataset(x_val, y_val, batch_size, num_classes=one_hot) if len(x_val) else None

    ckpt_dir = CHECKPOINTS / name
    if not exp.resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    resuming = (ckpt_dir / "backup").is_dir()

    with distribution_strategy().scope():
        model = build(exp.model, meta["image_shape"], num_classes, **exp.model_args)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
                layer.adapt(x_train[:10_000].astype(np.float32))
        loss = (
            keras.losses.CategoricalCrossentropy(label_smoothing=exp.label_smoothing)
            if one_hot
            else keras.losses.SparseCategoricalCrossentropy()
        )
        steps = math.ceil(len(x_train) / batch_size)
        model.compile(optimizer=make_optimizer(exp.optimizer, epochs, steps), loss=loss, metrics=["accuracy"])
    print(
        f"train@{name}: {exp.model} ({model.count_params():,} parameters) on {exp.dataset} "
        f"{meta['counts']}, {epochs} epochs, batch {batch_size}" + (" (resuming)" if resuming else "")
    )
    start = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=callbacks(exp, name, resuming),
        verbose=2,
        shuffle=False,  # the tf.data pipeline already reshuffles every epoch, seeded
    )
    seconds = time.perf_counter() - start
    best = ckpt_dir / "best.keras"
    if exp.callbacks.checkpoint and best.is_file():
        model = keras.models.load_model(best)  # the study kept the best epoch, not the last
    # Predict the test split here, while TensorFlow is loaded: `evaluate` then needs only
    # NumPy and scikit-learn, which saves a TensorFlow start-up per experiment.
    x_test, y_test = load_split(exp.dataset, "test")
    start = time.perf_counter()
    test_probs = model.predict(make_dataset(x_test, y_test, batch_size), verbose=0).astype(np.float32)
    test_seconds = time.perf_counter() - start
    summary = {
        "model": exp.model,
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "epochs_run": history.epoch[-1] + 1 if history.epoch else epochs,
        "epochs_requested": epochs,
        "batch_size": batch_size,
        "train_seconds": round(seconds, 2),
        "test_seconds": round(test_seconds, 3),
        "data": meta["data"],
    }
    with atomic_path(MODELS / name, is_dir=True) as tmp:
        model.save(tmp / "model.keras")
        save_npy(tmp / "test_probs.npy", test_probs)
        write_json(tmp / "summary.json", summary)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary


def main(name: str) -> None:
    params = config.load()
    config.experiment(params, name)
    summary = train(params, name)
    print(f"train@{name}: done, {summary['epochs_run']} epochs in {summary['train_seconds']} s")


if __name__ == "__main__":
    from stages.cli import run

    run(main, sys.argv[1:])
