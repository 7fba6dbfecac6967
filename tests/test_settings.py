"""One resolved experiment: params.yaml's four layers merged into the one record that training reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from stages.core import config
from stages.core.errors import ConfigError
from stages.training.settings import Run, resolve
from tests.conftest import REPO

SETTINGS = REPO / "stages/training/settings.py"
# what trains a model from a resolved run (settings.py is the resolver itself)
TRAINING_CODE = [REPO / "stages/train.py", *sorted(set((REPO / "stages/training").glob("*.py")) - {SETTINGS})]


def write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def resolve_all(params: config.Params) -> dict[tuple[str, str], Run]:
    """Every experiment resolved under every profile that params.yaml defines, keyed (profile, experiment)."""
    return {
        (profile, name): resolve(params.model_copy(update={"profile": profile}), name)
        for profile in params.profiles
        for name in params.experiments
    }


def names_read(files: list[Path], variable: str) -> set[str]:
    """The attributes that ``files`` read off a variable named ``variable``."""
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == variable:
                found.add(node.attr)
    return found


def test_training_reads_every_field_of_the_run_and_nothing_else_of_params():
    """No resolved setting goes unused, and no setting reaches training around the record."""
    fields = set(Run.model_fields)
    read = names_read(TRAINING_CODE, "run")
    assert fields - read == set(), "fields that training never reads"
    assert read - fields <= {"model_dump"}, "training reads a run attribute that is no setting"
    assert names_read(TRAINING_CODE, "params") == set()
    assert names_read(TRAINING_CODE, "exp") == set()


def test_every_experiment_resolves_under_every_profile_with_the_profiles_caps():
    params = config.load(REPO / "params.yaml")
    runs = resolve_all(params)
    assert len(runs) == len(params.experiments) * len(params.profiles)
    for (profile, name), run in runs.items():
        caps, exp = params.profiles[profile], params.experiments[name]
        override = exp.profiles.get(profile, config.ExperimentOverride())
        assert run.experiment == name and run.dataset == exp.dataset
        assert run.epochs == min(override.epochs or exp.epochs, caps.max_epochs or exp.epochs)
        assert run.batch_size == min(override.batch_size or exp.batch_size, caps.max_batch_size or exp.batch_size)
        assert run.model_args == {**exp.model_args, **override.model_args}
        assert run.batchnorm_momentum == caps.batchnorm_momentum
    embedded = [run for (profile, _), run in runs.items() if profile == "embedded"]
    assert {(run.mixed_precision, run.batchnorm_momentum) for run in embedded} == {("float32", 0.7)}
    assert max(run.epochs for run in embedded) <= 3 and max(run.batch_size for run in embedded) <= 64
    assert runs["embedded", "gray28_vgg19"].max_train_examples == 100  # the experiment's own slice
    assert runs["full", "gray28_vgg19"].max_train_examples is None
    assert runs["full", "cifar_rgb_fast"].mixed_precision == "auto_cpu_bf16"  # the experiment's, then
    assert runs["full", "objects8_cnn"].mixed_precision == params.accelerator.mixed_precision


def test_fine_tuning_epochs_are_capped_with_the_first_phase(tmp_path):
    fine_tune = {"epochs": 5, "trainable_layers": 30}
    path = write(tmp_path, lambda d: d["experiments"]["cifar_rgb_transfer"].update(fine_tune=fine_tune))
    params = config.load(path)
    embedded = resolve(params, "cifar_rgb_transfer")
    assert (embedded.epochs, embedded.fine_tune.epochs) == (1, 3)  # the override's 1; the cap's 3
    full = resolve(params.model_copy(update={"profile": "full"}), "cifar_rgb_transfer")
    assert (full.epochs, full.fine_tune.epochs) == (4, 5)


def test_an_ensemble_member_is_the_experiment_with_its_own_seed():
    params = config.load(REPO / "params.yaml")
    member, experiment = resolve(params, "gray28_tuned", seed=3), resolve(params, "gray28_tuned")
    assert member.seed == 3 and experiment.seed == params.seed
    assert member.model_copy(update={"seed": params.seed}) == experiment


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d["study_defaults"]["gray28"].update(epochs=0), "study_defaults.gray28.epochs"),
        (
            lambda d: d["study_defaults"]["gray28"]["callbacks"]["reduce_lr"].update(factor=2.0),
            "study_defaults.gray28.callbacks.reduce_lr.factor",
        ),
        (lambda d: d["study_defaults"]["pets"].update(epocs=3), "unknown key study_defaults.pets.epocs"),
        (lambda d: d["experiments"]["gray28_cnn1"].update(epochs=0), "experiments.gray28_cnn1.epochs"),
        (
            lambda d: d["experiments"]["objects8_resnet"]["profiles"]["embedded"].update(learning_rate=-0.1),
            "experiments.objects8_resnet.profiles.embedded.learning_rate",
        ),
        (
            lambda d: d["experiments"]["gray28_vgg19"]["profiles"]["embedded"]["model_args"].update(inpt_size=32),
            "experiments.gray28_vgg19.profiles.embedded.model_args: gray28_vgg19 takes no argument 'inpt_size' "
            "(did you mean 'input_size'?)",
        ),
        (
            lambda d: d["experiments"]["objects8_cnn"]["model_args"].update(filter=3),
            "experiments.objects8_cnn.model_args: objects8_cnn takes no argument 'filter'",
        ),
        (lambda d: d["profiles"]["embedded"].update(max_epochs=0), "profiles.embedded.max_epochs"),
        (lambda d: d["profiles"]["embedded"].update(mixed_precision="bf16"), "profiles.embedded.mixed_precision"),
        (lambda d: d["accelerator"].update(mixed_precision="fp8"), "accelerator.mixed_precision"),
    ],
)
def test_a_bad_value_in_any_layer_is_one_line_naming_params_yaml_and_its_key(tmp_path, mutate, key):
    with pytest.raises(ConfigError) as err:
        resolve_all(config.load(write(tmp_path, mutate)))
    message = str(err.value)
    assert "params.yaml: " in message and key in message
    assert "\n" not in message
