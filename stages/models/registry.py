"""The registry of model builders: ``@register`` adds one, ``build`` calls one by name."""

from __future__ import annotations

from collections.abc import Callable

import keras

Shape = tuple[int, int, int]
MODELS: dict[str, Callable[..., keras.Model]] = {}
SEGMENTATION_MODELS: set[str] = set()  # per-pixel outputs (N, H, W, classes), not (N, classes)


def register(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    MODELS[fn.__name__] = fn
    return fn


def build(name: str, input_shape: Shape, num_classes: int, **model_args) -> keras.Model:
    return MODELS[name](tuple(input_shape), num_classes, **model_args)
