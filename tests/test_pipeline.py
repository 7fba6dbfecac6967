"""End to end: `dvc repro` on the embedded default in a fresh copy of the repository,
then sharing through a DVC remote (a local directory) into a second clone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import plots_page
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path, timeout: int = 1800) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_ROOT", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def copy_checkout(dest: Path) -> Path:
    """The repository as a user's clone has it: tracked and untracked-but-not-ignored files."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    sh("git", "init", "-q", cwd=dest)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=dest)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone", cwd=dest)
    return dest


# Which code and settings a reproduced checkout ran: when the checkout differs from HEAD in any of
# them, its metrics are not the committed ones to compare against.
INPUTS = ("stages/", "params.yaml", "dvc.yaml", "studies.yaml", "requirements", ".dvc/")


def checkout_is_reproduced() -> bool:
    """The README's first command (`dvc repro`) has run here and nothing changed since: DVC says
    every stage is up to date."""
    done = subprocess.run(["dvc", "status", "--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    return done.returncode == 0 and json.loads(done.stdout or "{}") == {}


def cache_dir(repo: Path) -> str:
    return sh("dvc", "cache", "dir", cwd=repo).strip().splitlines()[-1]


def changed_inputs(repo: Path) -> list[str]:
    status = sh("git", "status", "--porcelain", "--untracked-files=no", cwd=repo).splitlines()
    return [line[3:] for line in status if line[3:].startswith(INPUTS)]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    """A copy of the checkout with every stage's outputs. When the checkout itself is reproduced (the
    README's first command, as in CI), the copy takes its outputs from the checkout's DVC cache;
    otherwise the copy runs the whole `dvc repro` (25 min on 2 AMD EPYC cores)."""
    reuse = os.environ.get("REPRODUCED_REPO")  # developers: a copy an earlier run reproduced
    if reuse:
        return Path(reuse)
    repo = copy_checkout(tmp_path_factory.mktemp("repo"))
    if checkout_is_reproduced():
        REPRODUCED_FROM["checkout"] = True
        sh("dvc", "cache", "dir", "--local", cache_dir(REPO), cwd=repo)  # the checkout's: nothing copied twice
        sh("dvc", "checkout", "-q", cwd=repo)
    else:
        sh("dvc", "repro", cwd=repo, timeout=3600)
    return repo


REPRODUCED_FROM = {"checkout": False}


# The studies' reference models and the project's variants learn the generated data within
# the embedded budget (3 epochs). The large from-scratch or frozen-random-feature models
# (ResNet50, VGG19, InceptionV3/ResNetV2 without ImageNet weights) need more steps than the
# default run affords: for them the test checks only that they trained and were evaluated.
MUST_LEARN = [
    "cifar_gray_baseline",
    "cifar_gray_tuned",
    "cifar_gray_resnet",
    "cifar_rgb_cnn",
    "cifar_rgb_fast",
    "cifar_rgb_airbench",
    "objects8_cnn",
    "objects8_resnet",
    "gray28_cnn1",
    "gray28_tuned",
    "pets_unet3",
    "pets_unet_plus",
    "natural_light",
]


def test_every_experiment_is_evaluated_and_the_reference_models_learn(reproduced):
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    assert set(MUST_LEARN) <= set(params["experiments"])
    for name, exp in params["experiments"].items():
        metrics = json.loads((reproduced / "reports/experiments" / name / "metrics.json").read_text())
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] >= 0, name
        assert (reproduced / "models" / name / "model.keras").is_file()
        if name not in MUST_LEARN:
            continue
        if "test_mean_iou" in metrics:  # segmentation: beat predicting the majority class everywhere
            details = json.loads((reproduced / "reports/experiments" / name / "details.json").read_text())
            assert metrics["test_mean_iou"] > details["baseline_mean_iou"] + 0.15, (name, metrics)
            continue
        classes = json.loads((reproduced / "data/prepared" / exp["dataset"] / "meta.json").read_text())["classes"]
        chance = 1 / len(classes)
        assert metrics["test_accuracy"] > chance + 0.15, f"{name}: {metrics['test_accuracy']:.3f} vs {chance:.3f}"


def test_reports_say_the_data_is_generated(reproduced):
    scorecard = (reproduced / "reports/scorecard.md").read_text()
    assert "GENERATED SAMPLE DATA" in scorecard
    # the data of DVC's bar chart: every experiment reproduced, and beside it its report's claim if any
    bars = (reproduced / "reports/plots/accuracy_vs_claimed.csv").read_text().splitlines()
    assert bars[0] == "run,test_accuracy" and "cifar_gray_baseline: claimed,0.551" in bars
    experiments = yaml.safe_load((reproduced / "params.yaml").read_text())["experiments"]
    assert {row.split(": ")[0] for row in bars[1:] if ": reproduced," in row} == set(experiments)
    # track_test experiments: test accuracy after each epoch, against the wall time so far
    assert "cifar_rgb_fast" in (reproduced / "reports/time_to_accuracy.md").read_text()
    assert "cifar_rgb_fast" in (reproduced / "reports/plots/time_to_accuracy.csv").read_text()


#: How far the embedded default's accuracies and mean IoUs may move on another CPU kind or core count:
#: oneDNN's AVX2, AVX-512 and AMX kernels and the thread count round differently, and training carries
#: the differences on. Measured on 1 and 2 threads with oneDNN on and off (docs/benchmark.md#other-cpus).
TOLERANCE = 0.02
#: The runs that cannot meet it (experiment or ensemble: tolerance): three models still mid-climb after the
#: embedded budget (3 epochs, 600 images), where a rounding difference moves the end point. Measured spread
#: over 1 and 2 threads with oneDNN on and off: gray28_tuned 0.445-0.520 (its ensemble's vote 0.500-0.555),
#: objects8_cnn 0.538-0.583 (it keeps its best epoch by 60 validation images), natural_light 0.665-0.690.
WIDER: dict[str, float] = {"gray28_tuned": 0.08, "objects8_cnn": 0.06, "natural_light": 0.03}


def flat_numbers(record: dict, prefix: str = "") -> dict[str, float]:
    numbers = {}
    for key, value in record.items():
        if isinstance(value, dict):
            numbers |= flat_numbers(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers[prefix + key] = value
    return numbers


def metrics_outside_tolerance(committed: dict, fresh: dict, tolerance: float) -> list[str]:
    """Accuracies and IoUs further apart than ``tolerance``; counts (parameters, FLOPs, epochs, images)
    not equal; losses are not compared (they move with the same rounding, unbounded by a share)."""
    old, new = flat_numbers(committed), flat_numbers(fresh)
    if old.keys() != new.keys():
        return [f"keys {sorted(old.keys() ^ new.keys())}"]
    wrong = []
    for key, value in old.items():
        if "loss" in key:
            continue
        if "accuracy" in key or "iou" in key:
            if abs(new[key] - value) > tolerance:
                wrong.append(f"{key} {value:.4f} -> {new[key]:.4f}")
        elif new[key] != value:
            wrong.append(f"{key} {value} -> {new[key]}")
    return wrong


def test_metrics_outside_tolerance_names_what_moved():
    committed = {"test_accuracy": 0.70, "test_loss": 1.0, "parameters": 10, "member_accuracy": {"1": 0.5}}
    assert metrics_outside_tolerance(committed, {**committed, "test_accuracy": 0.715, "test_loss": 2.0}, 0.02) == []
    moved = {**committed, "test_accuracy": 0.73, "parameters": 11, "member_accuracy": {"1": 0.45}}
    assert metrics_outside_tolerance(committed, moved, 0.02) == [
        "test_accuracy 0.7000 -> 0.7300",
        "parameters 10 -> 11",
        "member_accuracy.1 0.5000 -> 0.4500",
    ]


def test_a_fresh_run_gives_the_committed_metrics(reproduced):
    """A fresh `dvc repro` leaves the committed metrics as they were: the checkout's own run against its
    HEAD, or the copy's run against the checkout it was copied from. Exactly on the CPU kind and core
    count the committed run had; within :data:`TOLERANCE` (or its :data:`WIDER` entry) on any other."""
    fresh, base = (REPO, "HEAD") if REPRODUCED_FROM["checkout"] else (reproduced, None)
    if base and changed_inputs(REPO):
        pytest.skip(f"the checkout's code or params differ from HEAD: {changed_inputs(REPO)[:3]}")

    def committed_text(rel: str) -> str:
        return sh("git", "show", f"{base}:{rel}", cwd=REPO) if base else (REPO / rel).read_text()

    committed_machine = json.loads(committed_text("reports/machine.json"))
    here = json.loads((fresh / "reports/machine.json").read_text())
    declared = re.compile(r"reports/(experiments|ensembles)/[^/]+/metrics\.json")  # not dvclive's train/ logs
    listed = sh("git", "ls-files", "reports/experiments", "reports/ensembles", cwd=REPO).split()
    files = [rel for rel in listed if declared.fullmatch(rel)]
    params = yaml.safe_load(committed_text("params.yaml"))
    assert len(files) == len(params["experiments"]) + len(params["ensembles"])  # each run's, none missing
    same_kind = (committed_machine["isa"], committed_machine["cores"]) == (here["isa"], here["cores"])
    wrong = {}
    for rel in files:
        tolerance = 0.0 if same_kind else WIDER.get(Path(rel).parent.name, TOLERANCE)
        committed, now = json.loads(committed_text(rel)), json.loads((fresh / rel).read_text())
        if same_kind and committed != now:
            wrong[rel] = ["changed"]
        elif moved := metrics_outside_tolerance(committed, now, tolerance):
            wrong[rel] = moved
    assert wrong == {}, f"committed on {committed_machine}, run on {here}: {wrong}"


def test_training_is_deterministic(reproduced):
    """Retrained, a model scores exactly as before (gray28_cnn1: 4 s of fit, with the recipe's ReduceLROnPlateau)."""
    metrics = reproduced / "reports/experiments/gray28_cnn1/metrics.json"
    before = metrics.read_text()
    sh("dvc", "repro", "-f", "-s", "train@gray28_cnn1", cwd=reproduced)
    sh("dvc", "repro", cwd=reproduced)  # the report
    assert metrics.read_text() == before


def stale_stages(repo: Path) -> dict[str, list]:
    """`dvc status`'s stages whose code, data or params changed (not merely missing outputs)."""
    status = json.loads(sh("dvc", "status", "--json", cwd=repo))
    return {
        stage: changes
        for stage, changes in status.items()
        if any(isinstance(c, dict) and ({"changed deps", "changed params"} & set(c)) for c in changes)
    }


# every experiment's scoring stage: what an edit to the scoring or its figures re-runs, and nothing upstream
SCORING = {f"evaluate@{name}" for name in yaml.safe_load((REPO / "params.yaml").read_text())["experiments"]}


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"),
    [
        # a figure's code: every model is re-scored, none retrained (dvc status names no train@ stage)
        (
            "stages/reporting/plots.py",
            '"""The figures',
            '"""(edited) The figures',
            SCORING | {"reproduction"},
        ),
        ("stages/reporting/evaluation.py", '"""Scoring', '"""(edited) Scoring', SCORING),
        (
            "studies.yaml",
            "test_accuracy: 0.718",
            "test_accuracy: 0.719",
            {"report", "reproduction"},
        ),  # a claimed number
        ("studies.yaml", "note: model 1 with batch 50", "note: model one, batch 50", {"report", "reproduction"}),
        ("params.yaml", "download_timeout: 60", "download_timeout: 90", set()),
        ("params.yaml", "max_extract_bytes: 8589934592", "max_extract_bytes: 4294967296", set()),
        (
            "stages/models/studies/objects8.py",
            '"""objects8',
            '"""(edited) objects8',
            {"train@objects8_cnn", "train@objects8_search", "train@objects8_resnet"},
        ),
    ],
)
def test_dvc_re_runs_only_what_an_edit_affects(reproduced, path, old, new, expected):
    file = reproduced / path
    original = file.read_text()
    assert old in original
    try:
        file.write_text(original.replace(old, new, 1))
        assert set(stale_stages(reproduced)) == expected
    finally:
        file.write_text(original)
    assert stale_stages(reproduced) == {}


def test_plots_render_in_a_real_browser(reproduced, tmp_path):
    if plots_page.chromium() is None:
        pytest.skip("no headless browser: apt-get install chromium")
    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=reproduced))
    assert not shown.get("errors"), shown["errors"]
    declared = shown["data"]
    vega = [k for k, v in declared.items() if v and v[0]["type"] == "vega"]
    images = [k for k, v in declared.items() if v and v[0]["type"] == "image"]
    assert len(vega) >= 6 + 6 + 1 + 20 and len(images) == len(
        yaml.safe_load((reproduced / "params.yaml").read_text())["experiments"]
    )
    sh("dvc", "plots", "show", "-o", str(tmp_path / "page"), cwd=reproduced)
    page = plots_page.render(tmp_path / "page/index.html", tmp_path / "plots.png")
    assert len(page["charts"]) == len(vega), (len(page["charts"]), len(vega))
    empty = [c for c in page["charts"] if not c["values"] or not c["marks"] or "error" in c]
    assert not empty, empty
    assert len(page["images"]) == len(images) and all(img["width"] > 0 for img in page["images"])
    assert (tmp_path / "plots.png").stat().st_size > 10_000


