"""gray28 (seeds/003): the report's CNN1-4, the tuned model of its ensemble, and the transfer/Inception/ResNet
models. Paddings are the ones that give the report's layer-by-layer shapes and counts."""

from __future__ import annotations

import keras
from keras import layers

from stages.models.blocks import (
    caffe_preprocess,
    class_probs,
    close,
    dense_stack,
    image_input,
    pretrained_base,
    resized_rgb,
    scaled_input,
)
from stages.models.registry import Shape, register


@register
def gray28_cnn1(input_shape: Shape, num_classes: int, dropout: float = 0.5) -> keras.Model:
    """CNN1: one 3x3 conv (valid), pool, dropout, dense 128 (693,317 parameters for 5 classes)."""
    inputs, x = scaled_input(input_shape)
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense1")(x)
    return close(inputs, class_probs(x, num_classes), "gray28_cnn1")


def _gray28_cnn23(input_shape: Shape, num_classes: int, dropout: float, extra_block: bool, name: str) -> keras.Model:
    inputs, x = scaled_input(input_shape)
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
    x = dense_stack(x, (512, 128), (dropout, dropout), bn=True)
    return close(inputs, class_probs(x, num_classes), name)


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
    inputs, x = scaled_input(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(256, 3, activation="relu", name="conv4")(x)
    x = layers.MaxPooling2D(3, name="pool4")(x)
    x = layers.Dropout(dropout, name="dropout4")(x)
    x = layers.Flatten(name="flatten")(x)
    x = dense_stack(x, (256, 256), (dropout, dropout), bn=False)
    return close(inputs, class_probs(x, num_classes), "gray28_cnn4")


@register
def gray28_tuned(
    input_shape: Shape, num_classes: int, dropouts: tuple[float, ...] = (0.132, 0.258, 0.314, 0.127)
) -> keras.Model:
    """The hyperopt-tuned model the ensemble retrains (612,325 parameters for 5 classes)."""
    inputs, x = scaled_input(input_shape)
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
    x = dense_stack(x, (256, 512), tuple(dropouts[2:4]), bn=True)
    return close(inputs, class_probs(x, num_classes), "gray28_tuned")


@register
def gray28_vgg19(
    input_shape: Shape, num_classes: int, input_size: int = 150, weights: str | None = None
) -> keras.Model:
    """Frozen VGG19 features (ImageNet weights in the study) and a one-layer classifier."""
    inputs = image_input(input_shape)
    x = caffe_preprocess(resized_rgb(inputs, input_size))  # vgg19.preprocess_input; the input is raw 0..255
    base = pretrained_base("vgg19", weights, (input_size, input_size, 3))
    base.trainable = False
    x = base(x, training=False)
    x = layers.Flatten(name="flatten")(x)
    return close(inputs, class_probs(x, num_classes), "gray28_vgg19")


@register
def gray28_inception_v3(
    input_shape: Shape, num_classes: int, input_size: int = 150, weights: str | None = None, trainable_layers: int = 10
) -> keras.Model:
    """InceptionV3 (ImageNet weights in the study) with only its last ``trainable_layers`` trained."""
    inputs = image_input(input_shape)
    x = resized_rgb(inputs, input_size)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pm1")(x)  # inception_v3.preprocess_input
    base = pretrained_base("inception_v3", weights, (input_size, input_size, 3))
    for layer in base.layers[: len(base.layers) - trainable_layers]:
        layer.trainable = False
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return close(inputs, class_probs(x, num_classes), "gray28_inception_v3")


@register
def gray28_inception_small(
    input_shape: Shape, num_classes: int, dropout: float = 0.4, width: float = 1.0
) -> keras.Model:
    """A small GoogLeNet-style Inception net from scratch (the report's blog model is not given).

    ``width`` scales every layer's filters (the embedded default trains a narrow one).
    """
    inputs, x = scaled_input(input_shape)

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
    return close(inputs, class_probs(x, num_classes), "gray28_inception_small")


@register
def gray28_resnet50(
    input_shape: Shape, num_classes: int, input_size: int = 64, weights: str | None = None
) -> keras.Model:
    """ResNet50 (from scratch in the study, as Coursera's 64x64 version) with average pooling."""
    inputs = image_input(input_shape)
    x = resized_rgb(inputs, input_size)
    x = layers.Rescaling(1.0 / 255, name="scale_0_1")(x)
    base = pretrained_base("resnet50", weights, (input_size, input_size, 3), pooling="avg")
    x = base(x)
    return close(inputs, class_probs(x, num_classes), "gray28_resnet50")
