"""The real-data evidence: records written by `stages.tools.record`, the table `stages.reproduction` builds
from them, and the README's copy of its summary."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from stages import reproduction
from stages.core import config
from stages.core.errors import ConfigError, DataError
from stages.tools import record

REPO = Path(__file__).resolve().parents[1]


def _between(text: str) -> str:
    start, end = text.index(reproduction.TABLE_START), text.index(reproduction.TABLE_END)
    return text[start:end]


def test_readme_shows_the_generated_summary():
    generated = (REPO / "reports" / "reproduction.md").read_text()
    assert _between((REPO / "README.md").read_text()) == _between(generated)


def test_committed_table_is_the_one_the_records_give():
    params = config.load(REPO / "params.yaml")
    studies = config.load_studies(params, REPO / "studies.yaml")
    records = reproduction.load_records(REPO / "reports" / "reproduction")
    ensembles = reproduction.load_ensemble_records(REPO / "reports" / "reproduction")
    rows = reproduction.experiment_rows(params, studies, records)
    text = reproduction.markdown(params, studies, records, rows, ensembles)
    assert text == (REPO / "reports" / "reproduction.md").read_text()
    for name in params.experiments:  # every experiment has a row
        assert f"\n| {name} |" in text
    for name, r in records.items():  # and every record, with its number
        assert f"| {name} |" in text and reproduction.score(r) in text


LOCKED_MODEL = {"path": "models/objects8_cnn", "hash": "md5", "md5": "0f" * 16 + ".dir", "size": 7, "nfiles": 4}


def write_json_files(files: dict[str, dict]) -> None:
    """Each path's content as JSON, its folders made."""
    for path, content in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(content))


@pytest.fixture
def real_run(tmp_path, monkeypatch):
    """A git checkout holding the outputs one real-data run of objects8_cnn leaves."""
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    Path("params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "add", "params.yaml"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"], check=True)
    params["profile"] = "full"
    params["experiments"]["objects8_cnn"]["epochs"] = 2  # a shorter run than the committed recipe
    Path("params.yaml").write_text(yaml.safe_dump(params))
    files = {
        "data/raw/cifar10/provenance.json": {
            "origin": "local copy /x.tar.gz",
            "official": False,
            "sha256": {"x.tar.gz": "ab" * 32},
            "sha256_of_listing": "cd" * 32,
        },
        "data/prepared/objects8/meta.json": {"counts": {"train": 9, "val": 1, "test": 4}, "classes": list("abcdefgh")},
        "models/objects8_cnn/summary.json": {"epochs_run": 2, "train_seconds": 120.0},
        "reports/experiments/objects8_cnn/metrics.json": {
            "test_accuracy": 0.75,
            "test_loss": 0.7,
            "parameters": 598392,
            "flops": 252178944,
        },
        "reports/experiments/objects8_cnn/details.json": {"train_seconds": 120.0},
        "dvc.lock": {"schema": "2.0", "stages": {"train@objects8_cnn": {"outs": [LOCKED_MODEL]}}},  # JSON is YAML
    }
    write_json_files(files)
    return tmp_path


def test_record_of_a_shortened_run_is_partial_and_carries_its_provenance(real_run):
    r = record.build_record(config.load(), "objects8_cnn")
    assert r["epochs"] == {"recipe": 10, "budget": 2, "run": 2} and r["budget"] == "partial"
    assert r["data"]["official_release"] is False and r["data"]["sha256"] == {"x.tar.gz": "ab" * 32}
    assert len(r["commit"]) == 40 and r["metrics"]["test_accuracy"] == 0.75
    assert r["machine"]["cores"] >= 1 and r["params"]["experiment"]["epochs"] == 2


