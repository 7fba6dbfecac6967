"""params.yaml: load, validate against a schema, and resolve the active profile.

Every stage calls :func:`load` first, so a bad parameter stops the pipeline with a
one-line message before any download or training starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator

from stages.core.errors import ConfigError

PARAMS_FILE = Path("params.yaml")
STUDIES_FILE = Path("studies.yaml")
STUDY_MODELS = Path(__file__).parents[1] / "models" / "studies"  # one module per study: a dep of its train stages

PositiveInt = Field(gt=0)
# the widest seed every consumer takes: numpy's legacy seeding (keras.utils.set_random_seed) and
# scikit-learn's random_state refuse anything outside 0..2**32 - 1
MAX_SEED = 2**32 - 1
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]


class Strict(BaseModel):
    # lax types, but numbers are StrictInt/StrictFloat: lax pydantic takes YAML's `true` as 1 (epochs: true).
    # No float setting may be .inf or .nan: `gt=0` lets inf through, and a run trained at an infinite
    # learning rate ends in NaN weights
    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)


# a Keras dtype policy, or auto (GPU-capability based) / auto_cpu_bf16 (also bf16 on CPUs with AMX or AVX512_BF16)
Precision = Literal["auto", "auto_cpu_bf16", "float32", "mixed_float16", "mixed_bfloat16"]


# sparse_crossentropy_dice: segmentation, cross-entropy plus a soft Dice term (mean over classes)
Loss = Literal["sparse_categorical_crossentropy", "categorical_crossentropy", "sparse_crossentropy_dice"]


class Profile(Strict):
    max_epochs: StrictInt | None = Field(default=None, gt=0)
    max_batch_size: StrictInt | None = Field(default=None, gt=0)
    # prepare: a stratified sample of at most this many of a source's training images, before the
    # validation split (train and validation together); an experiment's max_train_examples is a later slice
    max_trainval_examples: StrictInt | None = Field(default=None, gt=0)
    batchnorm_momentum: StrictFloat | None = Field(default=None, gt=0, lt=1)
    # over every experiment's and the accelerator's setting: the embedded default computes in float32 on
    # every machine, so that its numbers agree across CPU kinds (bfloat16 is a speed choice of real runs)
    mixed_precision: Precision | None = None


class DataSettings(Strict):
    mirror: str | None = None
    max_extract_bytes: StrictInt = Field(default=8 * 1024**3, gt=0)
    download_retries: StrictInt = Field(default=4, ge=0)
    download_timeout: StrictFloat = Field(default=60.0, gt=0)


class Accelerator(Strict):
    """GPU settings; ``auto`` leaves a CPU run in plain float32 without XLA."""

    # auto: bfloat16 on GPUs that have it (compute capability 8+), float16 with loss scaling on older ones;
    # auto_cpu_bf16: the same, and bfloat16 on CPUs with AMX or AVX512_BF16 too (float32 on other CPUs)
    mixed_precision: Precision = "auto"
    jit_compile: Literal["auto"] | bool = "auto"  # auto: Keras' choice, XLA on a GPU when every layer supports it


class RemoteFile(Strict):
    url: str | list[str] = Field(min_length=1)  # several: mirrors, tried in order
    md5: str | None = None
    sha256: str | None = None
    size: StrictInt | None = Field(default=None, gt=0)

    @property
    def urls(self) -> list[str]:
        return [self.url] if isinstance(self.url, str) else list(self.url)

    @property
    def name(self) -> str:
        """The official file name: the last part of the first URL."""
        return PurePosixPath(urlparse(self.urls[0]).path).name


# the raw layouts `prepare` reads (stages/sources/formats.py has a reader for each; a test checks they agree)
Format = Literal["cifar_python", "oxford_pets", "mnist_idx", "label_csv", "split_image_folder", "image_folder"]


class Source(Strict):
    files: list[RemoteFile] = Field(min_length=1)
    format: Format  # the layout of the official files, or of the local copy in `path`
    # a local copy: one file, a list of files, or a folder (the archives, or already extracted)
    path: str | list[str] | None = None
    kaggle: str | None = None  # a Kaggle dataset slug, downloaded with Kaggle's client
    generator: str  # which embedded generator makes sample data
    generated: dict[str, Any] = {}  # its options; `format:` when it makes another layout than `format`

    @model_validator(mode="before")
    @classmethod
    def _format_stated(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "format" not in raw:
            raise ValueError(f"no format: set format to one of {', '.join(get_args(Format))}")
        return raw

    @model_validator(mode="after")
    def _generated_format(self) -> Source:
        fmt = self.generated.get("format", self.format)
        if fmt not in get_args(Format):
            raise ValueError(f"generated.format: unknown format {fmt!r}{did_you_mean(fmt, get_args(Format))}")
        return self

    def layout(self, profile: str) -> Format:
        """The format a run reads: the generator's when the embedded profile generated the data."""
        return self.generated.get("format", self.format) if profile == "embedded" else self.format


