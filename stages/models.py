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


# --- gray28 (seeds/003) ----------------------------------------------------------------
# Paddings are the ones that give the report's layer-by-layer shapes and counts.


def _head(x: keras.KerasTensor, units: tuple[int, ...], dropouts: tuple[float, ...], bn: bool) -> keras.KerasTensor:
    for i, (n, rate) in enumerate(zip(units, dropouts), start=1):
        x = layers.Dense(n, activation="relu", name=f"dense{i}")(x)
        if bn:
            x = layers.BatchNormalization(name=f"dense{i}_bn")(x)
        x = layers.Dropout(rate, name=f"dense{i}_dropout")(x)
    return x


@register
def gray28_cnn1(input_shape: Shape, num_classes: int, dropout: float = 0.5) -> keras.Model:
    """CNN1: one 3x3 conv (valid), pool, dropout, dense 128 (693,317 parameters for 5 classes)."""
    inputs, x = _scaled_input(input_shape)
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense1")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="gray28_cnn1")


def _gray28_cnn23(input_shape: Shape, num_classes: int, dropout: float, extra_block: bool, name: str) -> keras.Model:
    inputs, x = _scaled_input(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.BatchNormalization(name="conv2_bn")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = layers.Dropout(dropout, name="dropout3")(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.BatchNormalization(name="conv4_bn")(x)
    x = layers.Dropout(dropout, name="dropout4")(x)
    if extra_block:  # CNN3: one more block, valid padding (14 -> 12)
        x = layers.Conv2D(256, 3, activation="relu", name="conv5")(x)
        x = layers.BatchNormalization(name="conv5_bn")(x)
        x = layers.Dropout(dropout, name="dropout5")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _head(x, (512, 128), (dropout, dropout), bn=True)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name=name)


@register
def gray28_cnn2(input_shape: Shape, num_classes: int, dropout: float = 0.25) -> keras.Model:
    """CNN2: conv 32-32-64-128 (same) with BN, one pool, dense 512-128 with BN (13,017,125)."""
    return _gray28_cnn23(input_shape, num_classes, dropout, extra_block=False, name="gray28_cnn2")


@register
def gray28_cnn3(input_shape: Shape, num_classes: int, dropout: float = 0.25) -> keras.Model:
    """CNN3: CNN2 plus a Conv256 (valid)-BN-Dropout block (19,342,629)."""
    return _gray28_cnn23(input_shape, num_classes, dropout, extra_block=True, name="gray28_cnn3")


@register
def gray28_cnn4(input_shape: Shape, num_classes: int, dropout: float = 0.25) -> keras.Model:
    """CNN4, VGG-like: conv 32-64 (same), pool, conv 128 (same)-256 (valid), pool 3, dense 256-256 (1,503,749)."""
    inputs, x = _scaled_input(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(256, 3, activation="relu", name="conv4")(x)
    x = layers.MaxPooling2D(3, name="pool4")(x)
    x = layers.Dropout(dropout, name="dropout4")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _head(x, (256, 256), (dropout, dropout), bn=False)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="gray28_cnn4")


@register
def gray28_tuned(
    input_shape: Shape, num_classes: int, dropouts: tuple[float, ...] = (0.132, 0.258, 0.314, 0.127)
) -> keras.Model:
    """The hyperopt-tuned model the ensemble retrains (612,325 parameters for 5 classes)."""
    inputs, x = _scaled_input(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Dropout(dropouts[0], name="dropout2")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv3")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv4")(x)
    x = layers.BatchNormalization(name="conv4_bn")(x)
    x = layers.MaxPooling2D(2, name="pool4")(x)
    x = layers.Dropout(dropouts[1], name="dropout4")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _head(x, (256, 512), tuple(dropouts[2:4]), bn=True)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="gray28_tuned")


