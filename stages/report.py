"""Stage `report`: the reproduction scorecard and the data of the cross-experiment charts.

Everything here is read from the experiments' metrics and logs and from studies.yaml's
`claimed` numbers (the reports' own results): nothing is typed in. It also writes the data
of the per-study charts that dvc.yaml declares as plots (reports/plots/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from stages.core import cli, config
from stages.core.errors import DataError
from stages.core.files import atomic_path, write_json, write_text
from stages.core.live import read_live_metric
from stages.core.machine import machine
from stages.core.paths import EXPERIMENT_REPORTS as EXP_REPORTS
from stages.core.paths import MODELS, PLOTS
from stages.core.paths import REPORTS as OUT


def read_json(path: Path, stage: str) -> dict:
    """A JSON output of ``stage``; DataError in one line when it is missing or corrupt."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `dvc repro {stage}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: not valid JSON; re-run `dvc repro {stage}`") from None


def scorecard(params: config.Params, studies: config.Studies) -> pd.DataFrame:
    rows = []
    for name, exp in params.experiments.items():
        metrics_file = EXP_REPORTS / name / "metrics.json"
        if not metrics_file.is_file():
            continue
        m = read_json(metrics_file, f"evaluate@{name}")
        details = read_json(EXP_REPORTS / name / "details.json", f"evaluate@{name}")
        claimed = config.claimed(studies, name)
        summary_file = MODELS / name / "summary.json"  # absent when the metrics came without the model (git only)
        summary = read_json(summary_file, f"train@{name}") if summary_file.is_file() else {}
        rows.append(
            {
                "study": exp.study,
                "experiment": name,
                "model": exp.model,
                "variant": "study" if claimed else "project",
                "claimed_accuracy": claimed.get("test_accuracy"),
                "test_accuracy": round(m["test_accuracy"], 4),
                "test_loss": round(m["test_loss"], 4) if "test_loss" in m else None,
                "test_mean_iou": round(m["test_mean_iou"], 4) if "test_mean_iou" in m else None,
                "parameters": m["parameters"],
                "epochs": f"{m['epochs_run']}/{exp.epochs}",
                "train_seconds": details["train_seconds"],
                "data": summary.get("data", f"unknown ({summary_file} missing: dvc pull it)"),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    best = df.loc[df.groupby("study")["test_accuracy"].idxmax(), ["study", "experiment"]]
    df["best_in_study"] = df["experiment"].isin(best["experiment"])
    return df.dropna(axis=1, how="all")


def mean_epoch_seconds(live_dir: Path) -> float | None:
    """Mean of dvclive's per-epoch ``train/epoch_seconds`` (training/callbacks.py's EpochTimer) in ``live_dir``."""
    series = read_live_metric(live_dir, "train/epoch_seconds")
    return float(series.mean()) if series is not None and len(series) else None


def timing_table(
    params: config.Params, study: str, exp_reports: Path = EXP_REPORTS, models: Path = MODELS
) -> pd.DataFrame:
    """The study's runtime table: training seconds per epoch and test-set prediction seconds, per model."""
    rows = []
    for name, exp in params.experiments.items():
        summary_file = models / name / "summary.json"
        if exp.study != study or not summary_file.is_file():
            continue
        summary = read_json(summary_file, f"train@{name}")
        per_epoch = mean_epoch_seconds(exp_reports / name / "train")
        rows.append(
            {
                "experiment": name,
                "model": exp.model,
                "parameters": summary["parameters"],
                "epochs": summary["epochs_run"],
                "train_seconds_per_epoch": round(per_epoch, 3) if per_epoch is not None else None,
                "test_seconds": summary["test_seconds"],
            }
        )
    return pd.DataFrame(rows)


def write_timing(params: config.Params, study: str, out: Path = OUT) -> pd.DataFrame:
    df = timing_table(params, study)
    note = "Seconds per training epoch (mean of dvclive's `epoch_seconds`) and for predicting the test set."
    if params.profile == "embedded":
        note += " Profile `embedded`: generated sample data, few images, small inputs."
    table = df.to_markdown(index=False) if not df.empty else "(no trained experiments)"
    write_text(out / f"{study}.md", f"# {study}: runtime per model\n\n{note}\n\n{table}\n")
    write_json(out / f"{study}.json", {"profile": params.profile, "rows": df.to_dict(orient="records")})
    return df


def time_to_accuracy(params: config.Params, exp_reports: Path = EXP_REPORTS) -> pd.DataFrame:
    """Per epoch of every `track_test` experiment: elapsed training minutes and test accuracy."""
    rows = []
    for name, exp in params.experiments.items():
        if not exp.track_test:
            continue
        live = exp_reports / name / "train"
        accuracy = read_live_metric(live, "test/accuracy")
        elapsed = read_live_metric(live, "train/elapsed_seconds")
        if accuracy is None or elapsed is None:
            continue
        for epoch, value in accuracy.items():
            minutes = elapsed.get(epoch)
            rows.append(
                {
                    "study": exp.study,
                    "experiment": name,
                    "epoch": int(epoch),
                    "elapsed_minutes": round(minutes / 60, 2) if minutes is not None else None,
                    "test_accuracy": round(float(value), 4),
                }
            )
    return pd.DataFrame(rows)


def ensembles_table(ensemble_reports: Path = OUT / "ensembles") -> str:
    """Markdown rows of every voted ensemble (stage `ensemble`), or an empty string."""
    rows = []
    for f in sorted(ensemble_reports.glob("*/metrics.json")):
        m = read_json(f, f"ensemble@{f.parent.name}")
        rows.append(
            {
                "ensemble": f.parent.name,
                "members": m["members"],
                "ensemble_accuracy": round(m["ensemble_accuracy"], 4),
                "best_member_accuracy": round(m["best_member_accuracy"], 4),
                "mean_member_accuracy": round(m["mean_member_accuracy"], 4),
            }
        )
    return f"\n## Ensembles (majority vote)\n\n{pd.DataFrame(rows).to_markdown(index=False)}\n" if rows else ""


def accuracy_vs_claimed(df: pd.DataFrame) -> pd.DataFrame:
    """Each experiment's test accuracy, reproduced here and claimed by its report, as two bars of DVC's
    ``bar_horizontal`` chart (reports/plots/accuracy_vs_claimed.csv)."""
    claimed = df.dropna(subset=["claimed_accuracy"])
    rows = [
        *({"run": f"{r.experiment}: reproduced", "test_accuracy": r.test_accuracy} for r in df.itertuples()),
        *({"run": f"{r.experiment}: claimed", "test_accuracy": r.claimed_accuracy} for r in claimed.itertuples()),
    ]
    return pd.DataFrame(rows, columns=["run", "test_accuracy"]).sort_values("run", kind="stable")


def curves(params: config.Params, study: str, metric: str) -> pd.DataFrame:
    """Long table (epoch, ``metric``, series) of every experiment of ``study``: training and validation
    per epoch (and test, for `track_test` experiments), for one chart per study on the same axes."""
    frames = []
    for name, exp in params.experiments.items():
        live = EXP_REPORTS / name / "train"
        if exp.study != study:
            continue
        for split, label in (("train", "train"), ("eval", "validation"), ("test", "test")):
            series = read_live_metric(live, f"{split}/{metric}")
            if series is not None:
                frames.append(
                    pd.DataFrame({"epoch": series.index, metric: series.round(5), "series": f"{name} {label}"})
                )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def time_to_accuracy_points(speed: pd.DataFrame) -> pd.DataFrame:
    """The data of DVC's time-to-accuracy chart: test accuracy against training seconds, a series per experiment."""
    seconds = (speed["elapsed_minutes"] * 60).round(1)
    return pd.DataFrame({"seconds": seconds, "test_accuracy": speed["test_accuracy"], "series": speed["experiment"]})


def write_plot_data(params: config.Params, df: pd.DataFrame, speed: pd.DataFrame) -> None:
    """The CSVs behind dvc.yaml's top-level plots: per study, accuracy and loss by epoch; test accuracy
    against training seconds for the `track_test` experiments; reproduced against claimed accuracy."""
    study_ids = dict.fromkeys(exp.study for exp in params.experiments.values())
    for metric in ("accuracy", "loss"):
        with atomic_path(PLOTS / metric, is_dir=True) as tmp:
            for study in study_ids:
                study_curves = curves(params, study, metric)
                if not study_curves.empty:
                    study_curves.to_csv(tmp / f"{study}.csv", index=False)
    if not speed.empty:
        write_text(PLOTS / "time_to_accuracy.csv", time_to_accuracy_points(speed).to_csv(index=False))
    if not df.empty:
        write_text(PLOTS / "accuracy_vs_claimed.csv", accuracy_vs_claimed(df).to_csv(index=False))


def main() -> None:
    params = config.load()
    studies = config.load_studies(params)
    df = scorecard(params, studies)
    generated = params.profile == "embedded"
    banner = (
        "**These numbers come from GENERATED SAMPLE DATA (profile `embedded`), not the real datasets:"
        " they show the pipeline works, not that a study is reproduced.** Run with `profile: full` for that.\n\n"
        if generated
        else ""
    )
    table = df.to_markdown(index=False) if not df.empty else "(no evaluated experiments)"
    cpu = machine()
    ran_on = f"Ran on: {cpu['cpu']}, {cpu['cores']} cores ({cpu['isa']}).\n\n"
    write_text(OUT / "scorecard.md", f"# Reproduction scorecard\n\n{banner}{ran_on}{table}\n{ensembles_table()}")
    with atomic_path(OUT / "timing", is_dir=True) as tmp:  # the studies whose reports gave seconds per epoch
        for study in (name for name, info in studies.studies.items() if info.timing_table):
            write_timing(params, study, tmp)
    speed = time_to_accuracy(params)
    speed_table = speed.to_markdown(index=False) if not speed.empty else "(no experiment sets track_test)"
    write_text(
        OUT / "time_to_accuracy.md",
        f"# Time to accuracy\n\n{banner}Test accuracy after every epoch of the `track_test` experiments, against"
        f" the training wall time so far (validation included, test evaluation not).\n\n{speed_table}\n",
    )
    write_json(OUT / "scorecard.json", {"profile": params.profile, "rows": df.to_dict(orient="records")})
    write_json(OUT / "machine.json", cpu)
    write_plot_data(params, df, speed)
    print(banner.replace("**", "") + table)


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    return command


if __name__ == "__main__":
    cli.run(main, parser())