def test_saved_models_load_without_project_code(reproduced, tmp_path):
    """The trained InceptionResNetV2 (tests/test_model_files.py saves and loads every other registered
    model) loads with plain Keras where the project cannot be imported; the card says what it saw."""
    script = (
        "import importlib.util, sys, keras\n"
        "assert importlib.util.find_spec('stages') is None\n"
        "for path in sys.argv[1:]:\n"
        "    keras.models.load_model(path)\n"
        "print('loaded', len(sys.argv) - 1)\n"
    )
    paths = [str(reproduced / "models" / name / "model.keras") for name in ("cifar_rgb_transfer", "objects8_cnn")]
    out = sh(sys.executable, "-I", "-c", script, *paths, cwd=tmp_path)
    assert f"loaded {len(paths)}" in out
    card = (reproduced / "models/objects8_cnn/README.md").read_text()
    assert "GENERATED SAMPLE DATA" in card and "test accuracy" in card


TOY_MODEL = '''"""toy: the README's "add a study" checklist, followed once."""

from __future__ import annotations

import keras
from keras import layers

from stages.models.blocks import class_probs, close, scaled_input
from stages.models.registry import Shape, register


@register
def toy_cnn(input_shape: Shape, num_classes: int, filters: int = 8) -> keras.Model:
    inputs, x = scaled_input(input_shape)
    x = layers.Conv2D(filters, 3, activation="relu", name="conv")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return close(inputs, class_probs(x, num_classes), "toy_cnn")
'''


