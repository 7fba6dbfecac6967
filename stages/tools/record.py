"""Record a real-data run: ``python -m stages.tools.record <experiment> [<record>]`` or ``--ensemble <name>``.

After ``dvc repro evaluate@<experiment>`` on real data (profile ``full``, a ``sources.*.path``),
this writes ``reports/reproduction/<record>.json`` (``<record>`` defaults to the experiment; give
another name for a second run of it, e.g. ``gray28_cnn1-5class``): the data's origin and sha256,
official release or not, the commit and params it ran with, epochs run against the recipe's, the
test metrics, training seconds, the learning curve, the machine, the DVC hash of ``models/<experiment>``
and, for a ``dvc exp run``, the DVC experiment's name and Git ref (what ``dvc exp push`` publishes and
``dvc get --rev <name>`` pulls: docs/models.md). ``--ensemble <name>`` records ``ensemble@<name>``
instead (``reports/reproduction/ensembles/<name>.json``): the vote and each member's seed, accuracy,
epochs, training seconds, model hash and curve. Commit the file: the
``reproduction`` stage builds ``reports/reproduction.md`` from these records.  It refuses to write
a record for outputs that DVC says are out of date, or for generated sample data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from stages.core import cli, config
from stages.core.errors import ConfigError, DataError
from stages.core.files import sha256, write_json
from stages.core.live import read_live_metric
from stages.core.machine import machine
from stages.core.paths import EXPERIMENT_REPORTS, MODELS, PREPARED, RAW, RECORDS
from stages.download import MAX_LISTED_FILES
from stages.ensemble import ENSEMBLE_REPORTS, member_dir

if TYPE_CHECKING:
    from stages.training.settings import Run

LOCAL_COPY = "local copy "  # how download's provenance.json names a source's local files

ENSEMBLE_RECORDS = RECORDS / "ensembles"  # one record per ensemble@<name>: reports/reproduction/ensembles/<name>.json
RECORD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,80}")


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise ConfigError(f"git {' '.join(args)} failed: {' '.join(str(e).split())}") from None


def stale_stages(target: str) -> list[str]:
    """The stages up to ``target`` (a stage) whose outputs DVC says do not match code, data or params."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        return sorted(repo.status(targets=[target], with_deps=True))


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro` for this experiment first")
    return json.loads(path.read_text())


def recipe_epochs(experiment: str) -> int:
    """The experiment's epochs in the committed params.yaml: the study's recipe, whatever was run."""
    committed = config.parse(git("show", "HEAD:params.yaml"), "HEAD:params.yaml")
    return committed.experiments[experiment].epochs


def curve(live_dir: Path) -> dict[str, list[float]]:
    """Per-epoch train, validation and (``track_test``) test accuracy and loss from dvclive's logs."""
    series = {}
    for split in ("train", "eval", "test"):
        for metric in ("accuracy", "loss"):
            s = read_live_metric(live_dir, f"{split}/{metric}")
            if s is not None:
                series[f"{split}_{metric}"] = [round(float(v), 5) for v in s.to_numpy()]
    return series


def train_seconds(live_dir: Path, summary: dict, stage: str) -> float:
    """Training wall seconds: the sum of dvclive's per-epoch times, else (no log) the summary's figure, which
    counts only the last process. The log must hold every epoch run: a resumed run keeps its earlier rows only
    as a ``persist`` output (DVC removes a stage's other outputs before running it), and the last epochs
    alone would give a wrong time and curve."""
    per_epoch = read_live_metric(live_dir, "train/epoch_seconds")
    if per_epoch is None:
        return summary["train_seconds"]
    epochs_run = summary["epochs_run"]
    if list(per_epoch.index) != list(range(1, epochs_run + 1)):
        held = f"epochs {per_epoch.index[0]}-{per_epoch.index[-1]}" if len(per_epoch) else "no epoch"
        raise DataError(
            f"{live_dir}: its dvclive log holds {held} of the {epochs_run} trained, so its curve and time would "
            f"be wrong; train it again from the start: `dvc repro -f {stage}`"
        )
    return round(float(per_epoch.sum()), 1)


def accelerator() -> str:
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        return out.splitlines()[0] if out.strip() else "GPU (nvidia-smi lists none)"
    return "none (CPU only)"


def raw_sha256(folder: Path) -> dict[str, str] | None:
    """The raw files' sha256, for a download stage of a version that did not record them (None if many)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "provenance.json")
    return {p.relative_to(folder).as_posix(): sha256(p) for p in files} if len(files) <= MAX_LISTED_FILES else None


def budget_kind(budget: int, recipe: int) -> str:
    """The record's budget: the recipe's epochs, fewer ("partial") or more (e.g. a ceiling run)."""
    if budget == recipe:
        return "full recipe"
    return "partial" if budget < recipe else "longer than the recipe"


def project_relative(origin: str | None) -> str | None:
    """``local copy /abs/a, /abs/b`` as paths relative to the project (the folder the record is made in), so
    that a record names the data as any clone would point at it, not by one machine's folders."""
    if not origin or not origin.startswith(LOCAL_COPY):
        return origin
    paths = origin.removeprefix(LOCAL_COPY).split(", ")
    return LOCAL_COPY + ", ".join(os.path.relpath(p) if os.path.isabs(p) else p for p in paths)


def parse_lock(text: str) -> dict:
    """A dvc.lock's text as a mapping ({} for an empty one)."""
    return yaml.safe_load(text) or {}


def locked_out(lock: dict, stage: str, path: Path) -> dict | None:
    """A stage's output as a parsed dvc.lock records it: path, md5 (DVC's hash), size and file count."""
    outs = lock.get("stages", {}).get(stage, {}).get("outs", [])
    out = next((o for o in outs if o.get("path") == path.as_posix()), None)
    return {key: out[key] for key in ("path", "md5", "size", "nfiles") if key in out} if out else None


def dvc_experiment(models: dict[str, dict]) -> dict | None:
    """The DVC experiment (``dvc exp run`` on this commit) whose dvc.lock holds all these models (by
    their DVC hash; ``models`` maps a stage name to its locked output), newest first; None for a run made
    with ``dvc repro``, which has no experiment ref to publish."""
    head = git("rev-parse", "HEAD")
    refs = git(
        "for-each-ref",
        "--sort=-committerdate",
        "--format=%(objectname) %(refname)",
        f"refs/exps/{head[:2]}/{head[2:]}/",
    )
    for line in refs.splitlines():
        commit, ref = line.split(" ", 1)
        lock = parse_lock(git("show", f"{commit}:dvc.lock"))
        locked = {stage: locked_out(lock, stage, Path(out["path"])) for stage, out in models.items()}
        if all(locked[stage] and locked[stage].get("md5") == out["md5"] for stage, out in models.items()):
            return {"name": ref.rsplit("/", 1)[-1], "ref": ref, "commit": commit}
    return None


def workspace_lock() -> dict:
    """This checkout's dvc.lock, parsed ({} without one)."""
    path = Path("dvc.lock")
    return parse_lock(path.read_text()) if path.is_file() else {}


def locked_hash(lock: dict, stage: str, path: Path) -> dict:
    """``locked_out`` with DVC's hash, or the one-line error saying which stage to run for it."""
    out = locked_out(lock, stage, path)
    if not out or "md5" not in out:
        raise DataError(f"dvc.lock: no hash for {path.as_posix()}; run `dvc repro {stage}` first")
    return out


def data_record(params: config.Params, dataset: str, name: str) -> dict:
    """Where a run's data came from (refusing generated sample data): origin, sha256, counts, classes."""
    ds = params.datasets[dataset]
    provenance = read_json(RAW / ds.source / "provenance.json")
    if provenance.get("origin") == "generated sample data":
        raise DataError(f"{name}: trained on generated sample data; a record is for real data (profile full)")
    meta = read_json(PREPARED / dataset / "meta.json")
    return {
        "source": ds.source,
        "dataset": dataset,
        "origin": project_relative(provenance.get("origin")),
        "official_release": provenance.get("official"),
        "sha256": provenance.get("sha256") or raw_sha256(RAW / ds.source),
        "sha256_of_listing": provenance.get("sha256_of_listing"),
        "counts": meta["counts"],
        "classes": meta["classes"],
    }


def run_record(params: config.Params, run: Run, name: str) -> dict:
    """What every record begins with: the run's study, when, the commit and its uncommitted code, the data
    and the params it ran with."""
    return {
        "study": run.study,
        "recorded": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git("rev-parse", "HEAD"),
        "code_changes": git("status", "--porcelain", "--", "stages", "dvc.yaml").splitlines(),
        "data": data_record(params, run.dataset, name),
        "params": {
            "profile": params.profile,
            "seed": params.seed,
            "experiment": run.model_dump(mode="json"),
            "dataset": params.datasets[run.dataset].model_dump(mode="json"),
        },
    }


def build_record(params: config.Params, experiment: str) -> dict:
    from stages.training.settings import resolve  # the model registry: Keras, so not for --help

    run = resolve(params, experiment)  # what the run used: params.yaml's layers merged, the profile's caps applied
    summary = read_json(MODELS / experiment / "summary.json")
    recipe, budget = recipe_epochs(experiment), run.epochs
    model = locked_hash(workspace_lock(), f"train@{experiment}", MODELS / experiment)
    return {
        "experiment": experiment,
        **run_record(params, run, experiment),
        "dvc_experiment": dvc_experiment({f"train@{experiment}": model}),  # `dvc get ... --rev <name>`
        "model": model,
        "epochs": {"recipe": recipe, "budget": budget, "run": summary["epochs_run"]},
        "budget": budget_kind(budget, recipe),
        "metrics": read_json(EXPERIMENT_REPORTS / experiment / "metrics.json"),
        "details": read_json(EXPERIMENT_REPORTS / experiment / "details.json"),
        "train_seconds": train_seconds(EXPERIMENT_REPORTS / experiment / "train", summary, f"train@{experiment}"),
        "curve": curve(EXPERIMENT_REPORTS / experiment / "train"),
        "machine": {**machine(), "accelerator": accelerator()},
    }


def member_record(name: str, seed: int, test_accuracy: float, lock: dict) -> dict:
    """One ensemble member: its seed, test accuracy, epochs run, training seconds, model hash and curve."""
    live, folder = ENSEMBLE_REPORTS / name / f"seed{seed}" / "train", member_dir(name, seed)
    stage = f"train_member@{name}-{seed}"
    summary = read_json(folder / "summary.json")
    return {
        "seed": seed,
        "test_accuracy": test_accuracy,
        "epochs_run": summary["epochs_run"],
        "train_seconds": train_seconds(live, summary, stage),
        "model": locked_hash(lock, stage, folder),
        "curve": curve(live),
    }


def build_ensemble_record(params: config.Params, name: str) -> dict:
    """The record of ensemble@<name>'s real-data run: its vote, and each member as a record gives a run."""
    from stages.training.settings import resolve

    ens = config.lookup(params.ensembles, name, "ensemble")
    run = resolve(params, ens.experiment)  # every member's recipe (each with its own seed)
    common = run_record(params, run, f"ensemble {name}")  # first: it refuses generated data
    metrics = read_json(ENSEMBLE_REPORTS / name / "metrics.json")
    lock = workspace_lock()
    members = [member_record(name, s, metrics["member_accuracy"][str(s)], lock) for s in params.seeds(name)]
    recipe, budget = recipe_epochs(ens.experiment), run.epochs
    return {
        "ensemble": name,
        "experiment": ens.experiment,
        **common,
        "dvc_experiment": dvc_experiment({f"train_member@{name}-{m['seed']}": m["model"] for m in members}),
        "epochs": {"recipe": recipe, "budget": budget, "run": min(m["epochs_run"] for m in members)},
        "budget": budget_kind(budget, recipe),
        "metrics": metrics,
        "train_seconds": round(sum(m["train_seconds"] for m in members), 1),
        "members": members,
        "machine": {**machine(), "accelerator": accelerator()},
    }


def main(experiment: str = "", record: str = "", ensemble: str = "") -> None:
    """Write reports/reproduction/<record>.json for the real-data run of <experiment> in this checkout, or
    reports/reproduction/ensembles/<ensemble>.json for its ensemble@<ensemble>."""
    params = config.load()
    if bool(experiment) == bool(ensemble):
        raise ConfigError("name an experiment or --ensemble <name>, not both")
    if ensemble:
        config.lookup(params.ensembles, ensemble, "ensemble")
        target, out, build = f"ensemble@{ensemble}", ENSEMBLE_RECORDS / f"{ensemble}.json", build_ensemble_record
    else:
        config.lookup(params.experiments, experiment, "experiment")
        record = record or experiment
        if not RECORD_NAME.fullmatch(record):
            raise ConfigError(f"record name {record!r}: use letters, digits, '_', '-' and '.' only")
        target, out, build = f"evaluate@{experiment}", RECORDS / f"{record}.json", build_record
    stale = stale_stages(target)
    if stale:
        raise DataError(f"{', '.join(stale)}: out of date; run `dvc repro {target}` first")
    write_json(out, build(params, ensemble or experiment))
    print(f"record: {out}")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("experiment", nargs="?", default="", help="a params.yaml experiment, run here on real data")
    command.add_argument("record", nargs="?", default="", help="the record's name (default: the experiment's)")
    command.add_argument("--ensemble", default="", help="record ensemble@<name> (its members and vote) instead")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
