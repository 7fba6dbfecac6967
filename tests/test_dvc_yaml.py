"""dvc.yaml declares exactly what each stage reads: its code (derived here from the imports) and
its params keys, so that DVC re-runs what a change affects and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
#: every stage's basics (command line, params, paths, files, errors): one folder dep rather than six file
#: deps, so that dvc.lock, which DVC rewrites whole after each stage, stays small
CORE = "stages/core"
STUDY_MODULE = "stages/models/studies/${item.study}.py"  # train's own study's models, chosen per experiment
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
STUDIES = yaml.safe_load((REPO / "studies.yaml").read_text())
STUDY_NAMES = {exp["study"] for exp in PARAMS["experiments"].values()}


def is_study_module(file: str) -> bool:
    """stages/models/studies/<study>.py: one study's models, which only that study's stages depend on."""
    return file.startswith("stages/models/studies/") and Path(file).stem != "__init__"


def module_file(module: str) -> Path | None:
    path = REPO / Path(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def project_imports(file: Path) -> set[str]:
    """Every `stages.*` module that ``file`` imports, at the top or inside a function."""
    found: set[str] = set()
    package = ".".join(file.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] == "stages"}


def code_closure(module: str) -> set[str]:
    """The repository-relative files Python runs for ``python -m <module>``: the module, every
    project module it imports (transitively) and the packages around them."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        file = module_file(name)
        if file is None or file in seen:
            continue
        seen.add(file)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(project_imports(file))
    return {str(f.relative_to(REPO)) for f in seen}


def declared_code(stage: dict) -> set[str]:
    """The stage's `stages/...` deps, folders expanded to their Python files."""
    out: set[str] = set()
    for dep in stage["deps"]:
        if dep == STUDY_MODULE or not dep.startswith("stages/"):
            continue
        if is_study_module(dep):
            continue  # a study module named outright (train_member): imported at run time, by name
        path = REPO / dep
        out |= {str(f.relative_to(REPO)) for f in path.rglob("*.py")} if path.is_dir() else {dep}
    return out


def stage_body(name: str) -> dict:
    stage = DVC_YAML["stages"][name]
    return stage.get("do", stage)


def entry_module(stage: dict) -> str:
    return stage["cmd"].split()[2]  # "python -m stages.<module> ..."


@pytest.mark.parametrize("name", list(DVC_YAML["stages"]))
def test_each_stage_depends_on_exactly_the_code_it_imports(name):
    stage = stage_body(name)
    imported = code_closure(entry_module(stage))
    study_modules = {f for f in imported if is_study_module(f)}
    assert not study_modules, f"{name}: imports study model modules statically: {sorted(study_modules)}"
    declared = declared_code(stage)
    assert imported - declared == set(), f"{name}: imports code it does not declare"
    assert CORE in stage["deps"], f"{name}: stages/core is declared as the one folder, not module by module"
    core_not_imported = {f for f in declared - imported if f.startswith(f"{CORE}/")}
    assert declared - imported - core_not_imported == set(), f"{name}: declares code it does not import"


def test_train_stages_depend_on_their_own_study_module():
    for name in ("train", "train_member"):
        assert STUDY_MODULE in stage_body(name)["deps"], name


def test_a_training_stages_log_outlives_the_rerun_that_resumes_it():
    """DVC removes a stage's outputs before running it, except `persist` ones: a killed run's dvclive log,
    which its resumed run logs on from, must survive (else the curve and time start at the resume)."""
    for name in ("train", "train_member"):
        stage = stage_body(name)
        logs = [out for key in ("outs", "plots") for out in stage.get(key, []) if isinstance(out, dict)]
        assert logs and all(next(iter(out)).startswith("reports/") for out in logs), name
        assert all(next(iter(out.values())).get("persist") for out in logs), name


def test_every_trained_model_is_a_labelled_artifact():
    artifacts = DVC_YAML["artifacts"]
    assert {a["path"] for a in artifacts.values()} == {f"models/{name}" for name in PARAMS["experiments"]}
    for name, exp in PARAMS["experiments"].items():
        artifact = artifacts[name.replace("_", "-")]
        variant = "study" if STUDIES["experiments"].get(name, {}).get("claimed") else "ours"
        assert artifact["type"] == "model" and artifact["desc"]
        assert artifact["labels"] == [exp["study"], variant, exp["dataset"]], name


def test_stage_params_are_keys_that_exist():
    """A declared key that params.yaml lacks would make DVC fail; `${profile}` is the active profile's."""
    for name in DVC_YAML["stages"]:
        for key in stage_body(name).get("params", []):
            if "${" in key and "${profile}" not in key:
                continue  # per-item keys: checked by DVC itself when it expands foreach
            node = PARAMS
            for part in key.replace("${profile}", PARAMS["profile"]).split("."):
                assert isinstance(node, dict) and part in node, f"{name}: params key {key!r} not in params.yaml"
                node = node[part]


def test_every_study_has_a_study_defaults_entry():
    """train@<name> reads study_defaults.<study>: DVC stops on a study without an entry (`{}` will do)."""
    studies = {exp["study"] for exp in PARAMS["experiments"].values()}
    missing = studies - set(PARAMS.get("study_defaults") or {})
    assert not missing, f"params.yaml: study_defaults lacks {sorted(missing)}"


# Where a study may be named in code: its own model module, the readers and sample generators of its
# data's format (named after the format or source), and the benchmark's fixed list of timed models.
STUDY_SPECIFIC = {"stages/tools/bench.py", "stages/sources/generate.py"}


def _study_names() -> set[str]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    experiments = params["experiments"]
    return set(experiments) | {e["study"] for e in experiments.values()} | set(params["datasets"])


def _string_literals(file: Path) -> list[tuple[int, str]]:
    """Every string constant of ``file`` that is not a docstring."""
    tree = ast.parse(file.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_study_is_named_in_generic_code_or_in_the_pipeline():
    import re

    names = sorted(_study_names(), key=len, reverse=True)
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z0-9_])")
    found = []
    for file in sorted((REPO / "stages").rglob("*.py")):
        rel = file.relative_to(REPO).as_posix()
        own_format = file.parent.name == "readers" or is_study_module(rel)
        if rel in STUDY_SPECIFIC or own_format:
            continue
        found += [f"{rel}:{line}: {text!r}" for line, text in _string_literals(file) if pattern.search(text)]
    pipeline = {k: v for k, v in DVC_YAML.items() if k != "artifacts"}  # artifacts: one per model, checked above
    found += [f"dvc.yaml: {m}" for m in pattern.findall(yaml.safe_dump(pipeline))]
    assert found == []