def test_a_new_study_is_one_model_function_plus_params(reproduced):
    """README "Add a study", steps 1-3, on data the pipeline already has: then `dvc repro` runs it."""
    kept = {name: (reproduced / name).read_text() for name in ("params.yaml", "studies.yaml", "dvc.yaml", "dvc.lock")}
    gitignore = reproduced / "models/.gitignore"
    kept_ignore = gitignore.read_text() if gitignore.is_file() else None
    before = set(sh("git", "status", "--porcelain", cwd=reproduced).splitlines())
    toy = reproduced / "stages/models/studies/toy.py"
    toy.write_text(TOY_MODEL)
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["experiments"]["toy_cnn"] = {
        "study": "toy",
        "dataset": "cifar10_gray",
        "model": "toy_cnn",
        "epochs": 1,
        "batch_size": 32,
    }
    params["study_defaults"]["toy"] = {}
    studies = yaml.safe_load((reproduced / "studies.yaml").read_text())
    studies["studies"]["toy"] = {"title": "A toy study", "report": "none"}
    studies["experiments"]["toy_cnn"] = {"claimed": {"test_accuracy": 0.5}}
    dvc_yaml = yaml.safe_load((reproduced / "dvc.yaml").read_text())
    dvc_yaml["artifacts"]["toy-cnn"] = {
        "path": "models/toy_cnn",
        "type": "model",
        "desc": "the toy study's model",
        "labels": ["toy", "study", "cifar10_gray"],
    }
    for name, content in (("params.yaml", params), ("studies.yaml", studies), ("dvc.yaml", dvc_yaml)):
        (reproduced / name).write_text(yaml.safe_dump(content, sort_keys=False))
    try:
        changed = set(sh("git", "status", "--porcelain", cwd=reproduced).splitlines()) - before
        assert sorted(line[3:] for line in changed) == [
            "dvc.yaml",
            "params.yaml",
            "stages/models/studies/toy.py",
            "studies.yaml",
        ]
        out = sh("dvc", "repro", "evaluate@toy_cnn", cwd=reproduced)
        assert "Running stage 'train@toy_cnn'" in out and "Running stage 'evaluate@toy_cnn'" in out
        assert "Running stage 'prepare@" not in out
        metrics = json.loads((reproduced / "reports/experiments/toy_cnn/metrics.json").read_text())
        assert metrics["parameters"] == 8 * 9 + 8 + 8 * 10 + 10  # conv (1 channel in), dense 10
        # the project's own layout checks (declared deps = imports, artifacts, no study in generic code)
        sh(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_dvc_yaml.py", cwd=reproduced)
    finally:  # as it was: the later tests expect the reproduced pipeline, up to date
        for name, text in kept.items():
            (reproduced / name).write_text(text)
        if kept_ignore is not None:
            gitignore.write_text(kept_ignore)
        toy.unlink()
        for folder in ("models/toy_cnn", "reports/experiments/toy_cnn"):
            shutil.rmtree(reproduced / folder, ignore_errors=True)


def test_second_repro_does_nothing_and_remote_round_trip(reproduced, tmp_path):
    assert "up to date" in sh("dvc", "status", cwd=reproduced).lower()
    # commit the lock file, push the artefacts, clone, pull: nothing left to recompute
    remote = tmp_path / "remote"
    sh("dvc", "remote", "add", "-d", "shared", str(remote), cwd=reproduced)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=reproduced)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results", cwd=reproduced)
    sh("dvc", "push", cwd=reproduced)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(reproduced), str(clone), cwd=tmp_path)
    sh("dvc", "pull", cwd=clone)
    assert "up to date" in sh("dvc", "status", cwd=clone).lower()
    out = sh("dvc", "repro", cwd=clone)
    assert "didn't change" in out or "up to date" in out.lower(), out[-2000:]
    assert (clone / "models/objects8_cnn/model.keras").is_file()