class Dataset(Strict):
    source: str
    task: Literal["classification", "segmentation"] = "classification"
    color: Literal["rgb", "gray"] = "rgb"
    image_size: list[Annotated[StrictInt, Field(gt=0)]] | None = Field(default=None, min_length=2, max_length=2)
    classes: list[StrictInt] | None = None  # keep (and renumber) these source classes
    class_map: dict[StrictInt, StrictInt] | None = None  # or map source class -> study class
    pth: str | None = None  # a .pth file (a pickle, read without executing it) replaces the source
    val_fraction: StrictFloat = Field(default=0.1, ge=0, lt=1)
    test_fraction: StrictFloat = Field(default=0.0, ge=0, lt=1)  # split off train when a source has no test set
    options: dict[str, Any] = {}


class Lookahead(Strict):
    """airbench94's lookahead: from epoch ``start_epoch`` on, every ``every_steps`` steps the weights move
    into their moving average and are replaced by it; the average's momentum grows over training as
    ``decay ** every_steps * (step / total steps) ** power``, so it moves fast early and averages hard late."""

    start_epoch: StrictInt = Field(default=3, ge=0)
    every_steps: StrictInt = Field(default=5, gt=0)
    decay: StrictFloat = Field(default=0.95, gt=0, lt=1)
    power: StrictFloat = Field(default=3.0, ge=0)


