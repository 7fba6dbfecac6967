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

from stages.core.errors import ConfigError
from stages.models import blocks, studies  # noqa: F401  (blocks registers resnet_fast)
from stages.models.registry import MODELS, SEGMENTATION_MODELS, Shape, register

if TYPE_CHECKING:
    import keras

    from stages.core.config import Experiment, Params

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


def check_experiment(name: str, exp: Experiment) -> None:
    """The experiment's model is one of its study's builders (or a shared one) and takes every
    ``model_args`` key; ConfigError naming the parameter otherwise."""
    from stages.core.config import PARAMS_FILE, did_you_mean

    where = f"{PARAMS_FILE}: experiments.{name}"
    load_study(exp.study)
    if exp.model not in MODELS:
        load_all()
        if exp.model not in MODELS:
            raise ConfigError(f"{where}.model: unknown model {exp.model!r}{did_you_mean(exp.model, MODELS)}")
    module = MODELS[exp.model].__module__.rsplit(".", 1)[-1]
    if module not in (exp.study, "blocks"):
        raise ConfigError(
            f"{where}.model: {exp.model} is in stages/models/{module}.py; study {exp.study!r} trains models of "
            f"stages/models/{exp.study}.py or blocks.py (its train stage depends on those)"
        )
    if exp.model in SEGMENTATION_MODELS and exp.tta_shift:
        raise ConfigError(
            f"{where}.tta_shift: is for classifiers ({exp.model} predicts masks, which a shifted view "
            "would misplace at the reflected edge); tta_flip works for masks"
        )
    accepted = [p for p in inspect.signature(MODELS[exp.model]).parameters if p not in ("input_shape", "num_classes")]
    if exp.alternating_flip and exp.model in SEGMENTATION_MODELS:
        raise ConfigError(f"{where}.alternating_flip: is for classifiers (segmentation: augment flips image and mask)")
    if exp.alternating_flip and exp.model_args.get("flip", "flip" in accepted):
        raise ConfigError(
            f"{where}.alternating_flip: {exp.model} flips at random too, which would undo the alternation; "
            "set model_args.flip: false"
        )
    for arg in {**exp.model_args, **{k: v for o in exp.profiles.values() for k, v in o.model_args.items()}}:
        if arg not in accepted:
            raise ConfigError(f"{where}.model_args: {exp.model} takes no argument {arg!r}{did_you_mean(arg, accepted)}")


def check(params: Params) -> None:
    """:func:`check_experiment` for every experiment."""
    for name, exp in params.experiments.items():
        check_experiment(name, exp)


__all__ = ["MODELS", "SEGMENTATION_MODELS", "STUDIES", "Shape", "build", "check", "load_all", "load_study", "register"]
