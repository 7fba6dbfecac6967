"""Building blocks that several studies share: inputs, preprocessing, heads, the model's closing, and
``resnet_fast`` (the project's variant for two studies).

Built-in Keras layers only, so a saved model loads with plain ``keras.models.load_model``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from stages.models.registry import Shape, register
from stages.models.weights import resolve

# The Keras Applications bases of the studies, by their name in stages.models.weights
BASES = {
    "inception_resnet_v2": keras.applications.InceptionResNetV2,
    "inception_v3": keras.applications.InceptionV3,
    "resnet50": keras.applications.ResNet50,
    "vgg19": keras.applications.VGG19,
}


#: The name of a frozen patch-whitening stem conv, whose filters training sets from the training images
#: (stages/training/recipe.py: init_whitening) before the first step.
WHITEN_LAYER = "whiten"


def dirac_init(conv: layers.Conv2D) -> None:
    """airbench94's partial-identity init: of a built conv's filters, the first ``min(in, out)`` pass their
    own input channel through unchanged (a centred 1 on it, 0 elsewhere); the others keep their init."""
    kernel = keras.ops.convert_to_numpy(conv.kernel).copy()
    kh, kw, channels_in, channels_out = kernel.shape
    n = min(channels_in, channels_out)
    kernel[:, :, :, :n] = 0
    kernel[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1
    conv.kernel.assign(kernel)


def image_input(input_shape: Shape) -> keras.KerasTensor:
    """The model input: raw 0..255 pixels."""
    return keras.Input(shape=input_shape, name="image")


def scaled_input(input_shape: Shape) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The input and the pixels scaled to 0..1."""
    inputs = image_input(input_shape)
    return inputs, layers.Rescaling(1.0 / 255, name="scale_0_1")(inputs)


def standardized_flip_shift_input(
    input_shape: Shape, augment: bool, shift: float, flip: bool = True, whole_pixels: bool = False
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The fast CIFAR nets' input: per-channel standardisation (adapted on the training images), then,
    when ``augment``, random left-right flips (unless ``flip`` is off: the data pipeline flips) and
    shifts of up to ``shift`` of the size (reflected; ``whole_pixels``: rounded to whole pixels, as
    airbench's crops, instead of interpolated)."""
    inputs = image_input(input_shape)
    x = layers.Normalization(axis=-1, name="standardize")(inputs)
    if augment and flip:
        x = layers.RandomFlip("horizontal", name="aug_flip")(x)
    if augment:
        interpolation = "nearest" if whole_pixels else "bilinear"
        x = layers.RandomTranslation(shift, shift, fill_mode="reflect", interpolation=interpolation, name="aug_shift")(
            x
        )
    return inputs, x


def resized_rgb(inputs: keras.KerasTensor, input_size: int) -> keras.KerasTensor:
    """Resize inside the model (e.g. to a pretrained base's size) and stack a gray channel to three."""
    x = layers.Resizing(input_size, input_size, name="resize")(inputs)
    if inputs.shape[-1] == 1:
        x = layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    return x


def rgb_to_bgr(x: keras.KerasTensor, name: str = "rgb_to_bgr") -> keras.KerasTensor:
    """Reverse the three channels (no weights): move them next to a spatial axis, crop out each,
    concatenate them in reverse order, move them back. The last layer is named ``name``."""
    x = layers.Permute((1, 3, 2), name=f"{name}_swap")(x)  # (H, W, C) -> (H, C, W)
    crops = {"b": (2, 0), "g": (1, 1), "r": (0, 2)}  # (columns cut before, after): one channel left
    channels = [layers.Cropping2D(((0, 0), cut), name=f"{name}_{k}")(x) for k, cut in crops.items()]
    x = layers.Concatenate(axis=2, name=f"{name}_concat")(channels)
    return layers.Permute((1, 3, 2), name=name)(x)


def caffe_preprocess(x: keras.KerasTensor) -> keras.KerasTensor:
    """``preprocess_input`` of VGG and ResNet50 ("caffe") on raw 0..255 RGB: to BGR, minus the ImageNet means."""
    x = rgb_to_bgr(x)
    return layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0], name="caffe_mean")(x)


def pretrained_base(arch: str, weights: str | None, input_shape: Shape, **kwargs) -> keras.Model:
    """A Keras Applications base without its top. ``weights``: "imagenet", None (random) or a file,
    checked first by stages.models.weights.resolve (an ImageNet file missing offline fails in one line)."""
    return BASES[arch](include_top=False, weights=resolve(weights, arch), input_shape=input_shape, **kwargs)


def dense_stack(
    x: keras.KerasTensor, units: tuple[int, ...], dropouts: tuple[float, ...], bn: bool
) -> keras.KerasTensor:
    """Hidden dense layers ``dense1..``: ReLU, optional batch-norm, dropout."""
    for i, (n, rate) in enumerate(zip(units, dropouts), start=1):
        x = layers.Dense(n, activation="relu", name=f"dense{i}")(x)
        if bn:
            x = layers.BatchNormalization(name=f"dense{i}_bn")(x)
        x = layers.Dropout(rate, name=f"dense{i}_dropout")(x)
    return x


def class_probs(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """The classifier's output layer ``class_probs``: Dense + softmax, in float32 under mixed precision."""
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="class_probs")(x)


def close(inputs: keras.KerasTensor, outputs: keras.KerasTensor, name: str) -> keras.Model:
    """The model from ``inputs`` to ``outputs``, which must be float32 probabilities under any policy."""
    if outputs.dtype != "float32":
        raise TypeError(f"model {name!r}: the output is {outputs.dtype}; compute the softmax in float32")
    return keras.Model(inputs, outputs, name=name)


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
    inputs, x = standardized_flip_shift_input(input_shape, augment, shift)

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
    return close(inputs, class_probs(x, num_classes), "resnet_fast")
