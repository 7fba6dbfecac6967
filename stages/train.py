"""Stage `train@<experiment>`: the one training loop for every classification study.

Reads the experiment's hyperparameters from params.yaml, builds its model from the
registry, feeds the prepared arrays through tf.data, and logs every epoch with
dvclive. An interrupted run resumes from its last completed epoch (Keras
BackupAndRestore) unless the experiment sets ``resume: false``; the checkpoint is kept
until the final model is written, so a failed write costs no epochs either.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from stages import models
from stages.core import config, paths
from stages.core.errors import DataError
from stages.core.files import OutputError, atomic_path, load_npy, save_npy, write_json, write_text
from stages.core.live import read_live_metric
from stages.core.paths import CHECKPOINTS, MODELS, PREPARED
from stages.core.paths import EXPERIMENT_REPORTS as REPORTS
from stages.models import build
from stages.models.flops import model_flops

if TYPE_CHECKING:
    from dvclive import Live


def load_split(dataset: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    folder = PREPARED / dataset
    return load_npy(folder / f"x_{part}.npy"), load_npy(folder / f"y_{part}.npy")


def flip_together(image: tf.Tensor, mask: tf.Tensor, seed: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Segmentation augmentation: one random draw flips an image (H, W, C) and its mask (H, W)
    left-right together, so that the labels stay on their pixels."""
    flip = tf.random.uniform([], seed=seed) < 0.5
    return tf.where(flip, tf.reverse(image, [1]), image), tf.where(flip, tf.reverse(mask, [1]), mask)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    num_classes: int | None = None,
    augment_seed: int | None = None,
) -> tf.data.Dataset:
    """uint8 arrays -> batches of float32 0..255 images (the models scale them).

    ``shuffle_seed`` set: a seeded reshuffle every epoch (training). ``num_classes``
    set: one-hot labels, for categorical cross-entropy with label smoothing.
    ``augment_seed`` set (segmentation: ``y`` holds masks): seeded random flips applied
    to each image and its mask together (:func:`flip_together`).
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    if augment_seed is not None:
        ds = ds.map(lambda img, mask: flip_together(img, mask, augment_seed), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)

    def to_float(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        labels = tf.one_hot(labels, num_classes) if num_classes else labels
        return tf.cast(images, tf.float32), labels

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


#: Why one model is not trained across machines (tests/test_train.py re-checks it with two workers).
MULTI_WORKER_REFUSED = (
    "TF_CONFIG is set, but Keras 3's fit cannot train under MultiWorkerMirroredStrategy "
    "(keras-team/keras#20585); use several GPUs of one machine, or run separate experiments "
    "on several machines (docs/gpus.md)"
)


def distribution_strategy() -> tf.distribute.Strategy:
    """Several GPUs: mirror across them (MirroredStrategy); else the default device."""
    if os.environ.get("TF_CONFIG"):
        raise config.ConfigError(MULTI_WORKER_REFUSED)
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


@keras.saving.register_keras_serializable(package="stages")
class SparseCrossentropyDice(keras.losses.Loss):
    """Segmentation loss: pixel cross-entropy + ``dice_weight`` x (1 - soft Dice, mean over classes)."""

    def __init__(self, dice_weight: float = 1.0, name: str = "sparse_crossentropy_dice", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        labels = tf.cast(y_true, tf.int32)
        ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, y_pred), axis=[1, 2])
        onehot = tf.one_hot(labels, tf.shape(y_pred)[-1], dtype=y_pred.dtype)
        inter = tf.reduce_sum(onehot * y_pred, axis=[1, 2])
        total = tf.reduce_sum(onehot + y_pred, axis=[1, 2])
        dice = tf.reduce_mean((2 * inter + 1) / (total + 1), axis=-1)
        return ce + self.dice_weight * (1 - dice)

    def get_config(self) -> dict:
        return {**super().get_config(), "dice_weight": self.dice_weight}


def pixel_log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy over all pixels of masks ``y`` (N, H, W) under ``probs`` (N, H, W, K)."""
    picked = np.take_along_axis(probs, y[..., None].astype(np.int64), axis=-1)
    return float(-np.log(np.clip(picked, 1e-7, 1)).mean())


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


