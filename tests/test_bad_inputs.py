"""Every stage's `main` over bad inputs: one `error:` (or `usage:`) line, exit 1 (or 2), never a traceback.

Each case runs ``python -m stages.<stage> ...`` in a tiny project (tests.test_train.make_project);
none of them trains: the stages must stop before any work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.core.files import save_npy, write_json
from tests.conftest import REPO
from tests.test_train import make_project


def edit_params(root: Path, mutate: Callable[[dict], None]) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    mutate(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def trained(root: Path, probs: np.ndarray | None = None) -> None:
    """What `train@tiny` leaves for its scoring (`python -m stages.evaluate`): a summary, the test probabilities."""
    y_test = np.load(root / "data/prepared/tiny/y_test.npy")
    if probs is None:
        probs = np.full((len(y_test), 2), 0.5, np.float32)
    save_npy(root / "models/tiny/test_probs.npy", probs)
    summary = {"parameters": 1, "epochs_run": 1, "flops": 1, "train_seconds": 1.0, "test_seconds": 0.1}
    write_json(root / "models/tiny/summary.json", summary)


def labels_out_of_range(root: Path) -> None:
    trained(root)
    y = np.load(root / "data/prepared/tiny/y_test.npy")
    y[3] = 5  # meta.json has 2 classes
    save_npy(root / "data/prepared/tiny/y_test.npy", y)


def with_ensemble(root: Path) -> None:
    def add(p: dict) -> None:
        study = p["experiments"]["tiny"]["study"]
        p["ensembles"] = {"ens": {"experiment": "tiny", "dataset": "tiny"}}
        member = {"ensemble": "ens", "experiment": "tiny", "study": study, "dataset": "tiny", "seed": 1}
        p["ensemble_members"] = {"ens-1": member}

    edit_params(root, add)


def member_of_other_data(root: Path) -> None:
    with_ensemble(root)
    save_npy(root / "models/ensembles/ens/seed1/test_probs.npy", np.full((7, 2), 0.5, np.float32))


def ensemble_without_prepared_data(root: Path) -> None:
    with_ensemble(root)
    shutil.rmtree(root / "data/prepared")


def bad_model_args(root: Path) -> None:
    edit_params(root, lambda p: p["experiments"]["tiny"].update(model="cifar_gray_tuned", model_args={"dropout": 7}))
    (root / "data/prepared/tiny/x_train.npy").unlink()  # the model is checked before any data is read


def models_is_a_file(root: Path) -> None:
    (root / "models").write_text("not a folder\n")


def corrupt_metrics(root: Path) -> None:
    study = yaml.safe_load((root / "params.yaml").read_text())["experiments"]["tiny"]["study"]
    (root / "studies.yaml").write_text(yaml.safe_dump({"studies": {study: {"title": "tiny"}}}))
    (root / "reports/experiments/tiny").mkdir(parents=True)
    (root / "reports/experiments/tiny/metrics.json").write_text('{"test_accuracy": 0.5,')


def bool_epochs(root: Path) -> None:
    edit_params(root, lambda p: p["experiments"]["tiny"].update(epochs=True))


def short_probs(root: Path) -> None:
    trained(root, np.ones((3, 2), np.float32))


def no_prepared_data(root: Path) -> None:
    shutil.rmtree(root / "data/prepared")


def no_params(root: Path) -> None:
    (root / "params.yaml").unlink()


def bad_yaml(root: Path) -> None:
    (root / "params.yaml").write_text("profile: [\n")


CASES = [
    # (id, stage and words, setup, what the one line says)
    ("train-model-args", ["train", "tiny"], bad_model_args, "params.yaml: experiments.tiny.model_args:"),
    ("train-bool-epochs", ["train", "tiny"], bool_epochs, "experiments.tiny.epochs"),
    ("train-output-blocked", ["train", "tiny"], models_is_a_file, "cannot write to models/"),
    ("evaluate-untrained", ["evaluate", "tiny"], None, "models/tiny/summary.json: missing; run `dvc repro train@tiny`"),
    ("evaluate-unknown", ["evaluate", "tinny"], None, "unknown experiment 'tinny' (did you mean 'tiny'?)"),
    ("evaluate-labels", ["evaluate", "tiny"], labels_out_of_range, "data/prepared/tiny/y_test.npy: labels [5] outside"),
    ("evaluate-probs-shape", ["evaluate", "tiny"], short_probs, "models/tiny/test_probs.npy: shape (3, 2)"),
    ("evaluate-no-prepared", ["evaluate", "tiny"], no_prepared_data, "run `dvc repro prepare@tiny`"),
    ("ensemble-unknown", ["ensemble", "nope"], with_ensemble, "unknown ensemble 'nope'"),
    ("ensemble-member-missing", ["ensemble", "ens"], with_ensemble, "run `dvc repro train_member@ens-1`"),
    ("ensemble-member-shape", ["ensemble", "ens"], member_of_other_data, "seed1/test_probs.npy: shape (7, 2)"),
    ("ensemble-no-prepared", ["ensemble", "ens"], ensemble_without_prepared_data, "run `dvc repro prepare@tiny`"),
    ("report-no-studies", ["report"], None, "studies.yaml: not found"),
    ("report-corrupt-metrics", ["report"], corrupt_metrics, "reports/experiments/tiny/metrics.json: not valid JSON"),
    ("download-unknown", ["download", "nope"], None, "unknown source 'nope'"),
    ("extract-unknown", ["extract", "nope"], None, "nope"),
    ("prepare-unknown", ["prepare", "nope"], None, "unknown dataset 'nope'"),
    ("no-params", ["evaluate", "tiny"], no_params, "params.yaml: not found"),
    ("bad-yaml", ["download", "cifar10"], bad_yaml, "not valid YAML"),
    ("usage", ["prepare", "a", "b"], None, "usage: python -m stages.prepare <name>"),
    ("evaluate-nothing", ["evaluate"], None, "name one or more experiments of params.yaml"),
]


def run_case(root: Path, words: list[str], setup: Callable[[Path], None] | None) -> subprocess.CompletedProcess:
    make_project(root, n=20, epochs=1)
    if setup is not None:
        setup(root)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", f"stages.{words[0]}", *words[1:]]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case's run, several at a time: each is mostly the start-up of Python and its imports."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {
            case_id: pool.submit(run_case, tmp_path_factory.mktemp(case_id), words, setup)
            for case_id, words, setup, _ in CASES
        }
        return {case_id: future.result() for case_id, future in futures.items()}


@pytest.mark.parametrize(
    ("case_id", "words", "expected"), [(c[0], c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_ends_in_one_line(results, case_id, words, expected):
    done = results[case_id]
    assert done.returncode in (1, 2), done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "usage:"))]
    assert len(lines) == 1, done.stderr[-2000:]
    assert expected in lines[0]
    assert done.returncode == (2 if lines[0].startswith("usage:") else 1)
    if words[0] == "train":
        assert "Epoch " not in done.stdout, "a bad input must stop training before the first epoch"