class Optimizer(Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: StrictFloat = Field(default=1e-3, gt=0)
    weight_decay: StrictFloat | None = Field(default=None, ge=0)
    momentum: StrictFloat | None = Field(default=None, ge=0, lt=1)
    # triangle: airbench94's, linear from 0.2x up to the rate at 23 % of the steps, then down to 0.07x
    schedule: Literal["constant", "onecycle", "cosine", "triangle"] = "constant"
    # an exponential moving average of the weights (Keras' use_ema), swapped in when training ends.
    # None: the last step's weights
    ema_momentum: StrictFloat | None = Field(default=None, gt=0, lt=1)
    lookahead: Lookahead | None = None
    # sgd: batch-norm shifts (beta) learn this many times faster than the weights; their weight decay
    # stays the weights' (airbench94's bias_scaler: 64)
    bias_lr_scale: StrictFloat | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_average(self) -> Optimizer:
        if self.lookahead and self.ema_momentum:
            raise ValueError("optimizer: lookahead and ema_momentum both average the weights; keep one")
        if self.bias_lr_scale and self.name != "sgd":
            raise ValueError(f"optimizer.bias_lr_scale: for sgd only (not {self.name})")
        return self


class Checkpoint(Strict):
    monitor: str = "val_accuracy"


class ReduceLR(Strict):
    monitor: str = "val_loss"
    factor: StrictFloat = Field(default=0.1, gt=0, lt=1)
    patience: StrictInt = Field(default=3, ge=0)
    min_lr: StrictFloat = Field(default=0.0, ge=0)


class EarlyStop(Strict):
    monitor: str = "val_accuracy"
    patience: StrictInt = Field(default=10, ge=0)
    restore_best_weights: bool = False


class Callbacks(Strict):
    checkpoint: Checkpoint | None = None
    reduce_lr: ReduceLR | None = None
    early_stopping: EarlyStop | None = None


class FineTune(Strict):
    """A second training phase: unfreeze the pretrained base's last layers, train on at a lower rate."""

    epochs: StrictInt = Field(gt=0)
    trainable_layers: StrictInt = Field(gt=0)  # the base's last N layers (batch-norm stays in inference mode)
    learning_rate: StrictFloat = Field(default=1e-5, gt=0)


class ExperimentOverride(Strict):
    """An experiment's settings under one profile (e.g. the big gray28 models' small input when embedded)."""

    model_args: dict[str, Any] = {}  # merged over the experiment's model_args
    max_train_examples: StrictInt | None = Field(default=None, gt=0)
    epochs: StrictInt | None = Field(default=None, gt=0)  # e.g. one epoch for a big model in the smoke test
    batch_size: StrictInt | None = Field(default=None, gt=0)  # e.g. more steps from few images
    learning_rate: StrictFloat | None = Field(default=None, gt=0)  # e.g. a gentler peak for those smaller steps
    run_eagerly: bool | None = None  # e.g. a big model's one-epoch smoke run: tracing its graph costs more


class Experiment(Strict):
    study: str  # the study's id: its models are in stages/models/studies/<study>.py, its claims in studies.yaml
    dataset: str
    model: str
    model_args: dict[str, Any] = {}
    epochs: StrictInt = Field(gt=0)
    batch_size: StrictInt = Field(gt=0)
    optimizer: Optimizer = Optimizer()
    loss: Loss = "sparse_categorical_crossentropy"
    label_smoothing: StrictFloat = Field(default=0.0, ge=0, lt=1)
    tta_flip: bool = False  # test predictions averaged with those of the mirrored images (masks mirrored back)
    # multi-crop test-time augmentation (airbench94's): half the weight on the images as they are, a quarter
    # each on them shifted by this many pixels down-right and up-left (reflected edge); classifiers only
    tta_shift: StrictInt = Field(default=0, ge=0, le=4)
    # overrides accelerator.mixed_precision for this experiment (a model that gains from bf16 on CPUs that have it)
    mixed_precision: Precision | None = None
    track_test: bool = False  # also log test accuracy after each epoch (time to accuracy; never steers training)
    augment: bool = False  # segmentation: random flips applied to image and mask together (tf.data)
    # classification (airbench94's): each training image is mirrored on every other epoch, a seeded half
    # of them on the even epochs and the rest on the odd ones, instead of at random (tf.data); the
    # model must not flip too
    alternating_flip: bool = False
    # segmentation, with augment: also a random zoom-in of up to this fraction (a square crop of side
    # 1 - u * augment_zoom of the image, u uniform in [0, 1), resized back), image and mask together
    augment_zoom: StrictFloat = Field(default=0.0, ge=0, lt=1)
    callbacks: Callbacks = Callbacks()
    fine_tune: FineTune | None = None  # transfer learning: a second phase after the first `epochs`
    seed: Seed | None = None  # defaults to the top-level seed
    resume: bool = True  # continue an interrupted run from its last completed epoch
    # Keras' compile(run_eagerly=True): no graph. For a few steps of a big model only: tracing ResNet50's
    # training, evaluation and prediction graphs takes a minute on 2 CPU cores, their steps seconds
    run_eagerly: bool = False
    max_train_examples: StrictInt | None = Field(default=None, gt=0)  # train on the first N prepared images only
    profiles: dict[Literal["embedded", "full"], ExperimentOverride] = {}  # per-profile overrides

    @model_validator(mode="after")
    def _one_learning_rate_rule(self) -> Experiment:
        if self.callbacks.reduce_lr and self.optimizer.schedule != "constant":
            raise ValueError(
                f"callbacks.reduce_lr and optimizer.schedule {self.optimizer.schedule!r} both set the "
                "learning rate; keep one"
            )
        if self.augment_zoom and not self.augment:
            raise ValueError("augment_zoom zooms along with augment's flips: set augment: true, or augment_zoom: 0")
        return self


class Ensemble(Strict):
    """Majority vote of one experiment retrained with several seeds (its members)."""

    experiment: str
    dataset: str  # the experiment's, spelled out for dvc.yaml's deps


class EnsembleMember(Strict):
    """One retraining of an ensemble's experiment (stage train_member@<ensemble>-<seed>)."""

    ensemble: str
    experiment: str  # these three repeat the ensemble's, for dvc.yaml (DVC cannot look them up)
    study: str
    dataset: str
    seed: Seed


class Params(Strict):
    profile: Literal["embedded", "full"]
    seed: Seed = 0
    profiles: dict[Literal["embedded", "full"], Profile]
    data: DataSettings = DataSettings()
    accelerator: Accelerator = Accelerator()
    sources: dict[str, Source]
    datasets: dict[str, Dataset]
    # per study, what its experiments share (an experiment's own keys win, nested mappings key by key);
    # dvc.yaml's train stages read study_defaults.<study>, so DVC wants an entry ({}) for every study
    study_defaults: dict[str, dict[str, Any]] = {}
    experiments: dict[str, Experiment]
    ensembles: dict[str, Ensemble] = {}
    ensemble_members: dict[str, EnsembleMember] = {}

    @model_validator(mode="before")
    @classmethod
    def _over_study_defaults(cls, raw: Any) -> Any:
        """Each experiment merged over its study's ``study_defaults`` entry, before validation."""
        if not isinstance(raw, dict) or not isinstance(raw.get("experiments"), dict):
            return raw
        defaults = raw.get("study_defaults") or {}
        experiments = {}
        for name, exp in raw["experiments"].items():
            if isinstance(exp, dict) and isinstance(defaults.get(exp.get("study")), dict):
                exp = merged(defaults[exp["study"]], exp)
            experiments[name] = exp
        return {**raw, "experiments": experiments}

    @model_validator(mode="after")
    def _names_exist(self) -> Params:
        for name, ds in self.datasets.items():
            _check_name(ds.source, self.sources, f"datasets.{name}.source", "source")
        studies = sorted(p.stem for p in STUDY_MODELS.glob("*.py") if p.stem != "__init__")
        for name, exp in self.experiments.items():
            _check_name(exp.dataset, self.datasets, f"experiments.{name}.dataset", "dataset")
            _check_name(exp.study, studies, f"experiments.{name}.study", "study (a module of stages/models/studies/)")
        for name, ens in self.ensembles.items():
            _check_name(ens.experiment, self.experiments, f"ensembles.{name}.experiment", "experiment")
            _check_same(ens.dataset, self.experiments[ens.experiment].dataset, f"ensembles.{name}.dataset")
            if not self.seeds(name):
                raise ValueError(f"ensembles.{name}: no member in ensemble_members")
        for key, member in self.ensemble_members.items():
            where = f"ensemble_members.{key}"
            _check_name(member.ensemble, self.ensembles, f"{where}.ensemble", "ensemble")
            ens = self.ensembles[member.ensemble]
            exp = self.experiments[ens.experiment]
            for field, value in (("experiment", ens.experiment), ("study", exp.study), ("dataset", exp.dataset)):
                _check_same(getattr(member, field), value, f"{where}.{field}")
            _check_same(key, f"{member.ensemble}-{member.seed}", f"{where}: the key")
        return self

    @model_validator(mode="after")
    def _sizes_where_images_vary(self) -> Params:
        """Photos differ in size: a dataset of an image-folder or pets source states the size to decode them to."""
        for name, ds in self.datasets.items():
            src = self.sources.get(ds.source)  # an unknown one: _names_exist says so
            fmt = src and src.layout(self.profile)
            if ds.image_size is None and ds.pth is None and fmt in ("image_folder", "oxford_pets"):
                raise ValueError(
                    f"datasets.{name}.image_size: source {ds.source} ({fmt}) holds photos of any size; set one"
                )
        return self

    def seeds(self, ensemble: str) -> list[int]:
        """The seeds of ``ensemble``'s members, in params.yaml's order."""
        return [m.seed for m in self.ensemble_members.values() if m.ensemble == ensemble]

    @property
    def active(self) -> Profile:
        return self.profiles.get(self.profile, Profile())


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; where both hold a mapping under one key, merged in turn."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(base.get(key), Mapping)
        out[key] = merged(base[key], value) if both else value
    return out


def _check_name(value: str, known: dict | list, where: str, what: str) -> None:
    if value not in known:
        raise ValueError(f"{where}: unknown {what} {value!r}{did_you_mean(value, known)}")


def _check_same(value: object, expected: object, where: str) -> None:
    if value != expected:
        raise ValueError(f"{where}: {value!r}, but it must be {expected!r}")


def did_you_mean(value: str, known: Any) -> str:
    close = difflib.get_close_matches(str(value), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(map(str, known))})"