@keras.saving.register_keras_serializable(package="stages")
class ReverseChannels(layers.Layer):
    """RGB <-> BGR (the "caffe" preprocessing of VGG)."""

    def call(self, x):
        return keras.ops.flip(x, axis=-1)


def _resized_rgb(inputs: keras.KerasTensor, input_size: int) -> keras.KerasTensor:
    """Resize inside the model (the study: 150x150) and stack a gray channel to three."""
    x = layers.Resizing(input_size, input_size, name="resize")(inputs)
    if inputs.shape[-1] == 1:
        x = layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    return x


@register
def gray28_vgg19(
    input_shape: Shape, num_classes: int, input_size: int = 150, weights: str | None = None
) -> keras.Model:
    """Frozen VGG19 features (ImageNet weights in the study) and a one-layer classifier."""
    from stages.weights import resolve

    inputs = keras.Input(shape=input_shape, name="image")
    x = _resized_rgb(inputs, input_size)
    # vgg19.preprocess_input ("caffe"): RGB -> BGR, minus the ImageNet means; the input is raw 0..255
    x = ReverseChannels(name="rgb_to_bgr")(x)
    x = layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0], name="caffe_mean")(x)
    base = keras.applications.VGG19(
        include_top=False, weights=resolve(weights, "vgg19"), input_shape=(input_size, input_size, 3)
    )
    base.trainable = False
    x = base(x, training=False)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="gray28_vgg19")


@register
def gray28_inception_v3(
    input_shape: Shape, num_classes: int, input_size: int = 150, weights: str | None = None, trainable_layers: int = 10
) -> keras.Model:
    """InceptionV3 (ImageNet weights in the study) with only its last ``trainable_layers`` trained."""
    from stages.weights import resolve

    inputs = keras.Input(shape=input_shape, name="image")
    x = _resized_rgb(inputs, input_size)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pm1")(x)  # inception_v3.preprocess_input
    base = keras.applications.InceptionV3(
        include_top=False, weights=resolve(weights, "inception_v3"), input_shape=(input_size, input_size, 3)
    )
    for layer in base.layers[: len(base.layers) - trainable_layers]:
        layer.trainable = False
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="gray28_inception_v3")


@register
def gray28_inception_small(
    input_shape: Shape, num_classes: int, dropout: float = 0.4, width: float = 1.0
) -> keras.Model:
    """A small GoogLeNet-style Inception net from scratch (the report's blog model is not given).

    ``width`` scales every layer's filters (the embedded default trains a narrow one).
    """
    inputs, x = _scaled_input(input_shape)

    def conv(x: keras.KerasTensor, filters: int, size: int, name: str) -> keras.KerasTensor:
        filters = max(4, round(filters * width))
        return layers.Conv2D(filters, size, padding="same", activation="relu", name=name)(x)

    def module(x: keras.KerasTensor, f1: int, f3: tuple[int, int], f5: tuple[int, int], fp: int, name: str):
        b1 = conv(x, f1, 1, f"{name}_1x1")
        b3 = conv(conv(x, f3[0], 1, f"{name}_3x3_reduce"), f3[1], 3, f"{name}_3x3")
        b5 = conv(conv(x, f5[0], 1, f"{name}_5x5_reduce"), f5[1], 5, f"{name}_5x5")
        bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
        bp = conv(bp, fp, 1, f"{name}_pool_proj")
        return layers.Concatenate(name=f"{name}_concat")([b1, b3, b5, bp])

    x = conv(x, 64, 3, "stem_conv")
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = module(x, 64, (96, 128), (16, 32), 32, "inception3a")
    x = module(x, 128, (128, 192), (32, 96), 64, "inception3b")
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = module(x, 192, (96, 208), (16, 48), 64, "inception4a")
    x = module(x, 160, (112, 224), (24, 64), 64, "inception4b")
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="gray28_inception_small")


