"""Compare DVC experiments study by study: one Markdown table per study, from `dvc.api.exp_show()`."""

from __future__ import annotations

import argparse
import difflib
from typing import Any

import pandas as pd
import yaml

from stages.core import cli
from stages.core.errors import ConfigError
from stages.reporting.experiments import (
    DETAILS,
    Row,
    exp_rows,
    experiment_params,
    git_repo,
    metric,
    read_at,
    run_name,
    studies_of,
    text,
)


def study_table(rows: list[Row], study: str, claims: dict[str, Any], all_rows: bool, all_params: bool) -> str:
    """A study's Markdown table: a line per (project experiment, revision); repeated results only if all_rows."""
    names = dict.fromkeys(n for row in rows for n, s in studies_of(row).items() if s == study)
    records = []
    for name in names:
        base, seen = experiment_params(rows[0], name), set()
        claimed = ((claims.get(name) or {}).get("claimed") or {}).get("test_accuracy")
        for row in rows:
            params = experiment_params(row, name)
            if params.get("study") != study:
                continue
            metrics = {k: metric(row, name, k) for k in ("test_accuracy", "test_mean_iou")}
            key = repr((sorted(params.items()), metrics))
            if key in seen and not all_rows:
                continue
            seen.add(key)
            changed = {k: v for k, v in params.items() if all_params or base.get(k) != v}
            changed |= dict.fromkeys((k for k in base if k not in params), "-")  # removed from params.yaml
            records.append(
                {
                    "run": run_name(row),
                    "experiment": name,
                    "params": " ".join(f"{k}={text(v)}" for k, v in changed.items()),
                    "test_accuracy": text(metrics["test_accuracy"], ".4f"),
                    "test_mean_iou": text(metrics["test_mean_iou"], ".4f"),
                    "train_s": text(read_at(DETAILS.format(name), row["rev"]).get("train_seconds"), ".1f"),
                    "claimed": text(claimed, ".3f"),
                }
            )
    if not records:
        return "(no experiments)"
    df = pd.DataFrame(records)
    if not df["test_mean_iou"].any():
        df = df.drop(columns="test_mean_iou")
    align = ["left"] * 3 + ["right"] * (len(df.columns) - 3)
    return df.to_markdown(index=False, disable_numparse=True, colalign=align)


def main(names: list[str], all_rows: bool = False, all_params: bool = False) -> None:
    """A row per project experiment of the study (all studies unless some are named) and revision: the DVC
    experiment's name (or the baseline's branch or rev, or `workspace`), the parameters that differ from
    the baseline (key=- where removed), test accuracy (and mean IoU for segmentation), training seconds
    and the accuracy the study's report claims (studies.yaml). Repeated results are left out."""
    rows = exp_rows()
    try:
        path = git_repo()[0] / "studies.yaml"  # what the published reports claim; without it, no claims
        registry = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"studies.yaml: {exc}") from exc
    studies, claims = registry.get("studies") or {}, registry.get("experiments") or {}
    known = list(dict.fromkeys([*studies, *(s for row in rows for s in studies_of(row).values())]))
    wanted = names or known
    for study in wanted:
        if study not in known:
            close = difflib.get_close_matches(study, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"unknown study {study!r}{hint}")
    for study in wanted:
        info = studies.get(study) or {}
        title = (f": {info['title']}" if "title" in info else "") + (f" ({info['report']})" if "report" in info else "")
        print(f"## {study}{title}\n\n{study_table(rows, study, claims, all_rows, all_params)}\n")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("names", nargs="*", metavar="STUDY", help="studies to show (default: all)")
    command.add_argument("--all", dest="all_rows", action="store_true", help="every row, repeated results included")
    command.add_argument(
        "--all-params", action="store_true", help="every parameter of the experiment, not only those that differ"
    )
    return command


if __name__ == "__main__":
    cli.run(main, parser())