def _holds(raw: Any, keys: tuple) -> bool:
    """Whether the raw mapping ``raw`` holds a value under the nested ``keys``."""
    for key in keys:
        if not isinstance(raw, Mapping) or key not in raw:
            return False
        raw = raw[key]
    return True


def _origin(loc: tuple, raw: Any) -> tuple:
    """Where in params.yaml the value at ``loc`` was set: an experiment's keys are merged over its study's
    ``study_defaults`` entry before validation, so a study default's bad value is named as that default."""
    if len(loc) < 3 or loc[0] != "experiments" or not isinstance(raw, Mapping):
        return loc
    exp = (raw.get("experiments") or {}).get(loc[1])
    if not isinstance(exp, Mapping) or _holds(exp, loc[2:]):
        return loc
    study = exp.get("study")
    defaults = (raw.get("study_defaults") or {}).get(study) if isinstance(study, str) else None
    return ("study_defaults", study, *loc[2:]) if _holds(defaults, loc[2:]) else loc


def _format_error(err: ValidationError, path: Path, raw: Any) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in _origin(first["loc"], raw)) or "(top level)"
    if first["type"] == "extra_forbidden":
        known = _known_keys(first["loc"])
        return f"{path}: unknown key {where}{did_you_mean(first['loc'][-1], known) if known else ''}"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":  # a validator's own message; its object's place unless top level
        return f"{path}: {where}: {msg}" if first["loc"] else f"{path}: {msg}"
    return f"{path}: {where}: {msg}{got_text}"


