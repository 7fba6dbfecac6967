"""Summarise a hyperparameter sweep run as DVC experiments.

    python -m stages.tools.sweep <experiment> [--tensorboard DIR]

Reads `dvc.api.exp_show()` (not files the runs leave lying around), keeps every
DVC experiment that has metrics for ``experiments.<experiment>``, and writes
``reports/sweeps/<experiment>.md`` (every run's varied hyperparameters and test
accuracy, best first) and ``reports/sweeps/<experiment>.png`` (parallel
coordinates in the spirit of TensorBoard's HParams view). ``--tensorboard DIR``
also writes the same runs as TensorBoard HParams logs (``tensorboard --logdir DIR``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core import cli
from stages.core.errors import PipelineError
from stages.core.files import write_text
from stages.core.paths import REPORTS
from stages.reporting import plots
from stages.reporting.experiments import Row, exp_rows, experiment_params, metric, run_name

OUT = REPORTS / "sweeps"


def sweep_table(rows: list[Row], experiment: str) -> pd.DataFrame:
    """A line per run with metrics for ``experiment`` (DVC experiments, the baseline; a run repeating an
    earlier one's params is left out): the hyperparameters that vary across them, best first."""
    records, seen = [], set()
    for row in rows:  # exp_rows' order: the baseline, its experiments, the workspace (which repeats one)
        accuracy, params = metric(row, experiment, "test_accuracy"), experiment_params(row, experiment)
        if accuracy is None or not params:
            continue
        params = {k: v for k, v in params.items() if k not in ("study", "dataset")}
        key = json.dumps(params, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        loss = metric(row, experiment, "test_loss")
        records.append({"run": run_name(row), **params, "test_accuracy": accuracy, "test_loss": loss})
    df = pd.DataFrame(records)
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


def main(experiment: str, tensorboard: Path | None = None) -> None:
    df = sweep_table(exp_rows(), experiment)
    if df.empty:
        raise PipelineError(f"no DVC experiment has metrics for experiments.{experiment}: run the sweep first")
    table = df.to_markdown(index=False, floatfmt=".4f")
    write_text(OUT / f"{experiment}.md", f"# Sweep of `{experiment}`: {len(df)} runs, best first\n\n{table}\n")
    if len(df) > 1:
        parallel_coordinates(df, f"{experiment}: {len(df)} runs", OUT / f"{experiment}.png")
    if tensorboard:
        write_tensorboard(df, tensorboard / experiment)
    print(table)


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("experiment", help="the experiment of params.yaml the sweep varied")
    command.add_argument("--tensorboard", type=Path, metavar="DIR", help="also write TensorBoard HParams logs to DIR")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
