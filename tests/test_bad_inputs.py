"""Every stage's `main` over bad inputs: one `error:` (or `usage:`) line, exit 1 (or 2), never a traceback.

Each case runs ``python -m stages.<stage> ...`` in a tiny project (tests.test_train.make_project);
none of them trains: the stages must stop before any work.
"""

from __future__ import annotations

import math
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
from tests.conftest import REPO, small_tmpfs
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


def good_run(root: Path) -> None:
    """What a successful `train@tiny` left: a model folder and its scores, which a failed run must not touch."""
    trained(root)
    (root / "models/tiny/model.keras").write_bytes(b"the good model")
    write_json(root / "reports/experiments/tiny/metrics.json", {"test_accuracy": 0.9})
    write_json(root / "reports/experiments/tiny/details.json", {"train_seconds": 1.0})


def tiny_setting(**settings) -> Callable[[Path], None]:
    """After a good run, params.yaml's experiments.tiny with ``settings`` (optimizer: merged)."""

    def mutate(params: dict) -> None:
        tiny = params["experiments"]["tiny"]
        tiny.update({key: value for key, value in settings.items() if key != "optimizer"})
        tiny.setdefault("optimizer", {}).update(settings.get("optimizer", {}))

    def setup(root: Path) -> None:
        good_run(root)
        edit_params(root, mutate)

    return setup


def top_level(**settings) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        good_run(root)
        edit_params(root, lambda p: p.update(settings))

    return setup


def download_timeout(value: float) -> Callable[[Path], None]:
    return lambda root: edit_params(root, lambda p: p["data"].update(download_timeout=value))


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
    ("usage", ["prepare", "a", "b"], None, "usage: python -m stages.prepare [-h] name"),
    ("evaluate-nothing", ["evaluate"], None, "usage: python -m stages.evaluate [-h] name"),
    (
        "train-inf-learning-rate",
        ["train", "tiny"],
        tiny_setting(optimizer={"learning_rate": math.inf}),
        "params.yaml: experiments.tiny.optimizer.learning_rate: Input should be a finite number (got inf)",
    ),
    (
        "train-nan-label-smoothing",
        ["train", "tiny"],
        tiny_setting(label_smoothing=math.nan),
        "params.yaml: experiments.tiny.label_smoothing: Input should be a finite number (got nan)",
    ),
    (
        "download-inf-timeout",
        ["download", "cifar10"],
        download_timeout(-math.inf),
        "params.yaml: data.download_timeout: Input should be a finite number (got -inf)",
    ),
    (  # a finite rate whose first step overflows float32 (through the model's L1L2 penalty)
        "train-diverges",
        ["train", "tiny"],
        tiny_setting(model="cifar_gray_grid", batch_size=4, optimizer={"name": "sgd", "learning_rate": 1e30}),
        "train@tiny: the training loss became nan in epoch 1, step 2, at learning rate 1e+30; stopped, nothing "
        "written (models/tiny/ is left as it was): lower the learning rate in params.yaml's experiments.tiny",
    ),
    (
        "train-seed-too-big",
        ["train", "tiny"],
        top_level(seed=2**32),
        "params.yaml: seed: Input should be less than or equal to 4294967295 (got 4294967296)",
    ),
    (
        "train-experiment-seed-negative",
        ["train", "tiny"],
        tiny_setting(seed=-1),
        "params.yaml: experiments.tiny.seed: Input should be greater than or equal to 0 (got -1)",
    ),
    (
        "train-seed-option",
        ["train", "tiny", "--seed", str(2**32)],
        good_run,
        "--seed 4294967296: must be between 0 and 4294967295",
    ),
    (
        "prepare-seed-too-big",
        ["prepare", "tiny"],
        top_level(seed=2**32),
        "params.yaml: seed: Input should be less than or equal to 4294967295 (got 4294967296)",
    ),
]
TRAINS = {"train-diverges"}  # its bad input shows only once training has started


def outputs(root: Path) -> dict[str, bytes]:
    """The files of models/ and reports/ (but dvclive's per-epoch logs, which a training run restarts)."""
    found = [p for top in ("models", "reports") for p in (root / top, *(root / top).rglob("*")) if p.is_file()]
    paths = [p.relative_to(root) for p in found]
    return {
        str(p): (root / p).read_bytes()
        for p in paths
        if p.parts[:2] != ("reports", "experiments") or p.parts[3:4] != ("train",)
    }


def run_stage(root: Path, words: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", f"stages.{words[0]}", *words[1:]]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=180)


def run_case(
    root: Path, words: list[str], setup: Callable[[Path], None] | None
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The run, and the files of models/ or reports/ it changed (a failed run must leave them as they were)."""
    make_project(root, n=20, epochs=1)
    if setup is not None:
        setup(root)
    before = outputs(root)
    done = run_stage(root, words)
    after = outputs(root)
    return done, sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, list[str]]]:
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
    done, changed = results[case_id]
    assert done.returncode in (1, 2), done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "usage:"))]
    assert len(lines) == 1, done.stderr[-2000:]
    assert expected in lines[0]
    assert done.returncode == (2 if lines[0].startswith("usage:") else 1)
    if words[0] == "train" and case_id not in TRAINS:
        assert "Epoch " not in done.stdout, "a bad input must stop training before the first epoch"
    assert changed == [], "a failed run changed earlier outputs"


def test_prepare_on_a_full_disk_is_one_line_and_keeps_the_earlier_output(tmp_path):
    """numpy's write to a full disk raises an OSError without errno: still one line naming the file."""
    make_project(tmp_path, n=20, epochs=1)  # its data/prepared/tiny: the earlier output
    # the embedded sample of cifar10, kept in colour: 540 training images of 32x32x3 (1.6 MB) for a 1 MiB disk
    edit_params(tmp_path, lambda p: (p.update(profile="embedded"), p["datasets"]["tiny"].update(color="rgb")))
    for words in (["download", "cifar10"], ["extract", "cifar10"]):
        assert run_stage(tmp_path, words).returncode == 0
    prepared = tmp_path / "data/prepared"
    shutil.move(prepared, tmp_path / "earlier")
    with small_tmpfs(prepared):
        shutil.copytree(tmp_path / "earlier/tiny", prepared / "tiny")
        before = {p.name: p.read_bytes() for p in (prepared / "tiny").iterdir()}
        done = run_stage(tmp_path, ["prepare", "tiny"])
        assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
        assert done.stderr.splitlines() == [
            "error: cannot write data/prepared/tiny/x_train.npy: No space left on device "
            "(earlier outputs are left as they were)"
        ]
        assert {p.name: p.read_bytes() for p in (prepared / "tiny").iterdir()} == before
        assert [p.name for p in prepared.iterdir()] == ["tiny"], "a temporary was left on the full disk"
