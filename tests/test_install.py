"""The installs of docs/install.md, resolved against the package index for every supported (machine,
Python) pair with uv (`uv pip compile --python-platform ... --python-version ...`): each pinned package
must have a wheel for the pair, and the pins must not conflict. The compiled requirements files must
be what their .in sources compile to today. Without the index (no network) these tests skip."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.conftest import REPO

# uv's name for each kind of machine that docs/install.md has a command for (WSL2 and Colab are Linux x86-64)
MACHINES = {
    "Linux x86-64": "x86_64-unknown-linux-gnu",
    "Linux aarch64": "aarch64-unknown-linux-gnu",
    "macOS arm64": "aarch64-apple-darwin",
    "Windows x86-64": "x86_64-pc-windows-msvc",
}
# what each install takes (the README's test command adds requirements-dev.txt to either), and where
INSTALLS = {
    "cpu": ("requirements.txt", tuple(MACHINES)),
    "gpu": ("requirements-gpu.txt", ("Linux x86-64",)),
}
INSTALL_FILES = tuple(requirements for requirements, _ in INSTALLS.values())
DEV = "requirements-dev.txt"
REMOTES = "requirements-remotes.txt"  # DVC's cloud remotes (docs/models.md), on top of either install
# each compiled file and its source, compiled with COMPILE (docs/install.md#the-pins); the sources of
# requirements-gpu.txt and requirements-dev.txt read requirements.txt, so it comes first
COMPILED = {
    "requirements.txt": "requirements.in",
    "requirements-gpu.txt": "requirements-gpu.in",
    DEV: "requirements-dev.in",
    REMOTES: "requirements-remotes.in",
}
COMPILE = ("--universal", "--python-version", "3.11")
# pure-Python packages that PyPI has only as source archives: pip builds them on any machine. Every other
# package must come as a wheel for the pair (a missing wheel means building, say, h5py from source)
SOURCE_ONLY = ("antlr4-python3-runtime", "promise")
TENSORFLOWS = ("tensorflow", "tensorflow-cpu")  # both install the `tensorflow` module: one per install


def supported_pythons() -> list[str]:
    """Every Python 3 minor version that pyproject.toml's requires-python admits."""
    spec = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    return [f"3.{minor}" for minor in range(30) if spec.contains(f"3.{minor}.0")]


PAIRS = [
    (install, machine, python)
    for install, (_, machines) in INSTALLS.items()
    for machine in machines
    for python in supported_pythons()
]


def index_url() -> str:
    return os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"


@functools.cache
def index_unreachable() -> str | None:
    """Why the package index cannot be reached from here, or None when it can."""
    try:
        with urllib.request.urlopen(f"{index_url().rstrip('/')}/pip/", timeout=15) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as error:
        return f"{index_url()}: {error}"
    return None


@pytest.fixture(scope="module")
def uv() -> str:
    """uv, after one look at the index for every package that any install pins."""
    if reason := index_unreachable():
        pytest.skip(f"the package index cannot be reached ({reason})")
    try:
        from uv import find_uv_bin
    except ImportError:
        pytest.fail("uv is not installed: pip install -r requirements-dev.txt")
    uv = find_uv_bin()
    # The index serves its pages without a cache lifetime, so uv asks again for each of the ~160 pages in
    # every resolution (5-15 s each here). One universal resolution of all four files asks once for all;
    # the pairs then resolve from uv's cache of those pages, going to the index only for what it lacks.
    refresh = compile_(uv, "--universal", "--python-version", "3.11", *INSTALL_FILES, DEV, REMOTES, "-o", os.devnull)
    assert refresh.returncode == 0, f"{' '.join(INSTALL_FILES)} {DEV} {REMOTES}, resolved together:\n{refresh.stderr}"
    return uv


def compile_(uv: str, *args: str | Path, offline: bool = False) -> subprocess.CompletedProcess[str]:
    """`uv pip compile` in the repository root, ignoring any uv.toml of the user's; it never fetches a
    Python (the sources without wheels are built with this one)."""
    command = [uv, "--no-config", "pip", "compile", "--quiet", "--no-progress", "--no-python-downloads"]
    command += ["--offline"] if offline else []
    return subprocess.run([*command, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600)


def resolve(uv: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """From uv's cache, which the `uv` fixture has just brought up to date with the index; where the cache
    lacks something (the first run on a machine: a wheel's metadata), from the index."""
    done = compile_(uv, *args, offline=True)
    return done if done.returncode == 0 else compile_(uv, *args)


def pins(text: str) -> dict[str, str]:
    """name -> version of each `name==version` line of a requirements file."""
    found = {}
    for line in text.splitlines():
        if match := re.match(r"([A-Za-z0-9._-]+)(?:\[[^]]*\])?==([^\s;]+)", line):
            found[match[1].lower().replace("_", "-").replace(".", "-")] = match[2]
    return found


@pytest.mark.parametrize(("install", "machine", "python"), PAIRS, ids=["-".join(pair) for pair in PAIRS])
def test_the_install_resolves_with_wheels(uv, install, machine, python, tmp_path):
    """The install and the test tools together, as the README's two commands install them, with the cloud
    remotes' extras (docs/models.md) on top."""
    requirements, _ = INSTALLS[install]
    wheels_only = ["--only-binary", ":all:", *(arg for name in SOURCE_ONLY for arg in ("--no-binary", name))]
    done = resolve(
        uv,
        *("--python-platform", MACHINES[machine], "--python-version", python, "--no-header", "--no-annotate"),
        *wheels_only,
        requirements,
        DEV,
        REMOTES,
        "-o",
        tmp_path / "resolved.txt",
    )
    assert done.returncode == 0, f"{requirements} + {DEV} + {REMOTES} on {machine}, Python {python}:\n{done.stderr}"
    resolved = pins((tmp_path / "resolved.txt").read_text())
    assert [name for name in TENSORFLOWS if name in resolved] == [
        "tensorflow" if install == "gpu" or machine in ("macOS arm64", "Linux aarch64") else "tensorflow-cpu"
    ], f"{machine}, Python {python}: {install} install"
    wanted = {}
    for pinned in (requirements, DEV, REMOTES):
        wanted |= pins((REPO / pinned).read_text())
    assert {name: version for name, version in resolved.items() if wanted.get(name) != version} == {}


def test_every_package_has_one_version_in_each_compiled_file():
    """The same versions on every machine and Python: the universal resolution did not fork."""
    for compiled in COMPILED:
        lines = [line for line in (REPO / compiled).read_text().splitlines() if line and line[0].isalnum()]
        names = [re.split(r"[=\[ ;]", line)[0] for line in lines]
        assert sorted(names) == sorted(set(names)), compiled
        assert all("==" in line for line in lines), compiled


@pytest.mark.parametrize("compiled", COMPILED)
def test_the_compiled_file_is_up_to_date(uv, compiled, tmp_path):
    """Compiling the .in source again (the committed pins as the preferred versions, as the documented
    command does) gives the committed file: the pins and the sources have not drifted apart."""
    source = COMPILED[compiled]
    committed = (REPO / compiled).read_text()
    command = f"uv pip compile {' '.join(COMPILE)} {source} -o {compiled}"
    assert f"#    {command}\n" in committed, f"{compiled} was not made with `{command}`"
    shutil.copy(REPO / compiled, tmp_path / compiled)
    done = resolve(uv, *COMPILE, "--custom-compile-command", command, source, "-o", tmp_path / compiled)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / compiled).read_text() == committed, f"{source} changed: run `{command}`"
