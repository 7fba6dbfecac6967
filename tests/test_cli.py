"""The command line of every ``python -m stages.<module>``: --help, usage errors, progress bars, TF noise."""

from __future__ import annotations

import io
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

ROOT = Path(__file__).resolve().parents[1]
# Every module that runs as `python -m stages.<stage>` (the DVC stages) or `python -m stages.tools.<tool>`.
ENTRY_POINTS = sorted(
    str(p.relative_to(ROOT).with_suffix("")).replace("/", ".").removeprefix("stages.")
    for p in [*(ROOT / "stages").glob("*.py"), *(ROOT / "stages" / "tools").glob("*.py")]
    if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")
)
NEEDS_TF = {"train"}  # imports TensorFlow at module level (the others: only when they run)
CPU_ONLY = not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/dxg"))


def _python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


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


def test_tensorflows_pre_logging_notices_are_dropped_and_other_stderr_kept():
    """TensorFlow writes its oneDNN notice to file descriptor 2 before its logging reads TF_CPP_MIN_LOG_LEVEL
    (on CPUs where oneDNN is on by default): stages drops exactly those lines, and only while it imports."""
    code = (
        "import os, stages\n"
        "with stages.stderr_without(stages.PRE_LOGGING_NOTICES):\n"
        "    os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on. You may see ...\\n')\n"
        "    os.write(2, b'a real warning\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    done = _python("-c", code)
    assert done.returncode == 0 and done.stderr == "a real warning\nafter\n"
    imported = _python("-c", "import stages, tensorflow")  # the real import, on whatever CPU this is
    assert imported.returncode == 0 and "oneDNN custom operations" not in imported.stderr


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
        ("download", [], "usage: python -m stages.download <name>"),
        ("extract", [], "usage: python -m stages.extract <name>"),
        ("prepare", [], "usage: python -m stages.prepare <name>"),
        ("ensemble", [], "usage: python -m stages.ensemble <name>"),
        ("evaluate", [], "usage: python -m stages.evaluate <name>"),
        ("tools.train_members", [], "usage: python -m stages.tools.train_members <ensemble>"),
        ("tools.sweep", [], "usage: python -m stages.tools.sweep <experiment>"),
        ("train", [], "usage: python -m stages.train <name>"),
        ("report", ["extra"], "usage: python -m stages.report"),
        ("download", ["a", "b"], "usage: python -m stages.download <name>"),
        ("tools.predict", [], "usage: python -m stages.tools.predict <experiment>"),
        # its argparse: no images
        ("tools.predict", ["objects8_cnn"], "usage: python -m stages.tools.predict objects8_cnn"),
    ],
)
def test_missing_or_extra_argument_gives_usage_and_exit_2(module, args, expected):
    done = _python("-m", f"stages.{module}", *args)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "__main__" not in done.stderr and "Traceback" not in done.stderr


def test_options_after_the_name_get_their_own_help():
    done = _python("-m", "stages.tools.train_members", "gray28_tuned", "--help")
    assert done.returncode == 0
    assert "usage: python -m stages.tools.train_members gray28_tuned" in done.stdout and "--jobs" in done.stdout


# ------------------------------------------------------------------- cli.run in-process


def _stage(name: str, seed: str = "1") -> None:
    """Run one stage."""
    if name == "bad":
        raise DataError("bad input")
    print(f"ran {name} {seed}")


def _with_options(name: str, *options: str) -> None:
    print(f"ran {name} {options}")


def _only_words(*words: str) -> None:
    """Words and flags, all parsed here."""
    print(f"ran {words}")


PROG = cli.program(_stage)  # this test module's name


def test_run_binds_words_and_reports_errors(capsys):
    cli.run(_stage, ["x"])
    assert capsys.readouterr().out == "ran x 1\n"
    with pytest.raises(SystemExit) as exit_:
        cli.run(_stage, ["bad"])
    assert exit_.value.code == 1 and capsys.readouterr().err == "error: bad input\n"
    with pytest.raises(SystemExit) as exit_:
        cli.run(_stage, [])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"usage: {PROG} <name> [<seed>]\n"


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
    with pytest.raises(SystemExit) as exit_:
        cli.run(_interrupted, ["x", where] if where else ["x"])
    assert exit_.value.code == 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["x", "--help"], ["--help", "x", "y", "z"]])
def test_run_answers_help_without_running(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(_stage, argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {PROG} <name> [<seed>]\n\n")
    assert "Run one stage." in out and "ran" not in out


def test_run_passes_help_after_the_name_to_the_options(capsys):
    cli.run(_with_options, ["x", "--help"])
    assert capsys.readouterr().out == "ran x ('--help',)\n"
    with pytest.raises(SystemExit):
        cli.run(_with_options, ["--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {PROG} <name> [<options>...]")
    assert f"`{PROG} <name> --help` lists the options." in out


def test_run_answers_help_for_a_main_of_words_only(capsys):
    cli.run(_only_words, ["a", "--all"])
    assert capsys.readouterr().out == "ran ('a', '--all')\n"
    with pytest.raises(SystemExit) as exit_:
        cli.run(_only_words, ["a", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {PROG} [<words>...]\n\n") and "Words and flags, all parsed here." in out


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


# ------------------------------------------------------------------- TensorFlow's noise


@pytest.mark.skipif(not CPU_ONLY, reason="a GPU machine's TensorFlow talks about its GPU")
def test_tensorflow_starts_silently_on_a_cpu_only_machine():
    done = _python("-c", "import stages, tensorflow as tf; tf.config.list_physical_devices()", timeout=120)
    assert done.returncode == 0 and done.stderr == ""