def commit_as_experiment(name: str) -> str:
    """What `dvc exp run -n <name>` leaves: a commit of the workspace's dvc.lock on HEAD, under
    refs/exps/<HEAD[:2]>/<HEAD[2:]>/<name>."""

    def git(*args: str, **env: str) -> str:
        done = subprocess.run(["git", *args], check=True, capture_output=True, text=True, env={**os.environ, **env})
        return done.stdout.strip()

    index = {"GIT_INDEX_FILE": str(Path(".git/exp-index").resolve())}
    git("add", "dvc.lock", **index)
    tree = git("write-tree", **index)
    commit = git("-c", "user.name=t", "-c", "user.email=t@t", "commit-tree", tree, "-p", "HEAD", "-m", name)
    head = git("rev-parse", "HEAD")
    git("update-ref", f"refs/exps/{head[:2]}/{head[2:]}/{name}", commit)
    return commit


def test_a_record_names_the_model_hash_and_the_dvc_experiment_that_made_it(real_run):
    r = record.build_record(config.load(), "objects8_cnn")
    assert r["model"] == {key: LOCKED_MODEL[key] for key in ("path", "md5", "size", "nfiles")}
    assert r["dvc_experiment"] is None  # `dvc repro`: no experiment to publish
    commit = commit_as_experiment("objects8-2epochs")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert record.build_record(config.load(), "objects8_cnn")["dvc_experiment"] == {
        "name": "objects8-2epochs",
        "ref": f"refs/exps/{head[:2]}/{head[2:]}/objects8-2epochs",
        "commit": commit,
    }
    Path("dvc.lock").write_text(
        json.dumps({"stages": {"train@objects8_cnn": {"outs": [{**LOCKED_MODEL, "md5": "1a" * 16}]}}})
    )
    assert record.build_record(config.load(), "objects8_cnn")["dvc_experiment"] is None  # another model: not that run
    Path("dvc.lock").unlink()
    with pytest.raises(
        DataError, match=r"dvc.lock: no hash for models/objects8_cnn; run `dvc repro train@objects8_cnn`"
    ):
        record.build_record(config.load(), "objects8_cnn")


def ensemble_run(seeds_accuracy: dict[int, float]) -> None:
    """What `dvc exp run -S profile=full ensemble@gray28_tuned` leaves on real data: each member's model
    folder (its summary), the vote's metrics and the members' hashes in dvc.lock."""
    files = {
        "data/raw/fashion_mnist/provenance.json": {"origin": "local copy /fm", "official": True, "sha256": {"a": "ef"}},
        "data/prepared/gray28/meta.json": {"counts": {"train": 9, "val": 1, "test": 4}, "classes": list("0123456789")},
        "reports/ensembles/gray28_tuned/metrics.json": {
            "experiment": "gray28_tuned",
            "members": len(seeds_accuracy),
            "ensemble_accuracy": 0.95,
            "best_member_accuracy": max(seeds_accuracy.values()),
            "mean_member_accuracy": sum(seeds_accuracy.values()) / len(seeds_accuracy),
            "member_accuracy": {str(s): a for s, a in seeds_accuracy.items()},
            "test_images": 4,
        },
        "dvc.lock": {
            "stages": {
                f"train_member@gray28_tuned-{s}": {
                    "outs": [{"path": f"models/ensembles/gray28_tuned/seed{s}", "md5": f"{s:02d}" * 16 + ".dir"}]
                }
                for s in seeds_accuracy
            }
        },
    }
    for seed in seeds_accuracy:
        files[f"models/ensembles/gray28_tuned/seed{seed}/summary.json"] = {"epochs_run": 40, "train_seconds": 600.0}
    write_json_files(files)


