"""params.yaml validation: every mistake is one line naming the parameter, before any work."""

import math
import re
import typing
from pathlib import Path

import pytest
import yaml

from stages.core import config
from stages.core.errors import ConfigError
from stages.training.settings import resolve
from tests.test_settings import resolve_all

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(REPO_PARAMS.read_text())
    mutate(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repository_params_are_valid():
    params = config.load(REPO_PARAMS)
    assert params.profile in ("embedded", "full")
    assert params.experiments, "no experiments defined"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["experiments"]["objects8_cnn"].update(epochs=-3), "experiments.objects8_cnn.epochs"),
        (lambda d: d["experiments"]["objects8_cnn"].update(epochs="ten"), "experiments.objects8_cnn.epochs"),
        (lambda d: d["experiments"]["objects8_cnn"].update(batch_size=0), "experiments.objects8_cnn.batch_size"),
        (lambda d: d["experiments"]["objects8_cnn"].update(epocs=3), "did you mean 'epochs'"),
        (lambda d: d["experiments"]["objects8_cnn"].update(dataset="objects9"), "did you mean 'objects8'"),
        (lambda d: d["experiments"]["objects8_cnn"].update(model="objects8_cn"), "did you mean 'objects8_cnn'"),
        (lambda d: d["experiments"]["objects8_cnn"]["model_args"].update(filter=3), "did you mean 'filters'"),
        (
            lambda d: (
                d["experiments"]["objects8_cnn"]["optimizer"].update(name="adamm")
                if "optimizer" in d["experiments"]["objects8_cnn"]
                else d["experiments"]["objects8_cnn"].update(optimizer={"name": "adamm"})
            ),
            "optimizer.name",
        ),
        (lambda d: d.update(profile="fast"), "profile"),
        (lambda d: d["datasets"]["objects8"].update(source="cifar100"), "unknown source 'cifar100'"),
        (lambda d: d["datasets"]["objects8"].update(val_fraction=1.5), "datasets.objects8.val_fraction"),
        (lambda d: d["datasets"]["natural_images"].update(image_size=[50, 0]), "datasets.natural_images.image_size.1"),
        (
            lambda d: d["datasets"]["natural_images"].pop("image_size"),
            "datasets.natural_images.image_size: source natural_images (image_folder) holds photos of any size",
        ),
        (
            lambda d: d["experiments"]["gray28_tuned"].update(optimizer={"name": "adam", "schedule": "cosine"}),
            "experiments.gray28_tuned: callbacks.reduce_lr and optimizer.schedule 'cosine' both set the learning rate",
        ),
        (
            lambda d: d["experiments"]["pets_unet3"].update(augment_zoom=0.2),
            "experiments.pets_unet3: augment_zoom zooms along with augment's flips",
        ),
        (
            lambda d: d["experiments"]["pets_unet3"].update(tta_shift=1),
            "experiments.pets_unet3.tta_shift: is for classifiers",
        ),
        (lambda d: d["experiments"]["cifar_rgb_fast"].update(tta_shift=9), "experiments.cifar_rgb_fast.tta_shift"),
        (
            lambda d: d["experiments"]["cifar_rgb_airbench"]["optimizer"].update(ema_momentum=0.99),
            "lookahead and ema_momentum both average the weights",
        ),
        (
            lambda d: d["experiments"]["cifar_rgb_airbench"]["optimizer"].update(name="adam"),
            "optimizer.bias_lr_scale: for sgd only (not adam)",
        ),
        (
            lambda d: d["experiments"]["cifar_rgb_airbench"]["model_args"].update(flip=True),
            "experiments.cifar_rgb_airbench.alternating_flip: airbench flips at random too",
        ),
        (
            lambda d: d["experiments"]["cifar_rgb_fast"].update(alternating_flip=True),
            "experiments.cifar_rgb_fast.alternating_flip: airbench flips at random too",
        ),
        (
            lambda d: d["experiments"]["pets_unet3"].update(alternating_flip=True),
            "experiments.pets_unet3.alternating_flip: is for classifiers",
        ),
        (
            lambda d: d["experiments"]["pets_unet_plus"].update(augment_zoom=1.5),
            "experiments.pets_unet_plus.augment_zoom",
        ),
    ],
)
def test_bad_params_name_the_parameter(tmp_path, mutate, expected):
    with pytest.raises(ConfigError) as err:
        resolve_all(config.load(write(tmp_path, mutate)))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_experiment_suggests_the_closest():
    params = config.load(REPO_PARAMS)
    with pytest.raises(ConfigError, match="did you mean 'objects8_cnn'"):
        resolve(params, "objects8_cn")


