"""Compare DVC experiments study by study: one Markdown table per study, from `dvc.api.exp_show()` and each
revision's resolved runs (stages/training/settings.py: what each run used)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Mapping
from typing import Any

import pandas as pd
import yaml

from stages.core import cli, config
from stages.core.errors import ConfigError
from stages.reporting.experiments import DETAILS, Row, exp_rows, git_repo, metric, read_at, run_name, studies_of, text


def params_at(rev: str) -> config.Params:
    """params.yaml at a revision (the workspace's on disk), validated."""
    from scmrepo.exceptions import SCMError

    root, scm, subdir = git_repo()
    where = config.PARAMS_FILE if rev == "workspace" else f"{rev}:{config.PARAMS_FILE}"
    try:
        if rev == "workspace":
            return config.load(root / config.PARAMS_FILE)
        return config.parse(scm.get_fs(rev).read_text(str(subdir / config.PARAMS_FILE)), where)
    except (OSError, SCMError) as exc:
        raise ConfigError(f"{where}: cannot read it ({exc})") from None


def dotted(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``optimizer.learning_rate``); unset (None) and empty ones left out."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out |= dotted(value, f"{prefix}{key}.")
        elif value is not None:
            out[f"{prefix}{key}"] = value
    return out


def run_settings(params: config.Params, name: str) -> dict[str, Any]:
    """What a run of experiment ``name`` used at a revision (its resolved run), as dotted keys; {} where the
    revision has no such experiment."""
    from stages.training.settings import resolve  # the model registry: Keras, so not for --help

    if name not in params.experiments:
        return {}
    return dotted(resolve(params, name).model_dump(mode="json", exclude={"experiment"}))


def study_table(
    rows: list[Row], revisions: dict[str, config.Params], study: str, claims: dict, all_rows: bool, all_params: bool
) -> str:
    """A study's Markdown table: a line per (project experiment, revision); repeated results only if all_rows.
    ``revisions``: each row's params.yaml, by its ``rev``."""
    names = dict.fromkeys(n for row in rows for n, s in studies_of(row).items() if s == study)
    records = []
    for name in names:
        base, seen = run_settings(revisions[rows[0]["rev"]], name), set()
        claimed = ((claims.get(name) or {}).get("claimed") or {}).get("test_accuracy")
        for row in rows:
            params = run_settings(revisions[row["rev"]], name)
            if params.get("study") != study:
                continue
            metrics = {k: metric(row, name, k) for k in ("test_accuracy", "test_mean_iou")}
            key = repr((sorted(params.items()), metrics))
            if key in seen and not all_rows:
                continue
            seen.add(key)
            changed = {k: v for k, v in params.items() if all_params or base.get(k) != v}
            changed |= dict.fromkeys((k for k in base if k not in params), "-")  # unset at this revision
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
    experiment's name (or the baseline's branch or rev, or `workspace`), the settings of its resolved run
    (params.yaml's layers merged, the profile's caps applied) that differ from the baseline's (key=- where
    unset), test accuracy (and mean IoU for segmentation), training seconds and the accuracy the study's
    report claims (studies.yaml). Repeated results are left out."""
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
    revisions = {row["rev"]: params_at(row["rev"]) for row in rows}
    for study in wanted:
        info = studies.get(study) or {}
        title = (f": {info['title']}" if "title" in info else "") + (f" ({info['report']})" if "report" in info else "")
        print(f"## {study}{title}\n\n{study_table(rows, revisions, study, claims, all_rows, all_params)}\n")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("names", nargs="*", metavar="STUDY", help="studies to show (default: all)")
    command.add_argument("--all", dest="all_rows", action="store_true", help="every row, repeated results included")
    command.add_argument(
        "--all-params", action="store_true", help="every setting of the run, not only those that differ"
    )
    return command


if __name__ == "__main__":
    cli.run(main, parser())