def test_an_ensemble_record_names_every_member_and_the_vote_and_the_table_sets_it_against_the_study(real_run):
    params = config.load()
    params.experiments["gray28_tuned"].epochs = 40
    ensemble_run({1: 0.94, 2: 0.93, 3: 0.945})
    r = record.build_ensemble_record(params, "gray28_tuned")
    assert [(m["seed"], m["test_accuracy"], m["epochs_run"]) for m in r["members"]] == [
        (1, 0.94, 40),
        (2, 0.93, 40),
        (3, 0.945, 40),
    ]
    assert r["members"][1]["model"] == {"path": "models/ensembles/gray28_tuned/seed2", "md5": "02" * 16 + ".dir"}
    assert r["train_seconds"] == 1800.0 and r["metrics"]["ensemble_accuracy"] == 0.95
    assert r["budget"] == "full recipe" and r["data"]["official_release"] is True
    assert r["dvc_experiment"] is None  # `dvc repro`; an experiment holding all three members is named:
    commit = commit_as_experiment("full-ensemble")
    assert record.build_ensemble_record(params, "gray28_tuned")["dvc_experiment"]["commit"] == commit

    studies = config.load_studies(params, REPO / "studies.yaml")
    table = "\n".join(reproduction.ensemble_table(params, studies, {"gray28_tuned": r}))
    assert (
        "| 95.0 % | 94.5 %, 93.8 % | seed 1: 94.0 % (40 epochs, 10 min); seed 2: 93.0 % (40 epochs, 10 min); "
        "seed 3: 94.5 % (40 epochs, 10 min) | 30 min on " in table
    )
    assert (
        "| 92.4 % | about 30 runs voted (only runs above 91 % test accuracy kept), 36 h on one GTX 1080 Ti |" in table
    )
    empty = "\n".join(reproduction.ensemble_table(params, studies, {}))
    assert "| gray28_tuned | – | – | no real-data record yet |" in empty
    with pytest.raises(ConfigError, match=r"name an experiment or --ensemble <name>, not both"):
        record.main("gray28_tuned", ensemble="gray28_tuned")


def test_an_ensemble_record_needs_every_members_hash_and_real_data(real_run):
    params = config.load()
    ensemble_run({1: 0.94, 2: 0.93, 3: 0.945})
    lock = json.loads(Path("dvc.lock").read_text())
    del lock["stages"]["train_member@gray28_tuned-3"]
    Path("dvc.lock").write_text(json.dumps(lock))
    with pytest.raises(
        DataError, match=r"no hash for models/ensembles/gray28_tuned/seed3; run `dvc repro train_member@gray28_tuned-3`"
    ):
        record.build_ensemble_record(params, "gray28_tuned")
    Path("data/raw/fashion_mnist/provenance.json").write_text(json.dumps({"origin": "generated sample data"}))
    with pytest.raises(DataError, match="ensemble gray28_tuned: trained on generated sample data"):
        record.build_ensemble_record(params, "gray28_tuned")


def write_epoch_seconds(live_dir: str, seconds_by_step: dict[int, float]) -> None:
    """dvclive's per-epoch log of ``epoch_seconds``, as the training's EpochTimer leaves it."""
    tsv = Path(live_dir) / "plots" / "metrics" / "train" / "epoch_seconds.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{1000 + step}\t{step}\t{s}" for step, s in seconds_by_step.items()]
    tsv.write_text("\n".join(["timestamp\tstep\tepoch_seconds", *rows]) + "\n")


def test_a_record_counts_every_epochs_time_and_refuses_a_log_that_lost_the_first_epochs(real_run):
    params = config.load()
    write_epoch_seconds("reports/experiments/objects8_cnn/train", {0: 60.0})  # 1 of the 2 epochs run
    with pytest.raises(DataError, match=r"holds epochs 1-1 of the 2 trained.*`dvc repro -f train@objects8_cnn`"):
        record.build_record(params, "objects8_cnn")
    params.experiments["gray28_tuned"].epochs = 40
    ensemble_run({1: 0.94, 2: 0.93, 3: 0.945})
    for seed in (1, 2, 3):  # seed 1 killed after 34 epochs and resumed: its log holds all 40
        write_epoch_seconds(f"reports/ensembles/gray28_tuned/seed{seed}/train", dict.fromkeys(range(40), 30.0))
    r = record.build_ensemble_record(params, "gray28_tuned")
    assert [m["train_seconds"] for m in r["members"]] == [1200.0] * 3 and r["train_seconds"] == 3600.0
    # what a stage whose log DVC removed before the resume leaves: the last six epochs only
    write_epoch_seconds("reports/ensembles/gray28_tuned/seed1/train", dict.fromkeys(range(34, 40), 30.0))
    with pytest.raises(
        DataError,
        match=r"seed1/train: its dvclive log holds epochs 35-40 of the 40 trained, so its curve and time would "
        r"be wrong; train it again from the start: `dvc repro -f train_member@gray28_tuned-1`",
    ):
        record.build_ensemble_record(params, "gray28_tuned")