def test_two_machines_run_their_shards_and_a_third_collects_them(reproduced, tmp_path):
    """A bare Git repo and a local-directory DVC remote; two clones act as two machines, each runs
    its shard of a 2-run sweep and pushes it; a third clone pulls both, shows the whole table, picks
    the best run by its test accuracy and gets that run's model from the DVC remote."""
    git = ("git", "-c", "user.email=t@t", "-c", "user.name=t")
    sh(*git, "add", "-A", cwd=reproduced)
    sh(*git, "commit", "-qm", "results", "--allow-empty", cwd=reproduced)
    bare, storage, target = tmp_path / "origin.git", tmp_path / "storage", "evaluate@cifar_gray_baseline"
    sh("git", "clone", "-q", "--bare", str(reproduced), str(bare), cwd=tmp_path)
    setup = tmp_path / "setup"  # the project's maintainer: the remotes, and the data the sweep needs
    sh("git", "clone", "-q", str(bare), str(setup), cwd=tmp_path)
    sh("dvc", "remote", "add", "-f", "-d", "storage", str(storage), cwd=setup)
    sh("dvc", "cache", "dir", "--local", cache_dir(reproduced), cwd=setup)
    sh(*git, "commit", "-qam", "the DVC remote", cwd=setup)
    sh("git", "push", "-q", "origin", "HEAD", cwd=setup)
    sh("dvc", "push", "-q", "--with-deps", target, cwd=setup)
    sweep = ["--target", target, "-S", "experiments.cifar_gray_baseline.epochs=choice(1,2)"]
    for index in (0, 1):
        machine = tmp_path / f"machine{index}"
        sh("git", "clone", "-q", str(bare), str(machine), cwd=tmp_path)
        sh("dvc", "pull", "-q", "--with-deps", target, cwd=machine)
        out = sh(
            sys.executable, "-m", "stages.tools.shard", str(index), "2", "sweep", *sweep, "--threads", "1", cwd=machine
        )
        assert f"shard {index}/2: 1 run(s): sweep-{index}" in out
    collector = tmp_path / "collector"
    sh("git", "clone", "-q", str(bare), str(collector), cwd=tmp_path)
    sh("dvc", "exp", "pull", "--no-cache", "origin", "sweep-0", "sweep-1", cwd=collector)
    table = sh(sys.executable, "-m", "stages.tools.compare", "cifar_gray", cwd=collector)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| sweep-")}
    assert set(rows) == {"sweep-0", "sweep-1"}, table
    assert "epochs=1" in rows["sweep-0"] and "epochs=2" in rows["sweep-1"], table
    best, best_metrics = best_run(collector, "cifar_gray_baseline", "test_accuracy")
    sh(
        "dvc",
        "get",
        str(bare),
        "models/cifar_gray_baseline",
        "--rev",
        best,
        "-o",
        str(tmp_path / "best"),
        cwd=collector,
    )
    summary = json.loads((tmp_path / "best/summary.json").read_text())
    assert summary["epochs_run"] == best_metrics["epochs_run"] == {"sweep-0": 1, "sweep-1": 2}[best], best
    script = "import sys, keras; print('parameters', keras.models.load_model(sys.argv[1]).count_params())"
    out = sh(sys.executable, "-I", "-c", script, str(tmp_path / "best/model.keras"), cwd=tmp_path)
    assert f"parameters {best_metrics['parameters']}\n" in out, out


