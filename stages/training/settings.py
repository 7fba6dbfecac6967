"""One resolved experiment: exactly what a run of it uses, decided in one place.

params.yaml sets an experiment in four layers: its study's ``study_defaults`` entry, the experiment, the
experiment's override for the active profile, and the profile's caps (and ``accelerator`` for
precision). :func:`resolve` merges them into a flat, frozen :class:`Run`; training, its resume check, and
the ``record`` and ``compare`` tools read that and nothing else of the experiment. Its validators also
hold the checks that need the model registry (the model exists for the study and takes every
``model_args`` key), so that every error is one line naming params.yaml and the key of the layer that set
the value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator

from stages import models
from stages.core import config
from stages.core.errors import ConfigError


class SettingError(ValueError):
    """A resolved setting that the registry refuses; ``key`` is its path below the experiment."""

    def __init__(self, key: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.key = key


class Run(BaseModel):
    """Everything a run of one experiment uses, caps applied and overrides merged."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    experiment: str
    study: str
    dataset: str
    model: str
    model_args: dict[str, Any]
    epochs: StrictInt = Field(gt=0)  # capped by the profile's max_epochs
    batch_size: StrictInt = Field(gt=0)  # capped by the profile's max_batch_size
    max_train_examples: StrictInt | None = Field(gt=0)  # train on the first N prepared train images
    optimizer: config.Optimizer  # the profile's learning_rate override applied
    loss: config.Loss
    label_smoothing: StrictFloat
    tta_flip: bool
    tta_shift: StrictInt
    track_test: bool
    augment: bool
    alternating_flip: bool
    augment_zoom: StrictFloat
    callbacks: config.Callbacks
    fine_tune: config.FineTune | None  # its epochs capped by the profile's max_epochs too
    seed: config.Seed
    resume: bool
    run_eagerly: bool
    mixed_precision: config.Precision  # the profile's, else the experiment's, else the accelerator's
    jit_compile: Literal["auto"] | bool
    batchnorm_momentum: StrictFloat | None  # the profile's, set on every batch-norm layer; None: each model's own

    @model_validator(mode="after")
    def _model_takes_its_arguments(self) -> Run:
        accepted = model_parameters(self.model, self.study)
        segmentation = self.model in models.SEGMENTATION_MODELS
        if segmentation and self.tta_shift:
            raise SettingError(
                ("tta_shift",),
                f"is for classifiers ({self.model} predicts masks, which a shifted view would misplace at the "
                "reflected edge); tta_flip works for masks",
            )
        if self.alternating_flip and segmentation:
            raise SettingError(("alternating_flip",), "is for classifiers (segmentation: augment flips image and mask)")
        if self.alternating_flip and self.model_args.get("flip", "flip" in accepted):
            raise SettingError(
                ("alternating_flip",),
                f"{self.model} flips at random too, which would undo the alternation; set model_args.flip: false",
            )
        for arg in self.model_args:
            if arg not in accepted:
                raise SettingError(
                    ("model_args", arg),
                    f"{self.model} takes no argument {arg!r}{config.did_you_mean(arg, accepted)}",
                )
        return self


def model_parameters(model: str, study: str) -> list[str]:
    """The arguments that ``model`` takes (besides the input shape and class count); SettingError when it
    is not one of ``study``'s builders or a shared one (its train stage depends on those only)."""
    module = models.module_of(model, study)
    if module is None:
        raise SettingError(("model",), f"unknown model {model!r}{config.did_you_mean(model, models.MODELS)}")
    if module not in (study, "blocks"):
        raise SettingError(
            ("model",),
            f"{model} is in stages/models/{module}.py; study {study!r} trains models of "
            f"stages/models/{study}.py or blocks.py (its train stage depends on those)",
        )
    return models.arguments(model)


def resolve(params: config.Params, name: str, *, seed: int | None = None) -> Run:
    """Experiment ``name`` as a run under the active profile uses it (``seed``: another run of it, an
    ensemble member); ConfigError in one line naming params.yaml and the key that set a refused value."""
    settings = config.merge_experiment(params, name, seed=seed)
    try:
        return Run.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(_refusal(exc, params, name)) from None


def _refusal(exc: ValidationError, params: config.Params, name: str) -> str:
    """The one line for a resolved setting refused: the key named in the layer that set it."""
    first = exc.errors()[0]
    error = (first.get("ctx") or {}).get("error")
    key = error.key if isinstance(error, SettingError) else tuple(map(str, first["loc"]))
    message = str(error) if isinstance(error, SettingError) else first["msg"]
    over = params.experiments[name].profiles.get(params.profile)
    in_override = over is not None and (
        key[0] in over.model_fields_set if key[0] != "model_args" else key[-1] in over.model_args
    )
    layer = f"experiments.{name}.profiles.{params.profile}" if in_override else f"experiments.{name}"
    return f"{config.PARAMS_FILE}: {layer}.{key[0]}: {message}"