def gpu_capability() -> tuple[int, int] | None:
    """The first GPU's compute capability, or None without a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))


def cpu_has_amx_bf16() -> bool:
    """True on CPUs with AMX bfloat16 units (Intel Sapphire Rapids and later), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    except OSError:  # not Linux: no way to tell, so no
        return False


def precision_policy(setting: str, capability: tuple[int, int] | None, cpu_bf16: bool = False) -> str:
    """The Keras dtype policy for ``mixed_precision``. ``auto``: float32 on a CPU, bfloat16 on GPUs of
    compute capability 8 or more, float16 (Keras adds loss scaling) below. ``auto_cpu_bf16``: the
    same, but bfloat16 on CPUs with AMX (``cpu_bf16``); elsewhere bfloat16 is emulated, 0.28x the
    float32 speed of cifar_rgb_fast's model when oneDNN was limited to AVX-512 without it."""
    if setting not in ("auto", "auto_cpu_bf16"):
        return setting
    if capability is None:
        return "mixed_bfloat16" if setting == "auto_cpu_bf16" and cpu_bf16 else "float32"
    return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"


def live_metric_name(monitor: str) -> str:
    """dvclive's name for a Keras log key: ``val_accuracy`` is ``eval/accuracy``, ``accuracy`` is ``train/accuracy``."""
    return monitor.replace("val_", "eval/") if "val_" in monitor else f"train/{monitor}"


def _best_so_far(live_dir: Path, monitor: str) -> float | None:
    """The monitored metric's best logged value, so a resumed checkpoint keeps the true best."""

    series = read_live_metric(live_dir, live_metric_name(monitor))
    if series is None or series.empty:
        return None
    return float(series.max() if "acc" in monitor else series.min())


