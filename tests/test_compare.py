"""stages.tools.compare on a real throwaway DVC project: `dvc repro`, commit, `dvc exp run -S ...`, then compare."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import stages.tools.compare as compare_module
from stages.core.cli import run
from stages.reporting import experiments

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")

# the project's params.yaml (compare resolves each revision's runs) with three small experiments, profile full
# (no caps: a run's epochs are the experiment's)
EXPERIMENTS = """\
objects8_cnn: {study: objects8, dataset: objects8, model: objects8_cnn, epochs: 3, batch_size: 32}
objects8_resnet: {study: objects8, dataset: objects8, model: resnet_fast, epochs: 5, batch_size: 64}
pets_unet: {study: pets, dataset: pets_dogs, model: pets_unet, epochs: 4, batch_size: 8}
"""
PARAMS = yaml.safe_dump(
    {
        **yaml.safe_load((REPO / "params.yaml").read_text()),
        "profile": "full",
        "experiments": yaml.safe_load(EXPERIMENTS),
        "ensembles": {},
        "ensemble_members": {},
    },
    sort_keys=False,
)
STUDIES = """\
studies:
  objects8: {title: "Object recognition, 8 classes", report: seeds/000}
  pets: {title: "Pet segmentation", report: seeds/001}
experiments:
  objects8_cnn: {claimed: {test_accuracy: 0.718, test_loss: 0.823}, note: "the report's model"}
  objects8_resnet: {note: "the project's variant"}
  pets_unet: {claimed: {test_accuracy: 0.9}}
"""
STAGE = """\
import json, pathlib, sys, yaml
name = sys.argv[1]
exp = yaml.safe_load(open("params.yaml"))["experiments"][name]
out = pathlib.Path("reports/experiments") / name
out.mkdir(parents=True, exist_ok=True)
metrics = {"test_accuracy": 0.5 + exp["epochs"] / 100, "test_loss": 1 - exp["epochs"] / 100,
           "parameters": 1000, "flops": 2000, "epochs_run": exp["epochs"]}
if exp["study"] == "pets":
    metrics["test_mean_iou"] = 0.3 + exp["epochs"] / 100
(out / "metrics.json").write_text(json.dumps(metrics))
(out / "details.json").write_text(json.dumps({"train_seconds": 10.0 * exp["epochs"], "host": "test"}))
"""
DVC_YAML = """\
stages:
  evaluate:
    foreach: ${experiments}
    do:
      cmd: python stage.py ${key}
      deps: [stage.py]
      params: ["experiments.${key}"]
      metrics:
        - reports/experiments/${key}/metrics.json: {cache: false}
      outs:
        - reports/experiments/${key}/details.json: {cache: false}
