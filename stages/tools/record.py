"""Record a real-data run: ``python -m stages.tools.record <experiment> [<record>]``.

After ``dvc repro evaluate@<experiment>`` on real data (profile ``full``, a ``sources.*.path``),
this writes ``reports/reproduction/<record>.json`` (``<record>`` defaults to the experiment; give
another name for a second run of it, e.g. ``gray28_cnn1-5class``): the data's origin and sha256,
official release or not, the commit and params it ran with, epochs run against the recipe's, the
test metrics, training seconds, the learning curve, the machine, the DVC hash of ``models/<experiment>``
and, for a ``dvc exp run``, the DVC experiment's name and Git ref (what ``dvc exp push`` publishes and
``dvc get --rev <name>`` pulls: docs/models.md). Commit the file: the
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

import yaml

from stages.core import cli, config
from stages.core.errors import ConfigError, DataError
from stages.core.files import sha256, write_json
from stages.core.live import read_live_metric
from stages.core.machine import machine
from stages.core.paths import EXPERIMENT_REPORTS, MODELS, PREPARED, RAW, RECORDS
from stages.download import MAX_LISTED_FILES

LOCAL_COPY = "local copy "  # how download's provenance.json names a source's local files

RECORD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,80}")


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise ConfigError(f"git {' '.join(args)} failed: {' '.join(str(e).split())}") from None


def stale_stages(experiment: str) -> list[str]:
    """The stages up to evaluate@<experiment> whose outputs DVC says do not match code, data or params."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        return sorted(repo.status(targets=[f"evaluate@{experiment}"], with_deps=True))


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


def train_seconds(live_dir: Path, summary: dict) -> float:
    """Training wall seconds: the sum of dvclive's per-epoch times (a resumed run keeps the earlier
    epochs' rows), else the summary's figure (which counts only the last process)."""
    per_epoch = read_live_metric(live_dir, "train/epoch_seconds")
    return round(float(per_epoch.sum()), 1) if per_epoch is not None and len(per_epoch) else summary["train_seconds"]


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


def locked_model(lock_text: str, experiment: str) -> dict | None:
    """models/<experiment> as a dvc.lock text records it: path, md5 (DVC's hash), size and file count."""
    stage = (yaml.safe_load(lock_text) or {}).get("stages", {}).get(f"train@{experiment}", {})
    out = next((o for o in stage.get("outs", []) if o.get("path") == f"{MODELS.as_posix()}/{experiment}"), None)
    return {key: out[key] for key in ("path", "md5", "size", "nfiles") if key in out} if out else None


def dvc_experiment(experiment: str, model_md5: str) -> dict | None:
    """The DVC experiment (``dvc exp run`` on this commit) whose dvc.lock holds this model, newest first;
    None for a run made with ``dvc repro``, which has no experiment ref to publish."""
    head = git("rev-parse", "HEAD")
    refs = git(
        "for-each-ref",
        "--sort=-committerdate",
        "--format=%(objectname) %(refname)",
        f"refs/exps/{head[:2]}/{head[2:]}/",
    )
    for line in refs.splitlines():
        commit, ref = line.split(" ", 1)
        model = locked_model(git("show", f"{commit}:dvc.lock"), experiment)
        if model and model.get("md5") == model_md5:
            return {"name": ref.rsplit("/", 1)[-1], "ref": ref, "commit": commit}
    return None


def model_and_experiment(experiment: str) -> tuple[dict, dict | None]:
    lock = Path("dvc.lock")
    model = locked_model(lock.read_text(), experiment) if lock.is_file() else None
    if not model or "md5" not in model:
        raise DataError(f"dvc.lock: no hash for {MODELS}/{experiment}; run `dvc repro train@{experiment}` first")
    return model, dvc_experiment(experiment, model["md5"])


def build_record(params: config.Params, experiment: str) -> dict:
    from stages.training.settings import resolve  # the model registry: Keras, so not for --help

    run = resolve(params, experiment)  # what the run used: params.yaml's layers merged, the profile's caps applied
    ds = params.datasets[run.dataset]
    provenance = read_json(RAW / ds.source / "provenance.json")
    if provenance.get("origin") == "generated sample data":
        raise DataError(f"{experiment}: trained on generated sample data; a record is for real data (profile full)")
    summary = read_json(MODELS / experiment / "summary.json")
    meta = read_json(PREPARED / run.dataset / "meta.json")
    recipe, budget = recipe_epochs(experiment), run.epochs
    model, dvc_exp = model_and_experiment(experiment)
    return {
        "experiment": experiment,
        "study": run.study,
        "recorded": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git("rev-parse", "HEAD"),
        "code_changes": git("status", "--porcelain", "--", "stages", "dvc.yaml").splitlines(),
        "dvc_experiment": dvc_exp,  # name, ref, commit: `dvc get <repo> models/<experiment> --rev <name>`
        "model": model,
        "data": {
            "source": ds.source,
            "dataset": run.dataset,
            "origin": project_relative(provenance.get("origin")),
            "official_release": provenance.get("official"),
            "sha256": provenance.get("sha256") or raw_sha256(RAW / ds.source),
            "sha256_of_listing": provenance.get("sha256_of_listing"),
            "counts": meta["counts"],
            "classes": meta["classes"],
        },
        "params": {
            "profile": params.profile,
            "seed": params.seed,
            "experiment": run.model_dump(mode="json"),
            "dataset": ds.model_dump(mode="json"),
        },
        "epochs": {"recipe": recipe, "budget": budget, "run": summary["epochs_run"]},
        "budget": budget_kind(budget, recipe),
        "metrics": read_json(EXPERIMENT_REPORTS / experiment / "metrics.json"),
        "details": read_json(EXPERIMENT_REPORTS / experiment / "details.json"),
        "train_seconds": train_seconds(EXPERIMENT_REPORTS / experiment / "train", summary),
        "curve": curve(EXPERIMENT_REPORTS / experiment / "train"),
        "machine": {**machine(), "accelerator": accelerator()},
    }


def main(experiment: str, record: str = "") -> None:
    """Write reports/reproduction/<record>.json for the real-data run of <experiment> in this checkout."""
    params = config.load()
    config.lookup(params.experiments, experiment, "experiment")
    record = record or experiment
    if not RECORD_NAME.fullmatch(record):
        raise ConfigError(f"record name {record!r}: use letters, digits, '_', '-' and '.' only")
    stale = stale_stages(experiment)
    if stale:
        raise DataError(f"{', '.join(stale)}: out of date; run `dvc repro evaluate@{experiment}` first")
    out = RECORDS / f"{record}.json"
    write_json(out, build_record(params, experiment))
    print(f"record: {out}")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("experiment", help="an experiment of params.yaml, trained on real data in this checkout")
    command.add_argument("record", nargs="?", default="", help="the record's name (default: the experiment's)")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
