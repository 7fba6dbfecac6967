"""docs/cluster/slurm-array.sh under a real scheduler: the test starts a one-node Slurm (slurmctld and
slurmd, authenticated by its own munged) and submits the shipped script as a 2-task array, each task
running its shard of a 2-run sweep from its own clone and pushing it; a collector then finds both runs and
gets one run's model. Needs root and Debian's `slurm-wlm` and `munge`; skips where they are missing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_pipeline import copy_checkout, sh

pytestmark = pytest.mark.slow

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
TARGET, SWEEP = "evaluate@cifar_gray_baseline", "experiments.cifar_gray_baseline.epochs=choice(1,2)"
GIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t")


def slurm_missing() -> str | None:
    """Why a one-node Slurm cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting slurmd and munged takes root"
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    return f"{', '.join(missing)}: not installed (Debian: apt-get install slurm-wlm munge)" if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path) -> str:
    """One node (2 CPUs, 1 GiB offered to jobs) on loopback; every file and port the test's own."""
    host = socket.gethostname().split(".")[0]
    return f"""ClusterName=test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={folder}/munge.sock
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName=node0 NodeAddr=127.0.0.1 CPUs=2 RealMemory=1024 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def logs(folder: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted(folder.glob("*.log")))


@contextlib.contextmanager
def one_node_slurm(folder: Path) -> Iterator[dict[str, str]]:
    """munged, slurmctld and slurmd in the foreground, as this test's children; yields the environment
    that points Slurm's commands at them. Skips, with the daemons' logs, if the node never comes up."""
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    (folder / "slurm.conf").write_text(slurm_conf(folder))
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    munge = [f"--key-file={key}", f"--socket={folder}/munge.sock", f"--pid-file={folder}/munged.pid"]
    munge += [f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed"]
    commands = [
        ["munged", "--foreground", "--force", *munge],  # --force: a socket folder under /tmp
        ["slurmctld", "-D", "-f", env["SLURM_CONF"]],
        ["slurmd", "-D", "-f", env["SLURM_CONF"], "-N", "node0"],
    ]
    daemons = []
    try:
        for command in commands:
            daemons.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
            time.sleep(1)
        state = ""
        for _ in range(60):
            done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = done.stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            pytest.skip(f"the one-node Slurm did not come up (sinfo: {state!r}):\n{logs(folder)}")
        yield env
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
            daemon.wait(timeout=30)


def published_repo(tmp_path: Path) -> Path:
    """The project with the sweep's data in a DVC remote folder and a bare Git repo to push to."""
    repo = copy_checkout(tmp_path / "repo")
    sh("dvc", "remote", "add", "-d", "storage", str(tmp_path / "storage"), cwd=repo)
    sh("dvc", "repro", TARGET, cwd=repo, timeout=1200)
    sh(*GIT, "add", "-A", cwd=repo)
    sh(*GIT, "commit", "-qm", "the DVC remote and the sweep's inputs", cwd=repo)
    sh("dvc", "push", "-q", "--with-deps", TARGET, cwd=repo)
    bare = tmp_path / "origin.git"
    sh("git", "clone", "-q", "--bare", str(repo), str(bare), cwd=tmp_path)
    return bare


def test_the_shipped_slurm_array_runs_one_shard_per_task(tmp_path):
    if reason := slurm_missing():
        pytest.skip(reason)
    bare = published_repo(tmp_path)
    submit = tmp_path / "submit"  # the clone on the shared file system that sbatch is run from
    sh("git", "clone", "-q", str(bare), str(submit), cwd=tmp_path)
    (tmp_path / "nodes").mkdir()
    venv = Path(sys.executable).parent.parent  # the tasks share this venv instead of installing one each
    env = {"CNN_VENV": str(venv), "TMPDIR": str(tmp_path / "nodes"), "PATH": f"{venv}/bin:{os.environ['PATH']}"}
    with one_node_slurm(tmp_path / "slurm") as slurm_env:
        done = subprocess.run(
            ["sbatch", "--wait", "--array=0-1", "--cpus-per-task=1", "--mem=400M", "-o", f"{tmp_path}/task-%a.out"]
            + ["docs/cluster/slurm-array.sh", TARGET, "-S", SWEEP],
            cwd=submit,
            env={**slurm_env, **env},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        outputs = {index: Path(f"{tmp_path}/task-{index}.out") for index in (0, 1)}
        shown = "\n".join(f"task {i}: {p.read_text()[-3000:]}" for i, p in outputs.items() if p.is_file())
        assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{shown}\n{logs(tmp_path / 'slurm')}"
    assert "shard 0/2: 1 run(s): sweep-0" in outputs[0].read_text(), shown
    assert "shard 1/2: 1 run(s): sweep-1" in outputs[1].read_text(), shown
    collector = tmp_path / "collector"
    sh("git", "clone", "-q", str(bare), str(collector), cwd=tmp_path)
    sh("dvc", "exp", "pull", "--no-cache", "origin", "sweep-0", "sweep-1", cwd=collector)
    key = "reports/experiments/cifar_gray_baseline/metrics.json"
    epochs = {
        run["name"]: run["revs"][0]["data"]["metrics"][key]["data"]["epochs_run"]
        for baseline in json.loads(sh("dvc", "exp", "show", "--json", cwd=collector))
        for run in baseline.get("experiments") or []
    }
    assert epochs == {"sweep-0": 1, "sweep-1": 2}
    model = tmp_path / "sweep-1"  # each task pushed its run's model to the DVC remote
    sh("dvc", "get", str(bare), "models/cifar_gray_baseline", "--rev", "sweep-1", "-o", str(model), cwd=tmp_path)
    assert json.loads((model / "summary.json").read_text())["epochs_run"] == 2