def test_embedded_profile_caps_epochs(tmp_path):
    params = config.load(write(tmp_path, lambda d: d["profiles"]["embedded"].update(max_epochs=2)))
    assert resolve(params, "objects8_cnn").epochs == 2
    full = config.load(write(tmp_path, lambda d: d.update(profile="full")))
    assert resolve(full, "objects8_cnn").epochs == 10


def test_invalid_yaml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profile: [embedded\n")
    with pytest.raises(ConfigError, match=str(path)):
        config.load(path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["experiments"]["objects8_cnn"].update(epochs=True), "experiments.objects8_cnn.epochs"),
        (lambda d: d["experiments"]["objects8_cnn"].update(batch_size=True), "experiments.objects8_cnn.batch_size"),
        (lambda d: d["experiments"]["objects8_cnn"].update(seed=False), "experiments.objects8_cnn.seed"),
        (
            lambda d: d["experiments"]["objects8_cnn"]["callbacks"]["reduce_lr"].update(patience=True),
            "experiments.objects8_cnn.callbacks.reduce_lr.patience",
        ),
        (lambda d: d["experiments"]["objects8_cnn"].update(epochs=2.5), "experiments.objects8_cnn.epochs"),
        (lambda d: d.update(seed=True), "seed"),
        (lambda d: d["profiles"]["embedded"].update(max_epochs=True), "profiles.embedded.max_epochs"),
        (lambda d: d["ensemble_members"]["gray28_tuned-1"].update(seed=True), "ensemble_members.gray28_tuned-1.seed"),
        (lambda d: d["experiments"]["objects8_cnn"].update(label_smoothing=True), "label_smoothing: Input should be"),
    ],
)
def test_booleans_are_not_numbers(tmp_path, mutate, expected):
    """YAML's ``true`` is not 1 epoch (nor a rate of 1.0): pydantic's lax mode would take it as one."""
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, mutate))
    message = str(err.value)
    assert expected in message and ("valid integer" in message or "valid number" in message)
    assert "\n" not in message


