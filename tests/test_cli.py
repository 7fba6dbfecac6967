"""The command line of every ``python -m stages.<module>``: --help, usage errors, progress bars, TF noise."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from stages.core import cli
from stages.core.errors import DataError
from tests.conftest import without_tf_notice

ROOT = Path(__file__).resolve().parents[1]
# Every module that runs as `python -m stages.<stage>` (the DVC stages) or `python -m stages.tools.<tool>`.
ENTRY_POINTS = sorted(
    str(p.relative_to(ROOT).with_suffix("")).replace("/", ".").removeprefix("stages.")
    for p in [*(ROOT / "stages").glob("*.py"), *(ROOT / "stages" / "tools").glob("*.py")]
    if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")
)
NEEDS_TF: set[str] = set()  # import TensorFlow at module level (none: all only when they run, after the environment)
CPU_ONLY = not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/dxg"))


def _python(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout
    )


def test_stages_holds_the_dvc_stages_and_tools_the_user_tools():
    """stages/*.py are exactly the commands dvc.yaml runs; stages/tools/ the commands a user runs on what they
    made; the library lives in the other subpackages (core, sources, models, ...)."""
    stages = {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__"}
    tools = {p.stem for p in (ROOT / "stages" / "tools").glob("*.py")} - {"__init__"}
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    run = {s.get("do", s)["cmd"].split()[2].removeprefix("stages.") for s in dvc_yaml["stages"].values()}
    assert stages == run
    assert set(ENTRY_POINTS) == stages | {f"tools.{t}" for t in tools}
    assert {"train_members", "predict", "sweep", "bench", "record", "compare", "shard", "gpucheck"} == tools


# Third-party packages the entry modules import at their top, imported before the snapshot: some change the
# process themselves (scikit-learn sets KMP_* variables, pandas' dateutil adds six's finder to sys.meta_path).
# OpenCV and TensorFlow are not among them: no entry module may load them at import (see below).
THIRD_PARTY = ("numpy", "pandas", "sklearn", "matplotlib.pyplot", "yaml", "tqdm")
SNAPSHOT = """
import importlib, json, os, sys
def snapshot():
    fds = [tuple(os.fstat(fd)[1:3]) for fd in (0, 1, 2)]  # what each of stdin, stdout, stderr is (inode, device)
    return {"environ": dict(os.environ), "meta_path": [repr(f) for f in sys.meta_path], "fds": fds,
            "path_hooks": [repr(h) for h in sys.path_hooks], "path": list(sys.path)}
for name in sys.argv[1].split(","):
    importlib.import_module(name)
changed = {}
for name in sys.argv[2].split(","):
    before = snapshot()
    importlib.import_module(name)
    after = snapshot()
    changed[name] = [key for key in before if before[key] != after[key]]
print(json.dumps({"changed": changed, "loaded": sorted({"cv2", "tensorflow", "keras"} & set(sys.modules))}))
"""


def test_importing_stages_or_an_entry_module_only_imports():
    """In a fresh interpreter, `import stages` and `import stages.<entry module>` change nothing but sys.modules:
    not the environment (the commands set theirs when they run), not the import system, not stdin, stdout or
    stderr; and none loads OpenCV or TensorFlow, which read their settings from the environment when they load."""
    env = {k: v for k, v in os.environ.items() if k not in cli.ENVIRONMENT_DEFAULTS}
    modules = ",".join(["stages", *(f"stages.{m}" for m in ENTRY_POINTS)])
    done = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, ",".join(THIRD_PARTY), modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert {name: keys for name, keys in result["changed"].items() if keys} == {}
    assert result["loaded"] == []


def test_tensorflow_starts_with_its_onednn_notice_only_on_a_cpu_only_machine():
    """The commands' environment (TF_CPP_MIN_LOG_LEVEL=2) silences TensorFlow's C++ INFO and WARNING lines; the
    oneDNN notice (on CPUs where oneDNN is on by default) comes before TensorFlow applies that level, and is
    left as it is: no switch but oneDNN's own drops it, and that would change the numbers."""
    if not CPU_ONLY:
        pytest.skip("a GPU machine's TensorFlow talks about its GPU")
    code = (
        "from stages.core import cli\n"
        "cli.set_environment_defaults()\n"
        "import tensorflow as tf\n"
        "tf.config.list_physical_devices()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in cli.ENVIRONMENT_DEFAULTS}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert without_tf_notice(done.stderr) == []


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_prints_usage_and_exits_0(module):
    done = _python("-X", "importtime", "-m", f"stages.{module}", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: python -m stages.{module}")
    assert len(done.stdout.strip().splitlines()) >= 3  # usage, blank line, description
    assert "Traceback" not in done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert ("tensorflow" in imported) == (module in NEEDS_TF)
    if CPU_ONLY:  # the CPU install (tensorflow-cpu) probes no CUDA: nothing but our own output
        assert [line for line in done.stderr.splitlines() if not line.startswith("import time:")] == []


@pytest.mark.parametrize("module", ["download", "tools.train_members", "report"])
def test_short_help_flag(module):
    done = _python("-m", f"stages.{module}", "-h")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: python -m stages.{module}")


@pytest.mark.parametrize(
    "module, args, expected",
    [
        ("download", [], "usage: python -m stages.download [-h] name\n"),
        ("extract", [], "usage: python -m stages.extract [-h] name\n"),
        ("prepare", [], "usage: python -m stages.prepare [-h] name\n"),
        ("ensemble", [], "usage: python -m stages.ensemble [-h] name\n"),
        ("tools.train_members", [], "usage: python -m stages.tools.train_members [-h] [-j N] ensemble\n"),
        ("tools.sweep", [], "usage: python -m stages.tools.sweep [-h] [--tensorboard DIR] experiment\n"),
        ("train", [], "usage: python -m stages.train [-h] [--seed N] [--out DIR] experiment\n"),
        ("evaluate", [], "usage: python -m stages.evaluate [-h] name\n"),
        ("report", ["extra"], "usage: python -m stages.report [-h]\n"),
        ("download", ["a", "b"], "usage: python -m stages.download [-h] name\n"),
        ("tools.predict", [], "usage: python -m stages.tools.predict [-h] [--top-k K] [--out DIR]"),
        ("tools.predict", ["objects8_cnn"], "required: inputs\n"),  # no images
        ("tools.shard", ["0", "two", "sweep"], "argument count: invalid int value: 'two'\n"),
    ],
)
def test_missing_or_extra_argument_gives_usage_and_exit_2(module, args, expected):
    done = _python("-m", f"stages.{module}", *args, env={"COLUMNS": "200"})  # usage on one line
    assert done.returncode == 2
    assert expected in done.stderr
    assert done.stderr.startswith(f"usage: python -m stages.{module} ")
    assert "__main__" not in done.stderr and "Traceback" not in done.stderr


def test_help_after_the_name_lists_the_options():
    done = _python("-m", "stages.tools.train_members", "gray28_tuned", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m stages.tools.train_members") and "--jobs" in done.stdout


# ------------------------------------------------------------------- cli.run in-process


def _stage(name: str, seed: str = "1") -> None:
    if name == "bad":
        raise DataError("bad input")
    print(f"ran {name} {seed} {os.environ['TF_CPP_MIN_LOG_LEVEL']}")


def _stage_parser():
    command = cli.parser(_stage)
    command.add_argument("name")
    command.add_argument("seed", nargs="?", default="1")
    return command


PROG = cli.program(_stage)  # this test module's name
USAGE = f"usage: {PROG} [-h] name [seed]\n"


def test_run_parses_words_and_reports_errors(capsys, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    cli.run(_stage, _stage_parser(), ["x"])
    assert capsys.readouterr().out == "ran x 1 2\n"  # the command's environment, set before main runs
    with pytest.raises(SystemExit) as exit_:
        cli.run(_stage, _stage_parser(), ["bad"])
    assert exit_.value.code == 1 and capsys.readouterr().err == "error: bad input\n"
    with pytest.raises(SystemExit) as exit_:
        cli.run(_stage, _stage_parser(), [])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(USAGE)


def test_run_keeps_what_the_user_set_in_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    cli.run(_stage, _stage_parser(), ["x", "7"])
    assert capsys.readouterr().out == "ran x 7 0\n"


def _interrupted(name: str, where: str = "") -> None:
    """Stopped by Ctrl-C, inside zero, one or two blocks that say what they keep."""
    if not where:
        raise KeyboardInterrupt
    with cli.on_interrupt(lambda: "outer note"):
        if where == "outer":
            raise KeyboardInterrupt
        with cli.on_interrupt(lambda: f"{name} stopped; the checkpoint is kept"):
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("", f"interrupted: {PROG} x stopped; no output is half-written, run it again"),
        ("outer", "interrupted: outer note"),
        ("inner", "interrupted: x stopped; the checkpoint is kept"),  # the innermost block knows most
    ],
)
def test_ctrl_c_is_one_line_and_exit_130(capsys, where, line):
    command = cli.parser(_interrupted)
    command.add_argument("name")
    command.add_argument("where", nargs="?", default="")
    with pytest.raises(SystemExit) as exit_:
        cli.run(_interrupted, command, ["x", where] if where else ["x"])
    assert exit_.value.code == 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["x", "--help"], ["--help", "x", "y", "z"]])
def test_run_answers_help_without_running(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(_stage, _stage_parser(), argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{USAGE}\n{__doc__}\n")  # usage, then the module's docstring
    assert "ran" not in out


def test_program_names_the_file_when_run_as_a_script():
    namespace = {"__spec__": None, "__name__": "__main__", "__file__": "stages/prepare.py"}
    exec("def main(name):\n    pass", namespace)  # a function whose module is __main__
    assert cli.program(namespace["main"]) == "python -m stages.prepare"


# ------------------------------------------------------------------------ progress bars


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with cli.progress_bar(10, "quiet") as bar:
        bar.update(10)
    assert sys.stderr.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with cli.progress_bar(10, "off", enabled=False) as bar:
        bar.update(10)
    assert sys.stderr.getvalue() == ""
    with cli.progress_bar(2_000_000, "bytes", unit="B") as bar:
        bar.update(2_000_000)
    assert "bytes: 100%" in sys.stderr.getvalue() and "2.00M/2.00M" in sys.stderr.getvalue()


@pytest.mark.parametrize("workers", [1, 2])
def test_image_decoding_bar(tmp_path, monkeypatch, workers):
    from stages.sources.readers.images import read_image_files

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), np.full((6, 6, 3), i * 40, np.uint8))
    paths.append(tmp_path / "broken.png")
    paths[-1].write_bytes(b"not an image")
    monkeypatch.setattr(sys, "stderr", _Terminal())
    x, ok, skipped = read_image_files(paths, (4, 4), workers=workers, progress="decode")
    assert len(x) == 5 and len(skipped) == 1
    assert "decode: 100%" in sys.stderr.getvalue() and "6/6" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", _Terminal())
    read_image_files(paths, (4, 4), workers=workers)  # no label: no bar
    assert sys.stderr.getvalue() == ""
