"""objects8 (seeds/000 part 2): the report's searched CNN."""

from __future__ import annotations

import keras
from keras import layers

from stages.models.blocks import class_probs, close, scaled_input
from stages.models.registry import Shape, register


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
    inputs, x = scaled_input(input_shape)
    for i in range(1, conv_layers + 1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    return close(inputs, class_probs(x, num_classes), "objects8_cnn")