def _known_keys(loc: tuple) -> list[str]:
    """Field names of the schema object that holds the unknown key at ``loc``."""
    model: Any = Params
    parts, i = list(loc[:-1]), 0
    while i < len(parts):
        fields = getattr(model, "model_fields", {})
        if parts[i] not in fields:
            return []
        annotation = fields[parts[i]].annotation
        if get_origin(annotation) is dict:  # a dict of named entries: skip the entry's name
            model, i = get_args(annotation)[1], i + 2
            continue
        options = [a for a in get_args(annotation) if a is not type(None)]
        model, i = (options[0] if options else annotation), i + 1
    return list(getattr(model, "model_fields", {}))


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise ConfigError with a one-line message.

    What needs the model registry (model names and arguments; it imports Keras, seconds) is checked when
    an experiment is resolved into a run (:func:`stages.training.settings.resolve`).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run stages from the repository root)") from None
    return parse(text, path)


def parse(text: str, source: str | Path = PARAMS_FILE) -> Params:
    """params.yaml's ``text`` validated (``source`` names it in the one-line ConfigError)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, Path(source), raw)) from None


T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``, or the one-line ConfigError every command gives for an unknown name."""
    if name not in table:
        raise ConfigError(f"{PARAMS_FILE}: unknown {what} {name!r}{did_you_mean(name, table)}")
    return table[name]


class StudyInfo(Strict):
    title: str
    report: str = ""  # where the study's own report is (the brief's seeds/NNN)
    timing_table: bool = False  # the report gave seconds per epoch: `report` writes reports/timing/<study>.md


