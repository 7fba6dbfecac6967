"""The one reader of dvclive's per-epoch logs (``<live dir>/plots/metrics/<split>/<name>.tsv``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LIVE_METRICS = Path("plots/metrics")  # dvclive's per-epoch TSVs, under its folder


def read_live_metric(live_dir: Path, name: str) -> pd.Series | None:
    """One dvclive per-epoch series (``plots/metrics/<name>.tsv``), indexed by epoch."""
    tsv = live_dir / LIVE_METRICS / f"{name}.tsv"
    if not tsv.is_file():
        return None
    df = pd.read_csv(tsv, sep="\t")
    return pd.Series(df[df.columns[-1]].to_numpy(), index=df["step"].to_numpy() + 1, name=name)
