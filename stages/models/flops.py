"""Analytic FLOP counts of Keras models (multiply-adds x 2), for compute comparisons.

Counts the layers that dominate a CNN's cost: convolutions (plain, depthwise, separable,
transposed) and dense layers, recursing into nested models (Keras Applications backbones).
Element-wise work (activations, batch-norm, pooling) is left out, as is usual.
"""

from __future__ import annotations

import math

import keras
from keras import layers


def _out_hw(layer: layers.Layer) -> int:
    shape = layer.output.shape
    return math.prod(int(d) for d in shape[1:-1])


def layer_flops(layer: layers.Layer) -> int:
    if isinstance(layer, keras.Model):
        return model_flops(layer)
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * kh * kw * int(layer.input.shape[-1]) * layer.depth_multiplier * _out_hw(layer)
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        c_in = int(layer.input.shape[-1])
        depthwise = 2 * kh * kw * c_in * layer.depth_multiplier * _out_hw(layer)
        return depthwise + 2 * c_in * layer.depth_multiplier * layer.filters * _out_hw(layer)
    if isinstance(layer, layers.Conv2DTranspose):
        kh, kw = layer.kernel_size
        in_hw = math.prod(int(d) for d in layer.input.shape[1:-1])
        return 2 * kh * kw * int(layer.input.shape[-1]) * layer.filters * in_hw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        return 2 * kh * kw * int(layer.input.shape[-1]) // layer.groups * layer.filters * _out_hw(layer)
    if isinstance(layer, layers.Dense):
        positions = math.prod(int(d) for d in layer.input.shape[1:-1]) or 1
        return 2 * int(layer.input.shape[-1]) * layer.units * positions
    return 0


def model_flops(model: keras.Model) -> int:
    """Forward-pass FLOPs for one input image (training costs about three times this)."""
    return sum(layer_flops(layer) for layer in model.layers)