class ExperimentNotes(Strict):
    claimed: dict[str, StrictFloat] = {}  # the study report's own numbers; none for the project's variants
    note: str = ""
    kind: Literal["study", "variant", "sweep"] | None = None  # default: study if it has a claim, else variant
    not_reproducible_here: str = ""  # why no real-data run can be made in this workplace
    partial_here: str = ""  # why its real-data record here stops short of the recipe (shown on a partial row)

    @property
    def role(self) -> str:
        return self.kind or ("study" if self.claimed else "variant")


class EnsembleNotes(Strict):
    claimed: dict[str, StrictFloat] = {}  # the study's voted accuracy (ensemble_accuracy)
    cost: str = ""  # what the study's own ensemble took: members, hours, hardware


class Studies(Strict):
    """studies.yaml: documentation read by the report and comparison tools, never by training."""

    studies: dict[str, StudyInfo]
    experiments: dict[str, ExperimentNotes] = {}
    ensembles: dict[str, EnsembleNotes] = {}


def load_studies(params: Params, path: str | Path = STUDIES_FILE) -> Studies:
    """Read and validate studies.yaml against params.yaml's experiments; ConfigError in one line."""
    path = Path(path)
    try:
        studies = Studies.model_validate(yaml.safe_load(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    for name in studies.experiments:
        _check_config_name(name, params.experiments, f"{path}: experiments.{name}", "experiment")
    for name in studies.ensembles:
        _check_config_name(name, params.ensembles, f"{path}: ensembles.{name}", "ensemble")
    for name, exp in params.experiments.items():
        _check_config_name(exp.study, studies.studies, f"{PARAMS_FILE}: experiments.{name}.study", "study")
    return studies


def _check_config_name(value: str, known: dict, where: str, what: str) -> None:
    try:
        _check_name(value, known, where, what)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def claimed(studies: Studies, name: str) -> dict[str, float]:
    """The report's claimed numbers for experiment ``name`` ({} for the project's own variants)."""
    notes = studies.experiments.get(name)
    return notes.claimed if notes else {}


def _capped(value: int, cap: int | None) -> int:
    return min(value, cap) if cap else value


def merge_experiment(params: Params, name: str, *, seed: int | None = None) -> dict[str, Any]:
    """The settings experiment ``name`` runs with under the active profile: study defaults, the experiment,
    its override for the profile and the profile's caps merged, in this one place. Unchecked: the
    training package's ``resolve`` validates them into its ``Run`` (model arguments need the registry)."""
    exp = lookup(params.experiments, name, "experiment")
    caps, over = params.active, exp.profiles.get(params.profile, ExperimentOverride())
    fine_tune = exp.fine_tune
    if fine_tune is not None:
        fine_tune = fine_tune.model_copy(update={"epochs": _capped(fine_tune.epochs, caps.max_epochs)})
    settings = {
        **exp.model_dump(exclude={"profiles", "optimizer", "callbacks", "fine_tune"}),
        "experiment": name,
        "model_args": {**exp.model_args, **over.model_args},
        "epochs": _capped(over.epochs or exp.epochs, caps.max_epochs),
        "batch_size": _capped(over.batch_size or exp.batch_size, caps.max_batch_size),
        "max_train_examples": over.max_train_examples or exp.max_train_examples,
        "optimizer": exp.optimizer.model_copy(
            update={"learning_rate": over.learning_rate or exp.optimizer.learning_rate}
        ),
        "callbacks": exp.callbacks,
        "fine_tune": fine_tune,
        "seed": seed if seed is not None else params.seed if exp.seed is None else exp.seed,
        "run_eagerly": exp.run_eagerly if over.run_eagerly is None else over.run_eagerly,
        "mixed_precision": caps.mixed_precision or exp.mixed_precision or params.accelerator.mixed_precision,
        "jit_compile": params.accelerator.jit_compile,
        "batchnorm_momentum": caps.batchnorm_momentum,
    }
    return settings
