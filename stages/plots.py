"""Report figures: learning curves and confusion matrices (matplotlib, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from stages.io import atomic_path  # noqa: E402


def data_label(origin: str) -> str:
    """Every figure made from generated data says so in its title."""
    return " (GENERATED SAMPLE DATA)" if origin.startswith("generated") else ""


def save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def read_live_metric(live_dir: Path, name: str) -> pd.Series | None:
    """One dvclive per-epoch series (``plots/metrics/<name>.tsv``), indexed by epoch."""
    tsv = live_dir / "plots" / "metrics" / f"{name}.tsv"
    if not tsv.is_file():
        return None
    df = pd.read_csv(tsv, sep="\t")
    return pd.Series(df[df.columns[-1]].to_numpy(), index=df["step"].to_numpy() + 1, name=name)


def learning_curves(live_dir: Path, title: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("train/", "-"), ("eval/", "--")):
            series = read_live_metric(live_dir, f"{prefix}{metric}")
            if series is not None:
                ax.plot(
                    series.index,
                    series.to_numpy(),
                    style,
                    marker="o",
                    label=prefix.rstrip("/").replace("eval", "validation"),
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save(fig, path)


def confusion(cm: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix with counts; the largest off-diagonal cells stand out."""
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(5.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ConfusionMatrixDisplay(rates, display_labels=classes).plot(
        ax=ax, cmap="Blues", values_format=".2f", colorbar=False, xticks_rotation=45
    )
    ax.set_title(title)
    save(fig, path)