def test_no_record_for_generated_data(real_run):
    Path("data/raw/cifar10/provenance.json").write_text(json.dumps({"origin": "generated sample data"}))
    with pytest.raises(DataError, match="objects8_cnn: trained on generated sample data"):
        record.build_record(config.load(), "objects8_cnn")


def test_rows_mark_partial_and_not_reproducible(real_run):
    params = config.load()
    studies = config.load_studies(params, REPO / "studies.yaml")
    r = record.build_record(params, "objects8_cnn")
    rows = reproduction.experiment_rows(params, studies, {"objects8_cnn": r})
    row = next(x for x in rows if x["experiment"] == "objects8_cnn")
    assert row["partial"] and row["budget"].startswith("partial (2 of 10 epochs")
    assert row["cost"] == "0.60 M, 252 M"  # parameters and FLOPs per image, from the run's metrics
    transfer = next(x for x in rows if x["experiment"] == "cifar_rgb_transfer")
    assert transfer["result"].startswith("not reproducible here: needs ImageNet weights")
    summary = "\n".join(reproduction.summary_rows(params, studies, rows))
    assert "| objects8 | 71.8 % (objects8_cnn) | 75.0 % (objects8_cnn, partial) | no record yet |" in summary
    # natural's one study model needs ImageNet weights: its column says so, not "no record yet"
    assert (
        "| natural | 95.8 % (natural_resnet50, not reproducible here) | not reproducible here | no record yet |"
        in summary
    )


def test_a_run_longer_than_the_recipe_is_labelled_and_kept_out_of_the_summary(real_run):
    """A ceiling run (more epochs than the recipe) gets its row, but the summary quotes the recipe's runs."""
    params = config.load()
    params.experiments["objects8_cnn"].epochs = 20
    Path("models/objects8_cnn/summary.json").write_text(json.dumps({"epochs_run": 20, "train_seconds": 1200.0}))
    r = record.build_record(params, "objects8_cnn")
    assert r["epochs"]["budget"] == 20 and r["budget"] == "longer than the recipe"
    studies = config.load_studies(params, REPO / "studies.yaml")
    rows = reproduction.experiment_rows(params, studies, {"objects8_cnn-20epochs": r})
    row = next(x for x in rows if x["record"] == "objects8_cnn-20epochs")
    assert row["budget"].startswith("longer than the recipe (20 of 10 epochs") and not row["partial"]
    summary = "\n".join(reproduction.summary_rows(params, studies, rows))
    assert "| objects8 | 71.8 % (objects8_cnn) | no record yet | no record yet |" in summary


def test_curves_show_each_records_held_out_accuracy_per_epoch():
    """The validation curve where there is one, else the tracked test curve; a long run every n-th epoch."""
    epochs = {"recipe": 10, "budget": 2, "run": 2}
    records = {
        "short": {"curve": {"eval_accuracy": [0.5, 0.625]}, "budget": "partial", "epochs": epochs, "train_seconds": 60},
        "no-val": {"curve": {"test_accuracy": [0.4, 0.9]}, "budget": "partial", "epochs": epochs, "train_seconds": 60},
        "long": {
            "curve": {"eval_accuracy": [i / 100 for i in range(1, 41)]},
            "budget": "full recipe",
            "epochs": {"recipe": 40, "budget": 40, "run": 40},
            "train_seconds": 600,
        },
    }
    records["stopped"] = {**records["long"], "epochs": {"recipe": 40, "budget": 40, "run": 31}}
    text = "\n".join(reproduction.curves(records))
    assert "| short | partial (2 of 10 epochs, 60 s) | validation | 50.0, 62.5 |" in text
    assert "| stopped | full recipe (early stopping at 31 of 40 epochs, 10 min) |" in text
    assert "| no-val | partial (2 of 10 epochs, 60 s) | test | 40.0, 90.0 |" in text
    assert "| validation | every 2 epochs: 2.0, 4.0," in text and text.endswith("40.0 |\n")
    records["long"]["curve"]["eval_accuracy"].append(0.41)  # 41 epochs, every 3rd: counted back from the last
    assert "| validation | every 3 epochs: 2.0, 5.0," in "\n".join(reproduction.curves(records))
    assert "\n".join(reproduction.curves(records)).endswith("38.0, 41.0 |\n")