def callbacks(
    exp: config.Experiment,
    name: str,
    resuming: bool,
    *,
    run: str | None = None,
    test_ds: tf.data.Dataset | None = None,
    backup: str = "backup",
    first_step: int = 0,
) -> list[keras.callbacks.Callback]:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    # ``run``: another run of the experiment (an ensemble member), with its own state and logs
    ckpt_dir, live_dir = CHECKPOINTS / (run or name), (paths.REPORTS / run if run else REPORTS / name) / "train"
    live = Live(dir=str(live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None, report=None)
    live.step = max(live.step, first_step)  # dvclive resumes a log whose last step is 0 at step 0 again
    # the backup outlives fit: train() removes it once the final model is written
    backup_cb = keras.callbacks.BackupAndRestore(str(ckpt_dir / backup), delete_checkpoint=False)
    cbs: list[keras.callbacks.Callback] = [backup_cb, EpochTimer()]
    if test_ds is not None:  # before DVCLiveCallback, which closes the step
        cbs.append(TestTracker(test_ds, live))
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
    cbs.append(DVCLiveCallback(live=live))
    return cbs


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> None:
    """Every BatchNormalization layer, nested backbones included (read at trace time, so before fit)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            set_batchnorm_momentum(layer, momentum)
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def unfreeze_last_layers(model: keras.Model, count: int) -> keras.Model:
    """Make the last ``count`` layers of the model's pretrained base (its nested Keras model) trainable."""
    bases = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not bases:
        raise config.ConfigError(f"fine_tune: model {model.name!r} has no pretrained base (nested Keras model)")
    base = bases[0]
    base.trainable = True
    for layer in base.layers[: max(0, len(base.layers) - count)]:
        layer.trainable = False
    return base


def read_meta(dataset: str) -> dict:
    """The prepared dataset's meta.json; DataError naming the stage that writes it when missing."""
    path = PREPARED / dataset / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; run `dvc repro prepare@{dataset}` first")
    return json.loads(path.read_text())


def build_model(name: str, exp: config.Experiment, input_shape: list[int], num_classes: int) -> keras.Model:
    """The experiment's model; a builder's ValueError or TypeError (a bad ``model_args`` value,
    e.g. ``dropout: 7``) becomes a ConfigError naming the parameter."""
    try:
        return build(exp.model, input_shape, num_classes, **exp.model_args)
    except (ValueError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise config.ConfigError(f"{config.PARAMS_FILE}: experiments.{name}.model_args: {reason}") from None


def check_writable(*folders: Path) -> None:
    """Fail in one line, before the first epoch, when an output folder cannot be written (not once training is over)."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            reason = "a file is in the way" if isinstance(exc, FileExistsError | NotADirectoryError) else exc.strerror
            raise OutputError(f"cannot write to {folder}/: {reason or exc} (checked before training)") from None


def make_loss(exp: config.Experiment, one_hot: int | None) -> keras.losses.Loss:
    if exp.loss == "sparse_crossentropy_dice":
        return SparseCrossentropyDice()
    if one_hot:
        return keras.losses.CategoricalCrossentropy(label_smoothing=exp.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def predict_test(model: keras.Model, test_ds: tf.data.Dataset, tta_flip: bool) -> tuple[np.ndarray, float]:
    """Test-split probabilities (averaged with the mirrored images' when ``tta_flip``) and the seconds taken."""
    start = time.perf_counter()
    probs = model.predict(test_ds, verbose=0).astype(np.float32)
    if tta_flip:  # test-time augmentation: average with the left-right mirrored images
        mirrored = test_ds.map(lambda images, labels: (tf.reverse(images, [2]), labels))
        probs = (probs + model.predict(mirrored, verbose=0).astype(np.float32)) / 2
    return probs, time.perf_counter() - start


def model_size(model: keras.Model) -> dict[str, int]:
    return {
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "flops": model_flops(model),
    }


def write_model(target: Path, model: keras.Model, outputs: dict[str, np.ndarray], summary: dict, card: str) -> None:
    """The model, its test outputs, summary.json and README.md card: one folder, written atomically."""
    # Shared uncompiled: the same layers and weights without the optimizer's state (a third of the file
    # for Adam) or a loss (the project's own would make plain `keras.models.load_model` fail).
    model = keras.Model(model.inputs, model.outputs, name=model.name)
    with atomic_path(target, is_dir=True) as tmp:
        model.save(tmp / "model.keras")
        for file, array in outputs.items():
            save_npy(tmp / file, array)
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "README.md", card)


def train(params: config.Params, name: str, *, seed: int | None = None, out: Path | None = None) -> dict:
    """Train experiment ``name``; ``seed``/``out`` retrain it as another run (an ensemble member)
    into ``out`` (under models/), logging to the same path under reports/."""
    exp = config.experiment(params, name)
    run = str(Path(out).relative_to(MODELS)) if out is not None else None
    if exp.callbacks.reduce_lr and exp.optimizer.schedule != "constant":
        raise config.ConfigError(
            f"params.yaml: experiments.{name}: callbacks.reduce_lr and optimizer.schedule "
            f"{exp.optimizer.schedule!r} both set the learning rate; keep one"
        )
    if seed is None:
        seed = params.seed if exp.seed is None else exp.seed
    keras.utils.set_random_seed(seed)
    # the same inputs give the same weights, so re-running unchanged code reproduces the metrics exactly
    tf.config.experimental.enable_op_determinism()
    meta = read_meta(exp.dataset)
    num_classes = len(meta["classes"])
    setting = exp.mixed_precision or params.accelerator.mixed_precision
    policy = precision_policy(setting, gpu_capability(), cpu_has_amx_bf16())
    keras.mixed_precision.set_global_policy(policy)
    strategy = distribution_strategy()
    with strategy.scope():  # before any data is read: a bad model_args value stops here
        model = build_model(name, exp, meta["image_shape"], num_classes)
    target, ckpt_dir = Path(out or MODELS / name), CHECKPOINTS / (run or name)
    check_writable(target.parent, ckpt_dir.parent)
    x_train, y_train = load_split(exp.dataset, "train")
    if exp.max_train_examples:  # prepared train images are already in seeded random order
        x_train, y_train = x_train[: exp.max_train_examples], y_train[: exp.max_train_examples]
    x_val, y_val = load_split(exp.dataset, "val")
    one_hot = num_classes if exp.loss == "categorical_crossentropy" else None
    segmentation = meta.get("task") == "segmentation"
    epochs, batch_size = config.effective_epochs(params, exp), config.effective_batch_size(params, exp)
    augment_seed = seed if segmentation and exp.augment else None
    train_ds = make_dataset(
        x_train, y_train, batch_size, shuffle_seed=seed, num_classes=one_hot, augment_seed=augment_seed
    )
    val_ds = make_dataset(x_val, y_val, batch_size, num_classes=one_hot) if len(x_val) else None

    if not exp.resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    resuming = (ckpt_dir / "backup").is_dir()

    x_test, y_test = load_split(exp.dataset, "test")
    test_ds = make_dataset(x_test, y_test, batch_size, num_classes=one_hot)
    with strategy.scope():
        if params.active.batchnorm_momentum:
            set_batchnorm_momentum(model, params.active.batchnorm_momentum)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
                layer.adapt(x_train[:10_000].astype(np.float32))
        loss = make_loss(exp, one_hot)
        steps = math.ceil(len(x_train) / batch_size)
        # segmentation: pixel accuracy (the pets study's metric), named as the classifiers' accuracy
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy") if segmentation else "accuracy"

        def compile_for(optimizer: config.Optimizer, phase_epochs: int) -> None:
            model.compile(
                optimizer=make_optimizer(optimizer, phase_epochs, steps),
                loss=loss,
                metrics=[metric],
                jit_compile=params.accelerator.jit_compile,
            )

        compile_for(exp.optimizer, epochs)
    print(
        f"train@{name}: {exp.model} ({model.count_params():,} parameters) on {exp.dataset} "
        f"{meta['counts']}, {epochs} epochs, batch {batch_size}"
        + ("" if policy == "float32" else f", {policy}")
        + (f", first {len(x_train)} train images" if exp.max_train_examples else "")
        + (" (resuming)" if resuming else "")
    )
    start = time.perf_counter()
    fine_tune = exp.fine_tune
    in_fine_tune = fine_tune is not None and (ckpt_dir / "backup_fine_tune").is_dir()  # killed in phase 2
    epochs_run = epochs
    tracked = test_ds if exp.track_test else None

    def fit(first: int, last: int, resume: bool, backup: str) -> int:
        """Epochs ``first`` to ``last`` (one training phase); returns the epoch count reached."""
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=first,
            epochs=last,
            callbacks=callbacks(exp, name, resume, run=run, test_ds=tracked, backup=backup, first_step=first),
            verbose="auto" if sys.stdout.isatty() else 2,  # a progress bar at a terminal, one line per epoch in logs
            shuffle=False,  # the tf.data pipeline already reshuffles every epoch, seeded
        )
        return history.epoch[-1] + 1 if history.epoch else last

    if not in_fine_tune:
        epochs_run = fit(0, epochs, resuming, "backup")
    if fine_tune is not None:
        more = min(fine_tune.epochs, params.active.max_epochs or fine_tune.epochs)
        with strategy.scope():
            base = unfreeze_last_layers(model, fine_tune.trainable_layers)
            compile_for(exp.optimizer.model_copy(update={"learning_rate": fine_tune.learning_rate}), more)
        print(
            f"train@{name}: fine-tuning the last {fine_tune.trainable_layers} layers of {base.name} for {more} "
            f"epochs at learning rate {fine_tune.learning_rate}" + (" (resuming)" if in_fine_tune else "")
        )
        epochs_run = fit(epochs_run, epochs_run + more, True, "backup_fine_tune")
        epochs += more
    seconds = time.perf_counter() - start
    best = ckpt_dir / "best.keras"
    if exp.callbacks.checkpoint and best.is_file():
        model = keras.models.load_model(best)  # the study kept the best epoch, not the last
    # Predict the test split here, while TensorFlow is loaded: `evaluate` then needs only
    # NumPy and scikit-learn, which saves a TensorFlow start-up per experiment.
    test_probs, test_seconds = predict_test(model, test_ds, exp.tta_flip)
    outputs = {"test_probs.npy": test_probs}
    if segmentation:  # per-pixel probabilities are too big to keep: the predicted masks instead
        outputs = {"test_masks.npy": test_probs.argmax(axis=-1).astype(np.uint8)}
    summary = {
        "model": exp.model,
        **model_size(model),
        "epochs_run": epochs_run,
        "epochs_requested": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "train_seconds": round(seconds, 2),
        "test_seconds": round(test_seconds, 3),
        "data": meta["data"],
        "classes": meta["classes"],
    }
    if segmentation:
        summary["test_loss"] = round(pixel_log_loss(y_test, test_probs), 5)
    write_model(target, model, outputs, summary, model_card(name, exp, meta, summary, y_test, outputs))
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # only now: a failed write above leaves the run resumable
    return summary


def model_card(name: str, exp: config.Experiment, meta: dict, summary: dict, y_test: np.ndarray, outputs: dict) -> str:
    """A short Markdown card that travels with the shared model: what it is, the data it saw, how it scored."""
    if "test_probs.npy" in outputs:
        score = f"test accuracy {float((outputs['test_probs.npy'].argmax(axis=1) == y_test).mean()):.4f}"
    else:
        score = f"test pixel accuracy {float((outputs['test_masks.npy'] == y_test).mean()):.4f}"
    caveat = (
        "\n**GENERATED SAMPLE DATA**: trained on the project's generated images (profile `embedded`), so it "
        "shows the pipeline works; it is not a model of the real dataset.\n"
        if meta["data"].startswith("generated")
        else ""
    )
    return (
        f"# {name}\n{caveat}\n"
        f"- study `{exp.study}`, model `{exp.model}` {exp.model_args or ''}: {summary['parameters']:,} parameters, "
        f"{summary['flops'] or 0:,} FLOPs per image\n"
        f"- data: {meta['data']}; prepared set `{exp.dataset}` {meta['counts']}; input {meta['image_shape']}, "
        "raw 0..255 pixels (scaling is inside the model)\n"
        f"- classes: {', '.join(map(str, meta['classes']))}\n"
        f"- trained {summary['epochs_run']} of {summary['epochs_requested']} epochs, batch {summary['batch_size']}, "
        f"seed {summary['seed']}; {score}\n\n"
        'Load it with plain Keras, no project code: `keras.models.load_model("model.keras")`.\n'
    )


def main(name: str, *options: str) -> None:
    """``python -m stages.train <experiment> [--seed N --out models/...]`` (the latter: an ensemble member)."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m stages.train {name}")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(options)
    if args.out is not None and not args.out.is_relative_to(MODELS):
        raise config.ConfigError(f"--out {args.out}: must be a folder under {MODELS}/")
    params = config.load()
    models.check_experiment(name, config.experiment(params, name))
    summary = train(params, name, seed=args.seed, out=args.out)
    print(f"train@{name}: done, {summary['epochs_run']} epochs in {summary['train_seconds']} s")


if __name__ == "__main__":
    from stages.core.cli import run

    run(main, sys.argv[1:])
