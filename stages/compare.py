"""Compare DVC experiments study by study: one Markdown table per study, from `dvc.api.exp_show()`."""

from __future__ import annotations

import difflib
import functools
import json
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import yaml

from stages.core.cli import run
from stages.core.errors import ConfigError, PipelineError

METRICS = "reports/experiments/{}/metrics.json"
DETAILS = "reports/experiments/{}/details.json"
FLAGS = ("--all", "--all-params")
Row = dict[str, Any]


def _present(value: Any) -> bool:
    return value is not None and value != "None"  # exp_show turns a value missing from a file into "None"


def _exp_rows() -> list[Row]:
    """exp_show's rows: the baseline commit first, its experiments, the workspace last."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        _git()
        rows = [r for r in dvc.api.exp_show() if r.get("State") not in ("Queued", "Running", "Failed")]
    except DvcException as exc:
        raise PipelineError(f"dvc exp show: {exc}") from exc
    if not any(r["rev"] != "workspace" for r in rows):
        raise PipelineError("dvc exp show found no commit: `dvc repro`, then `git commit` the results first")
    return sorted(rows, key=lambda r: 2 if r["rev"] == "workspace" else 0 if r["typ"] == "baseline" else 1)


@functools.cache
def _git() -> tuple[Path, Any, PurePosixPath]:
    from dvc.repo import Repo
    from dvc.scm import SCM

    root = Path(Repo.find_root())
    scm = SCM(str(root))
    return root, scm, PurePosixPath(root.relative_to(scm.root_dir))  # a DVC project may be a subdir of its git repo


@functools.cache
def _read_at(path: str, rev: str) -> dict[str, Any]:
    """A git-tracked JSON file at a revision (on disk for the workspace); {} if absent. Through git, not
    dvc.api.read: that builds the DVC index on every call (2-6 s in this project)."""
    from scmrepo.exceptions import SCMError

    root, scm, subdir = _git()
    try:
        text = (root / path).read_text() if rev == "workspace" else scm.get_fs(rev).read_text(str(subdir / path))
        return json.loads(text)
    except (OSError, ValueError, SCMError):
        return {}


def _metric(row: Row, name: str, key: str) -> Any:
    # exp_show prefixes a key in several files with the file's path; a key in one file only, the file has to tell
    path = METRICS.format(name)
    value = row[f"{path}:{key}"] if f"{path}:{key}" in row else _read_at(path, row["rev"]).get(key)
    return value if _present(value) else None


def _param_key(column: str) -> str:
    return column.split(":")[-1]  # "params.yaml:experiments.x.epochs" where another params file has the key


def _params(row: Row, name: str) -> dict[str, Any]:
    prefix = f"experiments.{name}."
    # a key missing from this revision's params.yaml reads "None" too: left out
    return {_param_key(k)[len(prefix) :]: v for k, v in row.items() if _param_key(k).startswith(prefix) and _present(v)}


def _studies(row: Row) -> dict[str, Any]:
    """{project experiment: its study} in the row's params."""
    parts = {k: _param_key(k).split(".") for k in row}
    return {p[1]: row[k] for k, p in parts.items() if p[0] == "experiments" and p[2:] == ["study"] and _present(row[k])}


def _text(value: Any, fmt: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and not fmt:
        return str(int(value))  # exp_show gives every number as a float: epochs=2, not epochs=2.0
    return format(value, fmt) if isinstance(value, int | float) else str(value)


def study_table(rows: list[Row], study: str, claims: dict[str, Any], all_rows: bool, all_params: bool) -> str:
    """A study's Markdown table: a line per (project experiment, revision); repeated results only if all_rows."""
    names = dict.fromkeys(n for row in rows for n, s in _studies(row).items() if s == study)
    records = []
    for name in names:
        base, seen = _params(rows[0], name), set()
        claimed = ((claims.get(name) or {}).get("claimed") or {}).get("test_accuracy")
        for row in rows:
            params = _params(row, name)
            if params.get("study") != study:
                continue
            metrics = {k: _metric(row, name, k) for k in ("test_accuracy", "test_mean_iou")}
            key = repr((sorted(params.items()), metrics))
            if key in seen and not all_rows:
                continue
            seen.add(key)
            changed = {k: v for k, v in params.items() if all_params or base.get(k) != v}
            changed |= dict.fromkeys((k for k in base if k not in params), "-")  # removed from params.yaml
            records.append(
                {
                    "run": row["Experiment"] or row["rev"],
                    "experiment": name,
                    "params": " ".join(f"{k}={_text(v)}" for k, v in changed.items()),
                    "test_accuracy": _text(metrics["test_accuracy"], ".4f"),
                    "test_mean_iou": _text(metrics["test_mean_iou"], ".4f"),
                    "train_s": _text(_read_at(DETAILS.format(name), row["rev"]).get("train_seconds"), ".1f"),
                    "claimed": _text(claimed, ".3f"),
                }
            )
    if not records:
        return "(no experiments)"
    df = pd.DataFrame(records)
    if not df["test_mean_iou"].any():
        df = df.drop(columns="test_mean_iou")
    align = ["left"] * 3 + ["right"] * (len(df.columns) - 3)
    return df.to_markdown(index=False, disable_numparse=True, colalign=align)


def main(*args: str) -> None:
    """Compare the baseline commit, its DVC experiments and the workspace, one Markdown table per study.

    usage: python -m stages.compare [STUDY ...] [--all] [--all-params]

    A row per project experiment of the study (all studies unless some are named) and revision: the DVC
    experiment's name (or the baseline's branch or rev, or `workspace`), the parameters that differ from
    the baseline (key=- where removed), test accuracy (and mean IoU for segmentation), training seconds
    and the accuracy the study's report claims (studies.yaml). Repeated results are left out.

      --all         every row, repeated results included
      --all-params  every parameter of the project experiment, not only those that differ
    """
    unknown = [a for a in args if a.startswith("-") and a not in FLAGS]
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]} (options: {', '.join(FLAGS)})")
    rows = _exp_rows()
    try:
        path = _git()[0] / "studies.yaml"  # what the published reports claim; without it, no claims
        registry = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"studies.yaml: {exc}") from exc
    studies, claims = registry.get("studies") or {}, registry.get("experiments") or {}
    known = list(dict.fromkeys([*studies, *(s for row in rows for s in _studies(row).values())]))
    wanted = [a for a in args if not a.startswith("-")] or known
    for study in wanted:
        if study not in known:
            close = difflib.get_close_matches(study, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"unknown study {study!r}{hint}")
    for study in wanted:
        info = studies.get(study) or {}
        title = (f": {info['title']}" if "title" in info else "") + (f" ({info['report']})" if "report" in info else "")
        print(f"## {study}{title}\n\n{study_table(rows, study, claims, '--all' in args, '--all-params' in args)}\n")


if __name__ == "__main__":
    run(main, sys.argv[1:])