def test_runs_repeated_at_other_seeds_share_a_row_with_their_mean_and_spread(real_run):
    """Same params but the seed: one row, the mean, the standard deviation and each seed's number; the
    summary quotes the mean. A run with other epochs keeps its own row."""
    params = config.load()
    studies = config.load_studies(params, REPO / "studies.yaml")
    records = {}
    for seed, accuracy in ((None, 0.75), (1, 0.77), (2, 0.76)):
        params.experiments["objects8_cnn"].seed = seed
        Path("reports/experiments/objects8_cnn/metrics.json").write_text(
            json.dumps({"test_accuracy": accuracy, "parameters": 598392, "flops": 252178944})
        )
        records[f"objects8_cnn-seed{seed}"] = record.build_record(params, "objects8_cnn")
    params.experiments["objects8_cnn"].epochs = 3
    records["objects8_cnn-3epochs"] = record.build_record(params, "objects8_cnn")
    rows = [r for r in reproduction.experiment_rows(params, studies, records) if r["experiment"] == "objects8_cnn"]
    assert [r["record"] for r in rows] == [
        "objects8_cnn-seed1, objects8_cnn-seed2, objects8_cnn-seedNone",  # seed order: 1, 2, then 42
        "objects8_cnn-3epochs",
    ]
    assert rows[0]["ours"] == pytest.approx(0.76) and rows[0]["spread"] == pytest.approx(0.01)
    assert rows[0]["result"] == (
        "76.0 % mean of 3 seeds, standard deviation 1.00 points (seed 1: 77.0 %; seed 2: 76.0 %; seed 42: 75.0 %)"
    )
    assert rows[0]["budget"].endswith(", mean") and rows[1]["seeds"] == 1
    summary = "\n".join(reproduction.summary_rows(params, studies, rows))
    assert "| objects8 | 71.8 % (objects8_cnn) | 76.0 %, mean of 3 seeds (objects8_cnn, partial) |" in summary


def test_a_record_names_its_data_as_a_clone_would_point_at_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path.parent / "datasets" / "fashion-mnist"
    assert record.project_relative(f"local copy {outside}, {tmp_path / 'data/x.zip'}") == (
        "local copy ../datasets/fashion-mnist, data/x.zip"
    )
    assert record.project_relative("generated sample data") == "generated sample data"
    for path in sorted(Path(REPO, "reports/reproduction").glob("*.json")):
        origin = json.loads(path.read_text())["data"]["origin"]
        assert not any(Path(p).is_absolute() for p in origin.removeprefix("local copy ").split(", ")), path.name


def test_expected_time_scales_a_records_epochs_to_the_recipe_else_uses_the_bench():
    params = config.load()
    run = {
        "experiment": "objects8_cnn",
        "epochs": {"run": 2},
        "train_seconds": 120.0,  # 60 s per epoch; the recipe's 10 epochs: 10 min
        "data": {"dataset": "objects8", "counts": {"train": 36000}},
        "machine": {"cpu": "X", "cores": 2},
    }
    records = {"objects8_cnn-2epochs": run}
    assert reproduction.expected_time(params, records, {}, "objects8_cnn") == (
        "10 min",
        "record (2 epochs on 36000 images; X, 2 cores)",
    )
    bench = {"machine": "2 CPU cores", "training": [{"model": "objects8_resnet", "pipeline_images_per_s": 600}]}
    # no record of objects8_resnet: its 18 epochs x the 36000 images a record of objects8 counted / 600 per s
    assert reproduction.expected_time(params, records, bench, "objects8_resnet") == (
        "18 min",
        "bench (600 images/s on 2 CPU cores) x 36000 images",
    )
    assert reproduction.expected_time(params, {}, bench, "objects8_resnet")[0] == "not measured"
    assert [reproduction.duration(s) for s in (50, 2100, 15_120)] == ["50 s", "35 min", "4 h 12 min"]
