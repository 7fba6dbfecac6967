"""natural (seeds/004): the study's ResNet50 and the project's light variant."""

from __future__ import annotations

import keras
from keras import layers

from stages.models.blocks import caffe_preprocess, class_probs, close, image_input, pretrained_base
from stages.models.registry import Shape, register


def _augment(x: keras.KerasTensor) -> keras.KerasTensor:
    """seeds/004: RandomFlip("horizontal_and_vertical") then RandomRotation(0.4), active in fit() only."""
    x = layers.RandomFlip("horizontal_and_vertical", name="aug_flip")(x)
    return layers.RandomRotation(0.4, name="aug_rotate")(x)


@register
def natural_resnet50(input_shape: Shape, num_classes: int, weights: str | None = None) -> keras.Model:
    """Augmentation -> ResNet50 (no top, trainable, at the image size: 50x50 in the study) -> Flatten
    -> Dense softmax: 23,653,256 parameters for 8 classes at 50x50.

    ``keras.applications.resnet50.preprocess_input`` ("caffe": RGB -> BGR, minus the ImageNet
    means) is inside the model, as weight-free layers, so the model takes raw 0..255 pixels.
    """
    inputs = image_input(input_shape)
    x = caffe_preprocess(_augment(inputs))
    base = pretrained_base("resnet50", weights, input_shape)
    x = base(x)
    x = layers.Flatten(name="flatten")(x)
    return close(inputs, class_probs(x, num_classes), "natural_resnet50")


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
    inputs = image_input(input_shape)
    x = _augment(inputs)
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
    return close(inputs, class_probs(x, num_classes), "natural_light")
