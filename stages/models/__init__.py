"""The model registry: one short Keras function per architecture of the studies.

Every builder takes ``input_shape`` and ``num_classes`` plus its own keyword
arguments (set per experiment under ``model_args`` in params.yaml). Models take raw
0..255 pixel values: the scaling each study used lives inside the model, so a
saved model needs no separate preprocessing.

Layout: ``registry`` (``MODELS``, ``register``), ``blocks`` (what several studies
share) and one module per study (``experiments.<name>.study``), importing only those
two. A train stage imports just its own study's module (:func:`load_study`), so its
code is this package's shared files plus that module, as dvc.yaml declares; adding a
study leaves this file unchanged.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import TYPE_CHECKING

from stages.models import blocks, studies  # noqa: F401  (blocks registers resnet_fast)
from stages.models.registry import MODELS, SEGMENTATION_MODELS, Shape, register

if TYPE_CHECKING:
    import keras

STUDIES = tuple(m.name for m in pkgutil.iter_modules(studies.__path__) if not m.name.startswith("_"))


def load_study(study: str) -> None:
    """Import (and so register) the builders of one study's module."""
    importlib.import_module(f"{studies.__name__}.{study}")


def load_all() -> None:
    for study in STUDIES:
        load_study(study)


def build(name: str, input_shape: Shape, num_classes: int, **model_args) -> keras.Model:
    if name not in MODELS:  # a tool or test naming any model: register them all
        load_all()
    return MODELS[name](tuple(input_shape), num_classes, **model_args)


def module_of(model: str, study: str) -> str | None:
    """The module (a study's, or ``blocks``) that holds builder ``model``, or None for an unknown name.
    ``study``'s module is imported first, the others only when the name is not found (a train stage's
    code is its own study's module)."""
    load_study(study)
    if model not in MODELS:
        load_all()
    return MODELS[model].__module__.rsplit(".", 1)[-1] if model in MODELS else None


def arguments(model: str) -> list[str]:
    """The keyword arguments that builder ``model`` takes (its ``model_args``), besides the input shape and
    class count."""
    return [p for p in inspect.signature(MODELS[model]).parameters if p not in ("input_shape", "num_classes")]


__all__ = [
    "MODELS",
    "SEGMENTATION_MODELS",
    "STUDIES",
    "Shape",
    "arguments",
    "build",
    "load_all",
    "load_study",
    "module_of",
    "register",
]
