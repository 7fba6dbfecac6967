"""Summarise a hyperparameter sweep run as DVC experiments.

    python -m stages.sweep <experiment> [--tensorboard DIR]

Reads `dvc exp show --json` (not files the runs leave lying around), keeps every
DVC experiment that has metrics for ``experiments.<experiment>``, and writes
``reports/sweeps/<experiment>.md`` (every run's varied hyperparameters and test
accuracy, best first) and ``reports/sweeps/<experiment>.png`` (parallel
coordinates in the spirit of TensorBoard's HParams view). ``--tensorboard DIR``
also writes the same runs as TensorBoard HParams logs (``tensorboard --logdir DIR``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.errors import PipelineError
from stages.core.files import write_text
from stages.core.paths import REPORTS
from stages.reporting import plots

OUT = REPORTS / "sweeps"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def _runs(node: Any) -> Iterator[dict]:
    """Every revision entry (workspace, commits, experiments) of `dvc exp show --json`."""
    if isinstance(node, dict):
        if "rev" in node and isinstance(node.get("data"), dict):
            yield node
        for value in node.values():
            yield from _runs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _runs(item)


def sweep_table(exp_show: Any, experiment: str) -> pd.DataFrame:
    """One row per DVC experiment: the experiment's hyperparameters that vary, and its metrics."""
    metrics_file = f"reports/experiments/{experiment}/metrics.json"
    rows, seen = [], set()
    # named experiments first, so a run that equals the workspace keeps its experiment name
    for run in sorted(_runs(exp_show), key=lambda r: r["rev"] == "workspace"):
        data = run["data"]
        params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
        metrics = (data.get("metrics") or {}).get(metrics_file, {}).get("data")
        hp = (params.get("experiments") or {}).get(experiment)
        if not metrics or hp is None or "test_accuracy" not in metrics:
            continue
        flat = {k: v for k, v in flatten(hp).items() if not k.startswith(("claimed", "note", "study"))}
        key = json.dumps(flat, sort_keys=True, default=str)
        if key in seen:  # the workspace repeats its baseline commit
            continue
        seen.add(key)
        rows.append(
            {
                "run": run.get("name") or ("workspace" if run["rev"] == "workspace" else str(run["rev"])[:7]),
                **flat,
                "test_accuracy": metrics["test_accuracy"],
                "test_loss": metrics.get("test_loss"),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    varied = [
        c for c in df.columns if c not in ("run", "test_accuracy", "test_loss") and df[c].astype(str).nunique() > 1
    ]
    return df[["run", *varied, "test_accuracy", "test_loss"]].sort_values("test_accuracy", ascending=False)


def parallel_coordinates(df: pd.DataFrame, title: str, path: Path) -> None:
    """Each run a line across its hyperparameters, coloured by test accuracy (as HParams does)."""
    axes_names = [c for c in df.columns if c not in ("run", "test_loss")]
    codes, labels = [], []
    for name in axes_names:
        col = df[name]
        if name != "test_accuracy" and not pd.api.types.is_numeric_dtype(col):
            cats = sorted(col.astype(str).unique())
            codes.append(col.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(float))
            labels.append(cats)
        else:
            codes.append(col.to_numpy(float))
            labels.append(None)
    values = np.array(codes).T
    lo, hi = values.min(axis=0), values.max(axis=0)
    scaled = (values - lo) / np.where(hi > lo, hi - lo, 1)
    fig, ax = plots.plt.subplots(figsize=(max(6, 1.6 * len(axes_names)), 4.5))
    cmap = plots.plt.get_cmap("plasma")
    acc = df["test_accuracy"].to_numpy(float)
    norm = plots.matplotlib.colors.Normalize(acc.min(), acc.max() if acc.max() > acc.min() else acc.min() + 1e-9)
    for row, a in zip(scaled, acc):
        ax.plot(range(len(axes_names)), row, color=cmap(norm(a)), alpha=0.8)
    for i, cats in enumerate(labels):
        ax.axvline(i, color="gray", lw=0.8)
        ticks = cats if cats else [f"{lo[i]:.3g}", f"{hi[i]:.3g}"]
        for j, t in enumerate(ticks):
            ax.text(i, j / max(len(ticks) - 1, 1), str(t), fontsize=7, ha="left", va="center")
    ax.set_xticks(range(len(axes_names)), [n.replace("model_args.", "") for n in axes_names], rotation=20)
    ax.set_yticks([])
    fig.colorbar(plots.plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="test accuracy")
    ax.set_title(title)
    plots.save(fig, path)


def _hparam_value(value: Any) -> bool | int | float | str | None:
    """A value TensorBoard's HParams accepts (bool, int, float, str); None for a missing one."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def write_tensorboard(df: pd.DataFrame, logdir: Path) -> None:
    """One HParams session per run (its varied hyperparameters, test accuracy and loss as metrics)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    names = [c for c in df.columns if c not in ("run", "test_accuracy", "test_loss")]
    metrics = [c for c in ("test_accuracy", "test_loss") if c in df.columns]
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hp.hparams_config(hparams=[hp.HParam(n) for n in names], metrics=[hp.Metric(m) for m in metrics])
    writer.close()
    for _, row in df.iterrows():
        writer = tf.summary.create_file_writer(str(logdir / str(row["run"])))
        with writer.as_default():
            values = {n: v for n in names if (v := _hparam_value(row[n])) is not None}
            hp.hparams(values, trial_id=str(row["run"]))
            for m in metrics:
                if (v := _hparam_value(row[m])) is not None:
                    tf.summary.scalar(m, v, step=0)
        writer.close()


def main(experiment: str, *options: str) -> None:
    """``python -m stages.sweep <experiment> [--tensorboard DIR]``: also write TensorBoard HParams logs to DIR."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m stages.sweep {experiment}")
    parser.add_argument("--tensorboard", type=Path, metavar="DIR", help="also write TensorBoard HParams logs")
    args = parser.parse_args(options)
    done = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"`dvc exp show --json` failed: {done.stderr.strip().splitlines()[-1:]}")
    df = sweep_table(json.loads(done.stdout), experiment)
    if df.empty:
        raise PipelineError(f"no DVC experiment has metrics for experiments.{experiment}: run the sweep first")
    table = df.to_markdown(index=False, floatfmt=".4f")
    write_text(OUT / f"{experiment}.md", f"# Sweep of `{experiment}`: {len(df)} runs, best first\n\n{table}\n")
    if len(df) > 1:
        parallel_coordinates(df, f"{experiment}: {len(df)} runs", OUT / f"{experiment}.png")
    if args.tensorboard:
        write_tensorboard(df, args.tensorboard / experiment)
    print(table)


if __name__ == "__main__":
    from stages.core.cli import run

    run(main, sys.argv[1:])