def best_run(repo: Path, experiment: str, metric: str) -> tuple[str, dict]:
    """The DVC experiment with the highest <metric> of <experiment>, and its metrics, as `dvc exp show` has them."""
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo))
    key = f"reports/experiments/{experiment}/metrics.json"
    runs = {
        run["name"]: run["revs"][0]["data"]["metrics"][key]["data"]
        for baseline in shown
        for run in baseline.get("experiments") or []
    }
    name = max(runs, key=lambda run: runs[run][metric])
    return name, runs[name]


def test_exp_run_with_one_changed_parameter_retrains_only_that_experiment(reproduced):
    out = sh(
        "dvc", "exp", "run", "-n", "baseline-1-epoch", "-S", "experiments.cifar_gray_baseline.epochs=1", cwd=reproduced
    )
    assert "Running stage 'train@cifar_gray_baseline'" in out
    retrained = [line for line in out.splitlines() if line.startswith("Running stage 'train@")]
    assert retrained == ["Running stage 'train@cifar_gray_baseline':"], retrained
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=reproduced))
    assert "baseline-1-epoch" in json.dumps(shown)
    diff = sh("dvc", "metrics", "diff", "HEAD", "baseline-1-epoch", cwd=reproduced)
    assert "cifar_gray_baseline" in diff and "test_accuracy" in diff
    # one screen: only the changed experiment's few headline metrics, within 120 columns
    lines = diff.strip().splitlines()
    assert len(lines) <= 12 and max(map(len, lines)) <= 120, diff
    assert all("cifar_gray_baseline" in line for line in lines[2:]), diff