@register
def gray28_resnet50(
    input_shape: Shape, num_classes: int, input_size: int = 64, weights: str | None = None
) -> keras.Model:
    """ResNet50 (from scratch in the study, as Coursera's 64x64 version) with average pooling."""
    from stages.weights import resolve

    inputs = keras.Input(shape=input_shape, name="image")
    x = _resized_rgb(inputs, input_size)
    x = layers.Rescaling(1.0 / 255, name="scale_0_1")(x)
    base = keras.applications.ResNet50(
        include_top=False, weights=resolve(weights, "resnet50"), input_shape=(input_size, input_size, 3), pooling="avg"
    )
    x = base(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="gray28_resnet50")


# --- pets-unet (seeds/000 part 1): segmentation ---------------------------------------------

SEGMENTATION_MODELS = {"pets_unet"}  # per-pixel outputs (N, H, W, classes), not (N, classes)


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
    Output: 1x1 conv, ``num_classes`` filters, softmax per pixel. ReLU, same padding throughout.
    """
    inputs, x = _scaled_input(input_shape)

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
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="pixel_probs")(x)
    return keras.Model(inputs, outputs, name="pets_unet")


# --- the project's own variants -------------------------------------------------------


def _standardized_flip_shift_input(
    input_shape: Shape, augment: bool, shift: float
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The fast CIFAR nets' input: per-channel standardisation (adapted on the training images), then,
    when ``augment``, random left-right flips and shifts of up to ``shift`` of the size (reflected)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Normalization(axis=-1, name="standardize")(inputs)
    if augment:
        x = layers.RandomFlip("horizontal", name="aug_flip")(x)
        x = layers.RandomTranslation(shift, shift, fill_mode="reflect", name="aug_shift")(x)
    return inputs, x


@register
def resnet_fast(
    input_shape: Shape,
    num_classes: int,
    widths: tuple[int, ...] = (32, 64, 128),
    augment: bool = True,
    shift: float = 0.125,
    activation: str = "gelu",
) -> keras.Model:
    """A small residual net for fast CIFAR-size training (in the spirit of airbench).

    Each stage: conv -> max-pool -> BN-GELU, then a residual pair of 3x3 convs; global
    max pooling and a softmax head.
    """
    inputs, x = _standardized_flip_shift_input(input_shape, augment, shift)

    def conv_bn(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.Activation(activation, name=f"{name}_{activation}")(x)

    x = conv_bn(x, widths[0], "stem")
    for i, filters in enumerate(widths, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{i}_conv")(x)
        x = layers.MaxPooling2D(2, name=f"stage{i}_pool")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"stage{i}_bn")(x)
        x = layers.Activation(activation, name=f"stage{i}_{activation}")(x)
        shortcut = x
        x = conv_bn(x, filters, f"stage{i}_res1")
        x = conv_bn(x, filters, f"stage{i}_res2")
        x = layers.Add(name=f"stage{i}_add")([x, shortcut])
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="resnet_fast")


@register
def airbench(
    input_shape: Shape,
    num_classes: int,
    widths: tuple[int, ...] = (64, 256, 256),
    augment: bool = True,
    shift: float = 0.0625,
    activation: str = "relu",
    temperature: float = 1 / 9,
) -> keras.Model:
    """airbench94's layout (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"): a 2x2 stem conv, then
    per width a block conv3x3 -> max-pool -> BN -> act -> conv3x3 -> BN -> act; a global max-pool
    and a bias-free linear head whose logits are scaled by ``temperature``.

    Kept from airbench: the narrow-then-wide widths (most of the capacity sits at 8x8 and 4x4, where
    it is cheap), batch-norm without a learned scale, the logit temperature. Left out: the frozen
    patch-whitening stem init, lookahead and multi-crop TTA (the experiment sets flip TTA).
    """
    inputs, x = _standardized_flip_shift_input(input_shape, augment, shift)
    x = layers.Conv2D(24, 2, name="stem")(x)  # 2x2 patches, airbench's whitening stem without its init
    x = layers.Activation(activation, name=f"stem_{activation}")(x)

    def bn_act(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        x = layers.BatchNormalization(momentum=0.9, scale=False, name=f"{name}_bn")(x)
        return layers.Activation(activation, name=f"{name}_{activation}")(x)

    for i, filters in enumerate(widths, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv1")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = bn_act(x, f"block{i}_conv1")
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_conv2")(x)
        x = bn_act(x, f"block{i}_conv2")
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = layers.Dense(num_classes, use_bias=False, name="logits")(x)
    x = layers.Rescaling(temperature, name="temperature")(x)
    # float32 softmax: under a mixed-precision policy the probabilities keep full precision
    outputs = layers.Activation("softmax", dtype="float32", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="airbench")


# --- cifar-rgb transfer learning (seeds/002) and natural (seeds/004) -------------------------


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
    from stages.weights import resolve

    inputs = keras.Input(shape=input_shape, name="image")
    x = _augment(inputs, rotation_deg=15, shift=0.1) if augment else inputs  # factors not stated
    x = _resized_rgb(x, input_size)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pm1")(x)  # inception_resnet_v2.preprocess_input
    base = keras.applications.InceptionResNetV2(
        include_top=False, weights=resolve(weights, "inception_resnet_v2"), input_shape=(input_size, input_size, 3)
    )
    for layer in base.layers[: len(base.layers) - trainable_layers] if trainable_layers else base.layers:
        layer.trainable = False
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = _head(x, (512, 128), dropouts, bn=True)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="cifar_rgb_transfer")


def _natural_augment(x: keras.KerasTensor) -> keras.KerasTensor:
    """seeds/004: RandomFlip("horizontal_and_vertical") then RandomRotation(0.4), active in fit() only."""
    x = layers.RandomFlip("horizontal_and_vertical", name="aug_flip")(x)
    return layers.RandomRotation(0.4, name="aug_rotate")(x)


@register
def natural_resnet50(input_shape: Shape, num_classes: int, weights: str | None = None) -> keras.Model:
    """Augmentation -> ResNet50 (no top, trainable, at the image size: 50x50 in the study) -> Flatten
    -> Dense softmax: 23,653,256 parameters for 8 classes at 50x50.

    ``keras.applications.resnet50.preprocess_input`` ("caffe": RGB -> BGR, minus the ImageNet
    means) is inside the model, as two layers, so the model takes raw 0..255 pixels.
    """
    from stages.weights import resolve

    inputs = keras.Input(shape=input_shape, name="image")
    x = _natural_augment(inputs)
    x = ReverseChannels(name="rgb_to_bgr")(x)
    x = layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0], name="caffe_mean")(x)
    base = keras.applications.ResNet50(include_top=False, weights=resolve(weights, "resnet50"), input_shape=input_shape)
    x = base(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="natural_resnet50")


@register
def natural_light(
    input_shape: Shape,
    num_classes: int,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    convs_per_block: int = 2,
    dropout: float = 0.3,
) -> keras.Model:
    """The project's light variant for natural images: the study's augmentation, a 3x3 conv stem,
    then blocks of ``convs_per_block`` depthwise-separable convs (BN, ReLU; max-pool before each
    block), global average pooling and a linear head. At 50x50, 8 classes: 0.15 M parameters
    (0.6 % of the ResNet50's) and ~5 % of its FLOPs."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = _natural_augment(inputs)
    x = layers.Rescaling(1.0 / 255, name="scale_0_1")(x)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for i, filters in enumerate(widths[1:], start=1):
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        for j in range(1, convs_per_block + 1):
            x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"block{i}_sepconv{j}")(x)
            x = layers.BatchNormalization(name=f"block{i}_bn{j}")(x)
            x = layers.Activation("relu", name=f"block{i}_relu{j}")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="class_probs")(x)
    return keras.Model(inputs, outputs, name="natural_light")
