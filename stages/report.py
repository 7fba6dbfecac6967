"""Stage `report`: the reproduction scorecard and the cross-experiment figures.

Everything here is read from the experiments' metrics and from params.yaml's
`claimed` numbers (the reports' own results): nothing is typed in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from stages import config, plots
from stages.io import atomic_path, write_json, write_text
from stages.paths import EXPERIMENT_REPORTS as EXP_REPORTS
from stages.paths import MODELS
from stages.paths import REPORTS as OUT


def scorecard(params: config.Params) -> pd.DataFrame:
    rows = []
    for name, exp in params.experiments.items():
        metrics_file = EXP_REPORTS / name / "metrics.json"
        if not metrics_file.is_file():
            continue
        m = json.loads(metrics_file.read_text())
        summary_file = MODELS / name / "summary.json"  # absent when the metrics came without the model (git only)
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        rows.append(
            {
                "study": exp.study,
                "experiment": name,
                "model": exp.model,
                "variant": "study" if exp.claimed else "project",
                "claimed_accuracy": exp.claimed.get("test_accuracy"),
                "test_accuracy": round(m["test_accuracy"], 4),
                "test_loss": round(m["test_loss"], 4) if "test_loss" in m else None,
                "test_mean_iou": round(m["test_mean_iou"], 4) if "test_mean_iou" in m else None,
                "parameters": m["parameters"],
                "epochs": f"{m['epochs_run']}/{exp.epochs}",
                "train_seconds": m["train_seconds"],
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
    """Mean of dvclive's per-epoch ``epoch_seconds`` (train.py's EpochTimer) under ``live_dir``."""
    found = (live_dir / "plots/metrics/train/epoch_seconds.tsv", live_dir / "plots/metrics/epoch_seconds.tsv")
    tsv = next((t for t in found if t.is_file()), None)  # dvclive's DVCLiveCallback logs it under train/
    if tsv is None:
        return None
    values = [float(line.split("\t")[-1]) for line in tsv.read_text().splitlines()[1:] if line.strip()]
    return sum(values) / len(values) if values else None


def timing_table(
    params: config.Params, study: str, exp_reports: Path = EXP_REPORTS, models: Path = MODELS
) -> pd.DataFrame:
    """The study's runtime table: training seconds per epoch and test-set prediction seconds, per model."""
    rows = []
    for name, exp in params.experiments.items():
        summary_file = models / name / "summary.json"
        if exp.study != study or not summary_file.is_file():
            continue
        summary = json.loads(summary_file.read_text())
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
    write_text(out / f"{study}_timing.md", f"# {study}: runtime per model\n\n{note}\n\n{table}\n")
    write_json(out / f"{study}_timing.json", {"profile": params.profile, "rows": df.to_dict(orient="records")})
    return df


def time_to_accuracy(params: config.Params, exp_reports: Path = EXP_REPORTS) -> pd.DataFrame:
    """Per epoch of every `track_test` experiment: elapsed training minutes and test accuracy."""
    rows = []
    for name, exp in params.experiments.items():
        if not exp.track_test:
            continue
        live = exp_reports / name / "train"
        accuracy = plots.read_live_metric(live, "test/accuracy")
        elapsed = plots.read_live_metric(live, "train/elapsed_seconds")
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


def time_to_accuracy_figure(df: pd.DataFrame, params: config.Params, path: Path) -> None:
    """Test accuracy against training minutes, with each study's best claimed accuracy dashed."""
    fig, ax = plots.plt.subplots(figsize=(7, 4))
    for name, runs in df.groupby("experiment", sort=False):
        ax.plot(runs["elapsed_minutes"], runs["test_accuracy"], marker="o", ms=3, label=name)
    for study in df["study"].unique():
        claimed = [e.claimed["test_accuracy"] for e in params.experiments.values() if e.study == study and e.claimed]
        if claimed:
            ax.axhline(max(claimed), ls="--", color="gray", lw=1)
            ax.text(0, max(claimed), f" {study}: best claimed {max(claimed):.1%}", va="bottom", fontsize=8)
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Time to accuracy")
    plots.save(fig, path)


def ensembles_table(ensemble_reports: Path = OUT / "ensembles") -> str:
    """Markdown rows of every voted ensemble (stage `ensemble`), or an empty string."""
    rows = []
    for f in sorted(ensemble_reports.glob("*/metrics.json")):
        m = json.loads(f.read_text())
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


def comparison_figure(df: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = plots.plt.subplots(figsize=(max(6, 0.9 * len(df) + 2), 4))
    xs = range(len(df))
    ax.bar([x - 0.2 for x in xs], df["test_accuracy"], width=0.4, label="reproduced here")
    claimed = df["claimed_accuracy"].astype(float)
    ax.bar([x + 0.2 for x in xs], claimed.fillna(0), width=0.4, label="claimed by the report")
    ax.set_xticks(list(xs), df["experiment"], rotation=30, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    plots.save(fig, path)


def main() -> None:
    params = config.load(check_models=False)
    df = scorecard(params)
    generated = params.profile == "embedded"
    banner = (
        "**These numbers come from GENERATED SAMPLE DATA (profile `embedded`), not the real datasets:"
        " they show the pipeline works, not that a study is reproduced.** Run with `profile: full` for that.\n\n"
        if generated
        else ""
    )
    table = df.to_markdown(index=False) if not df.empty else "(no evaluated experiments)"
    write_text(OUT / "scorecard.md", f"# Reproduction scorecard\n\n{banner}{table}\n{ensembles_table()}")
    write_timing(params, "gray28")  # the study that reported seconds per epoch
    speed = time_to_accuracy(params)
    speed_table = speed.to_markdown(index=False) if not speed.empty else "(no experiment sets track_test)"
    write_text(
        OUT / "time_to_accuracy.md",
        f"# Time to accuracy\n\n{banner}Test accuracy after every epoch of the `track_test` experiments, against"
        f" the training wall time so far (validation included, test evaluation not).\n\n{speed_table}\n",
    )
    write_json(OUT / "scorecard.json", {"profile": params.profile, "rows": df.to_dict(orient="records")})
    with atomic_path(OUT / "figures", is_dir=True) as tmp:
        if not df.empty:
            label = " (GENERATED SAMPLE DATA)" if generated else ""
            comparison_figure(df, tmp / "accuracy_vs_claimed.png", f"Test accuracy, reproduced vs claimed{label}")
        if not speed.empty:
            time_to_accuracy_figure(speed, params, tmp / "time_to_accuracy.png")
    print(banner.replace("**", "") + table)


if __name__ == "__main__":
    from stages.cli import run

    run(main, sys.argv[1:])