"""
ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.com", "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}  # fmt: skip


def _run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # the venv's bin first on PATH: the stage's `python` must be the one with PyYAML
    env = {**os.environ, **ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=check, timeout=300)


def make_project(root: Path) -> Path:
    """The throwaway project, reproduced and committed as `main`, with no experiment yet."""
    for name, text in {"params.yaml": PARAMS, "studies.yaml": STUDIES, "stage.py": STAGE, "dvc.yaml": DVC_YAML}.items():
        (root / name).write_text(text)
    _run(root, "git", "init", "-q", "-b", "main")
    _run(root, DVC, "init", "-q")
    _run(root, DVC, "repro", "-q")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "baseline")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    _run(root, DVC, "exp", "run", "-q", "-S", "experiments.objects8_cnn.epochs=2")
    return root


def _compare(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(root, sys.executable, "-m", "stages.tools.compare", *args, check=False)


@pytest.fixture
def compare(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """In-process `python -m stages.tools.compare ARGS` in the project: (exit status, stdout, stderr)."""

    def call(*args: str, cwd: Path = project) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        experiments.git_repo.cache_clear()
        experiments.read_at.cache_clear()
        try:
            run(compare_module.main, compare_module.parser(), list(args))
            status = 0
        except SystemExit as exc:
            status = int(exc.code or 0)
        out, err = capsys.readouterr()
        return status, out, err

    return call


def _rows(out: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    return [r for r in rows if not set(r[0]) <= set(":-")]


def test_baseline_and_experiment_rows_fit_120_columns(project: Path):
    result = _compare(project, "objects8")  # the real command line, in a subprocess
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("## objects8: Object recognition, 8 classes (seeds/000)")
    assert "pets" not in out
    assert all(len(line) <= 120 for line in out.splitlines())
    header, *rows = _rows(out)
    assert header == ["run", "experiment", "params", "test_accuracy", "train_s", "claimed"]
    exp_name = _run(project, DVC, "exp", "list", "--name-only").stdout.strip()  # generated, e.g. cruel-woes
    assert rows == [
        ["main", "objects8_cnn", "", "0.5300", "30.0", "0.718"],
        [exp_name, "objects8_cnn", "epochs=2", "0.5200", "20.0", "0.718"],
        ["main", "objects8_resnet", "", "0.5500", "50.0", ""],
    ]


def test_all_shows_repeated_results_too(project: Path, compare):
    # the workspace holds the experiment's result, and the experiment left objects8_resnet as it was
    status, out, _ = compare("objects8", "--all")
    exp_name = _run(project, DVC, "exp", "list", "--name-only").stdout.strip()
    assert status == 0
    assert [r[:2] for r in _rows(out)[1:]] == [
        [run_, name] for name in ("objects8_cnn", "objects8_resnet") for run_ in ("main", exp_name, "workspace")
    ]


def test_segmentation_study_shows_mean_iou(compare):
    header, *rows = _rows(compare("pets")[1])
    assert header == ["run", "experiment", "params", "test_accuracy", "test_mean_iou", "train_s", "claimed"]
    assert [r[1:] for r in rows] == [["pets_unet", "", "0.5400", "0.3400", "40.0", "0.900"]]


def test_all_params_lists_every_parameter(compare):
    rows = _rows(compare("objects8", "--all-params")[1])[1:]
    assert rows[0][2].startswith("study=objects8 dataset=objects8 model=objects8_cnn epochs=3 batch_size=32 ")
    # the run's settings that params.yaml leaves to the layers and defaults too
    assert {"seed=42", "mixed_precision=auto", "optimizer.learning_rate=0.001", "resume=True"} <= set(
        rows[0][2].split()
    )


def test_unknown_study_is_one_line_with_a_suggestion(compare):
    assert compare("objcts8") == (1, "", "error: unknown study 'objcts8'; did you mean objects8?\n")


def test_outside_a_dvc_repository_is_one_line(compare, tmp_path: Path):
    status, out, err = compare(cwd=tmp_path)
    assert (status, out) == (1, "")
    assert err.startswith("error: dvc exp show: you are not inside of a DVC repository")
    assert len(err.splitlines()) == 1


def test_an_experiments_params_include_its_study_defaults():
    """As params.yaml's schema merges them: own keys win, a null mapping clears the defaults below it,
    and an own key that reads "None" (null, or missing from this revision) leaves a scalar default."""
    row = {
        "params.yaml:study_defaults.gray28.epochs": 40.0,
        "study_defaults.gray28.callbacks.reduce_lr.patience": 5.0,
        "experiments.a.study": "gray28",
        "experiments.a.epochs": 7.0,
        "experiments.a.callbacks.reduce_lr": "None",
        "experiments.b.study": "gray28",
        "experiments.b.epochs": "None",
    }
    assert experiments.experiment_params(row, "a") == {"study": "gray28", "epochs": 7.0}
    assert experiments.experiment_params(row, "b") == {
        "study": "gray28",
        "epochs": 40.0,
        "callbacks.reduce_lr.patience": 5.0,
    }
