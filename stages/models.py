"""The model registry: one short Keras function per architecture of the studies.

Every builder takes ``input_shape`` and ``num_classes`` plus its own keyword
arguments (set per experiment under ``model_args`` in params.yaml). Models take raw
0..255 pixel values: the scaling each study used lives inside the model, so a
saved model needs no separate preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers, regularizers

Shape = tuple[int, int, int]
MODELS: dict[str, Callable[..., keras.Model]] = {}


def register(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    MODELS[fn.__name__] = fn
    return fn


def build(name: str, input_shape: Shape, num_classes: int, **model_args) -> keras.Model:
    return MODELS[name](tuple(input_shape), num_classes, **model_args)


def _scaled_input(input_shape: Shape) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input(shape=input_shape, name="image")
    return inputs, layers.Rescaling(1.0 / 255, name="scale_0_1")(inputs)


# --- cifar-gray (seeds/001) -------------------------------------------------------


@register
def cifar_gray_baseline(input_shape: Shape, num_classes: int) -> keras.Model:
    """The report's baseline: two 2x2 conv/pool stages and a 256-unit dense layer."""
    inputs, x = _scaled_input(input_shape)
    x = layers.Conv2D(64, 2, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 2, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="cifar_gray_baseline")


@register
def cifar_gray_grid(
    input_shape: Shape,
    num_classes: int,
    units: int = 64,
    dense_units: int = 256,
    dropout: float = 0.2,
    l1l2: float = 0.001,
    pool_size: int = 2,
) -> keras.Model:
    """One point of the report's 144-run HParams grid (one conv layer, L1L2-regularised)."""
    inputs, x = _scaled_input(input_shape)
    reg = regularizers.L1L2(l1=l1l2, l2=l1l2)
    x = layers.Conv2D(units, 2, padding="same", activation="relu", kernel_regularizer=reg, name="conv")(x)
    x = layers.MaxPooling2D(pool_size, name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="cifar_gray_grid")


@register
def cifar_gray_tuned(input_shape: Shape, num_classes: int, dropout: float = 0.2, l2: float = 1e-4) -> keras.Model:
    """The report's tuned model: conv 64/128/256 (2x2, L2) each pooled, dropout, dense 512."""
    inputs, x = _scaled_input(input_shape)
    for i, filters in enumerate((64, 128, 256), start=1):
        x = layers.Conv2D(
            filters, 2, padding="same", activation="relu", kernel_regularizer=regularizers.L2(l2), name=f"conv{i}"
        )(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="cifar_gray_tuned")


# --- cifar-rgb own CNN (seeds/002) --------------------------------------------------


def _augment(x: keras.KerasTensor, rotation_deg: float, shift: float, vertical_flip: bool = False) -> keras.KerasTensor:
    """The report's ImageDataGenerator(rotation, shifts, flip) as Keras layers: active in fit() only."""
    x = layers.RandomFlip("horizontal_and_vertical" if vertical_flip else "horizontal", name="aug_flip")(x)
    if rotation_deg:
        x = layers.RandomRotation(rotation_deg / 360.0, fill_mode="nearest", name="aug_rotate")(x)
    if shift:
        x = layers.RandomTranslation(shift, shift, fill_mode="nearest", name="aug_shift")(x)
    return x


@register
def cifar_rgb_cnn(
    input_shape: Shape,
    num_classes: int,
    l2: float = 1e-3,
    dropouts: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5),
    augment: bool = True,
) -> keras.Model:
    """The report's own CNN: conv blocks 32-32 / 64-64 / 128 with BN, Mish, he_uniform, L2."""
    inputs = keras.Input(shape=input_shape, name="image")
    # Per-channel standardisation; train.py adapts its mean/variance on the training
    # images. (Standardising raw pixels equals the report's /255 then standardise.)
    x = layers.Normalization(axis=-1, name="standardize")(inputs)
    if augment:
        x = _augment(x, rotation_deg=15, shift=0.1)

    def conv(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="mish",
            kernel_initializer="he_uniform",
            kernel_regularizer=regularizers.L2(l2),
            name=name,
        )(x)
        return layers.BatchNormalization(name=f"{name}_bn")(x)

    for block, (widths, rate) in enumerate(zip(((32, 32), (64, 64), (128,)), dropouts), start=1):
        for j, filters in enumerate(widths, start=1):
            x = conv(x, filters, f"block{block}_conv{j}")
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(rate, name=f"block{block}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="mish", kernel_initializer="he_uniform", name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    x = layers.Dropout(dropouts[3], name="dense_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="cifar_rgb_cnn")


# --- objects8 (seeds/000 part 2) ----------------------------------------------------


@register
def objects8_cnn(
    input_shape: Shape,
    num_classes: int,
    conv_layers: int = 5,
    filters: int = 58,
    dense_units: int = 32,
    dropout: float = 0.5,
) -> keras.Model:
    """The report's searched CNN: ``conv_layers`` x Conv(filters, 3x3) at full size, one pool."""
    inputs, x = _scaled_input(input_shape)
    for i in range(1, conv_layers + 1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="objects8_cnn")


# --- the project's own variants -------------------------------------------------------


@register
def resnet_fast(
    input_shape: Shape,
    num_classes: int,
    widths: tuple[int, ...] = (32, 64, 128),
    augment: bool = True,
    shift: float = 0.125,
) -> keras.Model:
    """A small residual net for fast CIFAR-size training (in the spirit of airbench).

    Each stage: conv -> max-pool -> BN-GELU, then a residual pair of 3x3 convs; global
    max pooling and a linear head with a fixed temperature.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Normalization(axis=-1, name="standardize")(inputs)
    if augment:
        x = layers.RandomFlip("horizontal", name="aug_flip")(x)
        x = layers.RandomTranslation(shift, shift, fill_mode="reflect", name="aug_shift")(x)

    def conv_bn(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.Activation("gelu", name=f"{name}_gelu")(x)

    x = conv_bn(x, widths[0], "stem")
    for i, filters in enumerate(widths, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{i}_conv")(x)
        x = layers.MaxPooling2D(2, name=f"stage{i}_pool")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"stage{i}_bn")(x)
        x = layers.Activation("gelu", name=f"stage{i}_gelu")(x)
        shortcut = x
        x = conv_bn(x, filters, f"stage{i}_res1")
        x = conv_bn(x, filters, f"stage{i}_res2")
        x = layers.Add(name=f"stage{i}_add")([x, shortcut])
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="resnet_fast")
