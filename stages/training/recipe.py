"""An experiment's settings turned into Keras objects: model, optimizer, loss, and the changes made to a
built model before training (batch-norm momentum, normalisation statistics, unfrozen layers)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from stages.core import config
from stages.models import build
from stages.models.blocks import WHITEN_LAYER
from stages.training.losses import SparseCrossentropyDice
from stages.training.settings import Run

WHITEN_IMAGES = 5000  # training images whose patch covariance sets the whitening stem (airbench94's count)


def build_model(run: Run, input_shape: list[int], num_classes: int) -> keras.Model:
    """The run's model; a builder's ValueError or TypeError (a bad ``model_args`` value,
    e.g. ``dropout: 7``) becomes a ConfigError naming the parameter."""
    try:
        return build(run.model, input_shape, num_classes, **run.model_args)
    except (ValueError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise config.ConfigError(f"{config.PARAMS_FILE}: experiments.{run.experiment}.model_args: {reason}") from None


class Triangle(keras.optimizers.schedules.LearningRateSchedule):
    """airbench94's schedule: linear from ``start`` x the rate up to the rate at ``peak`` of the steps,
    then linear down to ``end`` x the rate at the last step."""

    def __init__(self, rate: float, total_steps: int, start: float = 0.2, peak: float = 0.23, end: float = 0.07):
        self.rate, self.total_steps, self.start, self.peak, self.end = rate, total_steps, start, peak, end

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        top = float(max(1, int(self.peak * self.total_steps)))
        rising = self.start + (1 - self.start) * step / top
        falling = 1 + (self.end - 1) * (step - top) / max(1.0, self.total_steps - top)
        return self.rate * tf.where(step < top, rising, tf.maximum(falling, self.end))

    def get_config(self) -> dict:
        return {
            "rate": self.rate,
            "total_steps": self.total_steps,
            "start": self.start,
            "peak": self.peak,
            "end": self.end,
        }


class BiasScaledSGD(keras.optimizers.SGD):
    """SGD whose batch-norm shifts (``beta``) take ``bias_lr_scale`` times the learning rate (airbench94's
    bias_scaler). Keras' decoupled weight decay is applied apart from ``update_step``, so theirs stays the
    weights'."""

    def __init__(self, bias_lr_scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bias_lr_scale = bias_lr_scale

    def build(self, variables: list) -> None:
        super().build(variables)
        self._biases = {self._var_key(v) for v in variables if v.path.endswith("/beta")}

    def update_step(self, gradient: tf.Tensor, variable: tf.Variable, learning_rate: tf.Tensor) -> None:
        if self._var_key(variable) in self._biases:
            learning_rate = learning_rate * self.bias_lr_scale
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "bias_lr_scale": self.bias_lr_scale}


def make_optimizer(opt: config.Optimizer, epochs: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr: float | keras.optimizers.schedules.LearningRateSchedule = opt.learning_rate
    if opt.schedule == "triangle":
        lr = Triangle(opt.learning_rate, epochs * steps_per_epoch)
    elif opt.schedule != "constant":
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
    if opt.ema_momentum is not None:
        kwargs.update(use_ema=True, ema_momentum=opt.ema_momentum)
    if opt.name == "sgd":
        if opt.bias_lr_scale:
            kwargs["bias_lr_scale"] = opt.bias_lr_scale
        sgd = BiasScaledSGD if opt.bias_lr_scale else keras.optimizers.SGD
        return sgd(momentum=opt.momentum or 0.0, nesterov=bool(opt.momentum), **kwargs)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "rmsprop": keras.optimizers.RMSprop}[
        opt.name
    ](**kwargs)


def make_loss(run: Run, one_hot: int | None) -> keras.losses.Loss:
    if run.loss == "sparse_crossentropy_dice":
        return SparseCrossentropyDice()
    if one_hot:
        return keras.losses.CategoricalCrossentropy(label_smoothing=run.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


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


def adapt_to_training_images(model: keras.Model, x_train: np.ndarray) -> None:
    """Set the layers that are fitted to the training images before training: Normalization's mean and
    variance (when not given), then a frozen patch-whitening stem's filters (:func:`init_whitening`)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
            layer.adapt(x_train[:10_000].astype(np.float32))
    if any(layer.name == WHITEN_LAYER for layer in model.layers):
        init_whitening(model, x_train[:WHITEN_IMAGES])


def init_whitening(model: keras.Model, images: np.ndarray, eps: float = 5e-4) -> None:
    """airbench94's whitening stem: the filters of the conv named ``whiten`` (k x k, 2 x k*k*channels
    filters) become the eigenvectors of the covariance of the k x k patches that reach it, each scaled
    by 1 / sqrt(eigenvalue + eps), and their negatives. Its input is computed by the model itself
    (standardised, augmentation off), so the stem whitens exactly what it will see."""
    stem = model.get_layer(WHITEN_LAYER)
    kh, kw, channels, filters = stem.kernel.shape
    if filters != 2 * kh * kw * channels:
        raise ValueError(
            f"{stem.name}: {filters} filters; whitening {kh}x{kw}x{channels} patches needs {2 * kh * kw * channels}"
        )
    stem_input = keras.Model(model.inputs, stem.input).predict(images.astype(np.float32), verbose=0, batch_size=500)
    stem_input = tf.constant(np.asarray(stem_input, dtype=np.float64))  # bfloat16 under mixed precision
    patches = tf.image.extract_patches(stem_input, [1, kh, kw, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
    patches = tf.reshape(patches, [-1, kh * kw * channels])  # rows: (row, col, channel), as the kernel's
    covariance = tf.matmul(patches, patches, transpose_a=True) / tf.cast(tf.shape(patches)[0] - 1, tf.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance.numpy())
    scaled = (eigenvectors / np.sqrt(eigenvalues + eps)).reshape(kh, kw, channels, -1)
    stem.kernel.assign(np.concatenate([scaled, -scaled], axis=-1).astype(np.float32))
