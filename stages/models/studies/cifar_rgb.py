"""cifar-rgb (seeds/002): the report's own CNN and its transfer model, and the project's airbench variant."""

from __future__ import annotations

import keras
from keras import layers, regularizers

from stages.models.blocks import (
    WHITEN_LAYER,
    class_probs,
    close,
    dense_stack,
    dirac_init,
    image_input,
    pretrained_base,
    resized_rgb,
    standardized_flip_shift_input,
)
from stages.models.registry import Shape, register


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
    inputs = image_input(input_shape)
    # Per-channel standardisation; training/recipe.py adapts its mean/variance on the training
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
    return close(inputs, class_probs(x, num_classes), "cifar_rgb_cnn")


@register
def cifar_rgb_transfer(
    input_shape: Shape,
    num_classes: int,
    input_size: int = 299,
    weights: str | None = None,
    trainable_layers: int = 0,
    dropouts: tuple[float, float] = (0.5, 0.3),
    augment: bool = True,
) -> keras.Model:
    """InceptionResNetV2 (ImageNet weights in the study) on inputs resized inside the model, and a
    GlobalAveragePooling -> Dense 512-BN-Dropout -> Dense 128-BN-Dropout head (855,178 trainable
    parameters for 10 classes with the base frozen).

    ``trainable_layers``: fine-tuning, the base's last N layers train too (0: all frozen, the
    study's). The base always runs in inference mode (its batch-norm statistics stay fixed).
    ``input_size``: the study's 299; 75 is the smallest InceptionResNetV2 accepts.
    """
    inputs = image_input(input_shape)
    x = _augment(inputs, rotation_deg=15, shift=0.1) if augment else inputs  # factors not stated
    x = resized_rgb(x, input_size)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pm1")(x)  # inception_resnet_v2.preprocess_input
    base = pretrained_base("inception_resnet_v2", weights, (input_size, input_size, 3))
    for layer in base.layers[: len(base.layers) - trainable_layers] if trainable_layers else base.layers:
        layer.trainable = False
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = dense_stack(x, (512, 128), dropouts, bn=True)
    return close(inputs, class_probs(x, num_classes), "cifar_rgb_transfer")


@register
def airbench(
    input_shape: Shape,
    num_classes: int,
    widths: tuple[int, ...] = (64, 256, 256),
    augment: bool = True,
    shift: float = 0.0625,
    activation: str = "relu",
    temperature: float = 1 / 9,
    whiten: bool = False,
    dirac: bool = False,
    flip: bool = True,
    whole_pixel_shifts: bool = False,
    batchnorm_momentum: float = 0.9,
) -> keras.Model:
    """airbench94's layout (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"): a 2x2 stem conv, then
    per width a block conv3x3 -> max-pool -> BN -> act -> conv3x3 -> BN -> act; a global max-pool
    and a bias-free linear head whose logits are scaled by ``temperature``.

    Kept from airbench: the narrow-then-wide widths (most of the capacity sits at 8x8 and 4x4, where
    it is cheap), batch-norm without a learned scale, the logit temperature. ``whiten``: the stem is
    airbench's frozen patch-whitening conv (no bias; training sets its filters from the training
    images, ``init_whitening``); ``dirac``: the block convs start as partial identities (:func:`dirac_init`).
    ``flip: false`` leaves flipping to the data pipeline (``alternating_flip``); ``whole_pixel_shifts``
    rounds the random shifts to whole pixels, as airbench's crops; airbench's batch-norm momentum is 0.6.
    The rest of its recipe is training options (docs/airbench.md): lookahead, bias learning-rate scale,
    triangle schedule, alternating flips, multi-crop TTA.
    """
    inputs, x = standardized_flip_shift_input(input_shape, augment, shift, flip, whole_pixel_shifts)
    if whiten:  # 2x2 patches x 3 channels: 12 eigenvectors and their negatives
        x = layers.Conv2D(24, 2, use_bias=False, trainable=False, name=WHITEN_LAYER)(x)
    else:
        x = layers.Conv2D(24, 2, name="stem")(x)  # 2x2 patches, airbench's stem shape, learned from scratch
    x = layers.Activation(activation, name=f"stem_{activation}")(x)

    def bn_act(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        x = layers.BatchNormalization(momentum=batchnorm_momentum, scale=False, name=f"{name}_bn")(x)
        return layers.Activation(activation, name=f"{name}_{activation}")(x)

    def conv(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
        layer = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)
        x = layer(x)
        if dirac:
            dirac_init(layer)
        return x

    for i, filters in enumerate(widths, start=1):
        x = conv(x, filters, f"block{i}_conv1")
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = bn_act(x, f"block{i}_conv1")
        x = conv(x, filters, f"block{i}_conv2")
        x = bn_act(x, f"block{i}_conv2")
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = layers.Dense(num_classes, use_bias=False, name="logits")(x)
    x = layers.Rescaling(temperature, name="temperature")(x)
    # float32 softmax: under a mixed-precision policy the probabilities keep full precision
    outputs = layers.Activation("softmax", dtype="float32", name="class_probs")(x)
    return close(inputs, outputs, "airbench")
