"""pets-unet (seeds/000 part 1): the report's U-Net for segmentation."""

from __future__ import annotations

import keras
from keras import layers

from stages.models.blocks import close, scaled_input
from stages.models.registry import SEGMENTATION_MODELS, Shape, register


@register
def pets_unet(
    input_shape: Shape,
    num_classes: int,
    batch_norm: bool = False,
    filters: tuple[int, ...] = (16, 32, 64, 128, 256),
    dropouts: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.3),
    up_dropouts: tuple[float, ...] = (0.2, 0.2, 0.1, 0.1),
    bn_momentum: float = 0.99,
) -> keras.Model:
    """The report's U-Net (models 1-3): ``batch_norm=True`` is model 3 (1,943,123 parameters).

    ``bn_momentum``: Keras' default (the report's); a short run (a dozen steps) needs a lower one,
    or the moving statistics used at test time stay near their initial values.

    Contracting: per block conv3x3 -> dropout -> [batch-norm] -> conv3x3 -> maxpool (none after
    the last). Expanding: conv-transpose 2x2/2 -> concatenate skip -> conv3x3 -> dropout -> conv3x3.
    Output: 1x1 conv, ``num_classes`` filters, softmax per pixel (float32 under mixed precision).
    ReLU, same padding throughout.
    """
    inputs, x = scaled_input(input_shape)

    def conv(x: keras.KerasTensor, n: int, name: str) -> keras.KerasTensor:
        return layers.Conv2D(n, 3, padding="same", activation="relu", kernel_initializer="he_normal", name=name)(x)

    skips = []
    for i, (n, rate) in enumerate(zip(filters, dropouts), start=1):
        x = conv(x, n, f"down{i}_conv1")
        x = layers.Dropout(rate, name=f"down{i}_dropout")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"down{i}_bn")(x)
        x = conv(x, n, f"down{i}_conv2")
        if i < len(filters):
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"down{i}_pool")(x)
    for i, (n, rate) in enumerate(zip(reversed(filters[:-1]), up_dropouts), start=1):
        x = layers.Conv2DTranspose(n, 2, strides=2, padding="same", name=f"up{i}_transpose")(x)
        x = layers.Concatenate(name=f"up{i}_skip")([x, skips.pop()])
        x = conv(x, n, f"up{i}_conv1")
        x = layers.Dropout(rate, name=f"up{i}_dropout")(x)
        x = conv(x, n, f"up{i}_conv2")
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="pixel_probs")(x)
    return close(inputs, outputs, "pets_unet")


SEGMENTATION_MODELS.add("pets_unet")  # outputs (N, H, W, classes)
