"""cifar-gray (seeds/001): the report's baseline, one point of its HParams grid, its tuned model."""

from __future__ import annotations

import keras
from keras import layers, regularizers

from stages.models.blocks import class_probs, close, scaled_input
from stages.models.registry import Shape, register


@register
def cifar_gray_baseline(input_shape: Shape, num_classes: int) -> keras.Model:
    """The report's baseline: two 2x2 conv/pool stages and a 256-unit dense layer."""
    inputs, x = scaled_input(input_shape)
    x = layers.Conv2D(64, 2, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 2, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="dense")(x)
    return close(inputs, class_probs(x, num_classes), "cifar_gray_baseline")


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
    inputs, x = scaled_input(input_shape)
    reg = regularizers.L1L2(l1=l1l2, l2=l1l2)
    x = layers.Conv2D(units, 2, padding="same", activation="relu", kernel_regularizer=reg, name="conv")(x)
    x = layers.MaxPooling2D(pool_size, name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    return close(inputs, class_probs(x, num_classes), "cifar_gray_grid")


@register
def cifar_gray_tuned(input_shape: Shape, num_classes: int, dropout: float = 0.2, l2: float = 1e-4) -> keras.Model:
    """The report's tuned model: conv 64/128/256 (2x2, L2) each pooled, dropout, dense 512."""
    inputs, x = scaled_input(input_shape)
    for i, filters in enumerate((64, 128, 256), start=1):
        x = layers.Conv2D(
            filters, 2, padding="same", activation="relu", kernel_regularizer=regularizers.L2(l2), name=f"conv{i}"
        )(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    return close(inputs, class_probs(x, num_classes), "cifar_gray_tuned")