def test_yaml_integers_still_load_as_integers(tmp_path):
    params = config.load(
        write(tmp_path, lambda d: d["experiments"]["objects8_cnn"].update(epochs=7, seed=3, label_smoothing=0))
    )
    exp = params.experiments["objects8_cnn"]
    assert (exp.epochs, exp.seed, exp.label_smoothing) == (7, 3, 0.0) and type(exp.epochs) is int


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["experiments"]["objects8_cnn"].setdefault("optimizer", {}).update(learning_rate=math.inf),
            "experiments.objects8_cnn.optimizer.learning_rate: Input should be a finite number (got inf)",
        ),
        (
            lambda d: d["experiments"]["objects8_cnn"].update(label_smoothing=math.nan),
            "experiments.objects8_cnn.label_smoothing: Input should be a finite number (got nan)",
        ),
        (
            lambda d: d["data"].update(download_timeout=-math.inf),
            "data.download_timeout: Input should be a finite number (got -inf)",
        ),
        (  # an experiment's settings merged from its study's defaults are checked, named where they were set
            lambda d: d["study_defaults"].update(objects8={"optimizer": {"name": "adam", "learning_rate": math.inf}}),
            "study_defaults.objects8.optimizer.learning_rate: Input should be a finite number (got inf)",
        ),
        (lambda d: d.update(seed=2**32), "seed: Input should be less than or equal to 4294967295 (got 4294967296)"),
        (lambda d: d.update(seed=-1), "seed: Input should be greater than or equal to 0 (got -1)"),
        (lambda d: d["experiments"]["objects8_cnn"].update(seed=2**40), "experiments.objects8_cnn.seed: Input should"),
        (
            lambda d: d["ensemble_members"]["gray28_tuned-1"].update(seed=-3),
            "ensemble_members.gray28_tuned-1.seed: Input should be greater than or equal to 0",
        ),
    ],
)
def test_non_finite_floats_and_seeds_out_of_range_are_refused(tmp_path, mutate, expected):
    """YAML's .inf and .nan pass `gt=0` (an infinite learning rate trains a NaN model); numpy's and
    scikit-learn's seeds are 0..2**32 - 1."""
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, mutate))
    assert str(err.value).startswith(f"{tmp_path / 'params.yaml'}: ") and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_seeds_at_the_ends_of_the_range_are_taken(tmp_path):
    params = config.load(
        write(tmp_path, lambda d: (d.update(seed=0), d["experiments"]["objects8_cnn"].update(seed=2**32 - 1)))
    )
    assert (params.seed, params.experiments["objects8_cnn"].seed) == (0, config.MAX_SEED)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["ensemble_members"]["gray28_tuned-1"].update(dataset="objects8"),
            "ensemble_members.gray28_tuned-1.dataset: 'objects8', but it must be 'gray28'",
        ),
        (
            lambda d: d["ensemble_members"]["gray28_tuned-1"].update(seed=9),
            "ensemble_members.gray28_tuned-1: the key: 'gray28_tuned-1', but it must be 'gray28_tuned-9'",
        ),
        (
            lambda d: d["ensemble_members"]["gray28_tuned-1"].update(ensemble="gray28"),
            "ensemble_members.gray28_tuned-1.ensemble: unknown ensemble 'gray28'",
        ),
        (lambda d: d.update(ensemble_members={}), "ensembles.gray28_tuned: no member in ensemble_members"),
    ],
)
def test_ensemble_members_must_agree_with_their_ensemble(tmp_path, mutate, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config.load(write(tmp_path, mutate))


@pytest.mark.parametrize("name", ["params.yaml", "dvc.yaml", "studies.yaml"])
def test_yaml_files_parse_with_dvcs_libyaml_loader(name):
    """With ruamel.yaml.clib installed (pinned: twice as fast), DVC reads these with libyaml, which is
    YAML 1.1: there a bare URL in a flow list (`[https://a, https://b]`) does not parse at all."""
    pytest.importorskip("_ruamel_yaml")
    from ruamel.yaml import YAML

    text = (REPO_PARAMS.parent / name).read_text()
    assert YAML(typ="safe", pure=False).load(text) == yaml.safe_load(text)


def test_an_experiment_is_merged_over_its_study_defaults(tmp_path):
    """Its own keys win, nested mappings merge key by key, and null clears a default."""

    def mutate(p: dict) -> None:
        p["study_defaults"]["gray28"] = {
            "epochs": 40,
            "batch_size": 128,
            "callbacks": {"reduce_lr": {"monitor": "val_loss", "factor": 0.2, "patience": 5}},
        }
        own = p["experiments"]["gray28_cnn1"]
        own.update(epochs=7, callbacks={"checkpoint": {"monitor": "val_accuracy"}})
        own.pop("batch_size", None)
        p["experiments"]["gray28_cnn2"]["callbacks"] = {"reduce_lr": None}

    params = config.load(write(tmp_path, mutate))
    cnn1, cnn2 = params.experiments["gray28_cnn1"], params.experiments["gray28_cnn2"]
    assert (cnn1.epochs, cnn1.batch_size) == (7, 128)
    assert cnn1.callbacks.checkpoint.monitor == "val_accuracy" and cnn1.callbacks.reduce_lr.patience == 5
    assert cnn2.callbacks.reduce_lr is None and cnn2.epochs == 40


def test_the_embedded_default_computes_in_float32_and_the_full_profile_as_each_experiment_says():
    """bfloat16 would make the embedded numbers depend on the CPU kind (native on AMX / AVX512_BF16 only)."""
    embedded = config.load()
    assert embedded.profile == "embedded"
    assert {resolve(embedded, n).mixed_precision for n in embedded.experiments} == {"float32"}
    full = embedded.model_copy(update={"profile": "full"})
    assert resolve(full, "cifar_rgb_fast").mixed_precision == "auto_cpu_bf16"
    assert resolve(full, "objects8_cnn").mixed_precision == "auto"


def test_a_profile_override_sets_the_learning_rate_and_keeps_the_rest_of_the_optimizer():
    params = config.load()
    exp = resolve(params, "objects8_resnet")
    assert exp.optimizer.learning_rate == 0.01 and exp.optimizer.schedule == "onecycle"
    full = resolve(params.model_copy(update={"profile": "full"}), "objects8_resnet")
    assert full.optimizer.learning_rate == 0.05


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["sources"]["cifar10"].update(format="cifar_jpeg"), "sources.cifar10.format: Input should be"),
        (lambda d: d["sources"]["cifar10"].pop("format"), "sources.cifar10: no format: set format to one of"),
        (
            lambda d: d["sources"]["fashion_mnist"]["generated"].update(format="csv"),
            "sources.fashion_mnist: generated.format: unknown format 'csv'",
        ),
    ],
)
def test_a_source_states_a_known_format(tmp_path, mutate, expected):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, mutate))
    message = str(err.value)
    assert expected in message and "\n" not in message
    if "unknown format" not in message:  # pydantic lists the choices
        assert all(name in message for name in typing.get_args(config.Format))


def test_every_format_has_a_reader_and_the_embedded_profile_reads_what_the_generator_makes():
    from stages.sources.formats import FORMATS

    assert set(FORMATS) == set(typing.get_args(config.Format))
    params = config.load(REPO_PARAMS)
    fashion = params.sources["fashion_mnist"]
    assert (fashion.layout("embedded"), fashion.layout("full")) == ("label_csv", "mnist_idx")
    assert params.sources["cifar10"].layout("embedded") == "cifar_python"
