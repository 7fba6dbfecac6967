"""DVC experiments as rows of `dvc.api.exp_show()`: read by stages.tools.compare (a table per study) and
stages.tools.sweep (one experiment's runs). One project experiment's columns in a row are its params
``experiments.<name>.*`` and the keys of ``reports/experiments/<name>/metrics.json``."""

from __future__ import annotations

import functools
import json
from pathlib import Path, PurePosixPath
from typing import Any

from stages.core.errors import PipelineError

METRICS = "reports/experiments/{}/metrics.json"
DETAILS = "reports/experiments/{}/details.json"
Row = dict[str, Any]


def present(value: Any) -> bool:
    return value is not None and value != "None"  # exp_show turns a value missing from a file into "None"


def exp_rows() -> list[Row]:
    """exp_show's finished rows: the baseline commit first, its experiments, the workspace last."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        git_repo()
        rows = [r for r in dvc.api.exp_show() if r.get("State") not in ("Queued", "Running", "Failed")]
    except DvcException as exc:
        raise PipelineError(f"dvc exp show: {exc}") from exc
    if not any(r["rev"] != "workspace" for r in rows):
        raise PipelineError("dvc exp show found no commit: `dvc repro`, then `git commit` the results first")
    return sorted(rows, key=lambda r: 2 if r["rev"] == "workspace" else 0 if r["typ"] == "baseline" else 1)


@functools.cache
def git_repo() -> tuple[Path, Any, PurePosixPath]:
    """The DVC project's root, its Git repository, and the project's folder within that repository."""
    from dvc.repo import Repo
    from dvc.scm import SCM

    root = Path(Repo.find_root())
    scm = SCM(str(root))
    return root, scm, PurePosixPath(root.relative_to(scm.root_dir))  # a DVC project may be a subdir of its git repo


@functools.cache
def read_at(path: str, rev: str) -> dict[str, Any]:
    """A git-tracked JSON file at a revision (on disk for the workspace); {} if absent. Through git, not
    dvc.api.read: that builds the DVC index on every call (2-6 s in this project)."""
    from scmrepo.exceptions import SCMError

    root, scm, subdir = git_repo()
    try:
        text = (root / path).read_text() if rev == "workspace" else scm.get_fs(rev).read_text(str(subdir / path))
        return json.loads(text)
    except (OSError, ValueError, SCMError):
        return {}


def metric(row: Row, name: str, key: str) -> Any:
    """Experiment ``name``'s metric ``key`` in ``row``, or None."""
    # exp_show prefixes a key in several files with the file's path; a key in one file only, the file has to tell
    path = METRICS.format(name)
    value = row[f"{path}:{key}"] if f"{path}:{key}" in row else read_at(path, row["rev"]).get(key)
    return value if present(value) else None


def _param_key(column: str) -> str:
    return column.split(":")[-1]  # "params.yaml:experiments.x.epochs" where another params file has the key


def _below(row: Row, prefix: str) -> dict[str, Any]:
    """The row's params under ``prefix``, keyed by the rest of their name; "None" values included."""
    return {_param_key(k)[len(prefix) :]: v for k, v in row.items() if _param_key(k).startswith(prefix)}


def experiment_params(row: Row, name: str) -> dict[str, Any]:
    """Experiment ``name``'s params in ``row``, keyed below ``experiments.<name>.`` (e.g. ``model_args.units``),
    over its study's ``study_defaults.<study>.*`` as the params schema merges them: its own keys win, and
    its own key drops the defaults below it (``reduce_lr: null`` clears ``reduce_lr.patience``)."""
    own = _below(row, f"experiments.{name}.")
    study = own.get("study")
    defaults = _below(row, f"study_defaults.{study}.") if present(study) else {}
    # a key missing from this revision's params.yaml reads "None" too: a default of the same name stays
    kept = {k: v for k, v in defaults.items() if present(v) and not any(k.startswith(f"{o}.") for o in own)}
    return kept | {k: v for k, v in own.items() if present(v)}


def studies_of(row: Row) -> dict[str, Any]:
    """{project experiment: its study} in the row's params."""
    parts = {k: _param_key(k).split(".") for k in row}
    return {p[1]: row[k] for k, p in parts.items() if p[0] == "experiments" and p[2:] == ["study"] and present(row[k])}


def run_name(row: Row) -> str:
    """The DVC experiment's name, or the baseline's branch or rev, or ``workspace``."""
    return row["Experiment"] or row["rev"]


def text(value: Any, fmt: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and not fmt:
        return str(int(value))  # exp_show gives every number as a float: epochs=2, not epochs=2.0
    return format(value, fmt) if isinstance(value, int | float) else str(value)
