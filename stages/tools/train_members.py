"""Train an ensemble's missing or stale members side by side, then record them in DVC.

    python -m stages.tools.train_members gray28_tuned -j 2

`dvc repro` runs stages one after another. This command runs the `train_member` stages of
one ensemble that `dvc status` reports as changed, up to ``-j`` at a time, each with the very
command its stage declares, and then `dvc commit`s them, so that `dvc repro` afterwards finds
them up to date and goes straight on to the vote. Members already trained are never retrained.

Workers share the hardware: with GPUs, worker k sees only GPU k mod (number of GPUs); on a CPU
the cores are split between the workers (TensorFlow's and oneDNN's thread pools), which for
small models like the gray28 one beats one process using every core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from stages.core import cli, config
from stages.core.errors import PipelineError

LOGS = Path(".dvc/tmp")  # each worker's output, next to DVC's own logs (git-ignored)


def stage_name(ensemble: str, seed: int) -> str:
    return f"train_member@{ensemble}-{seed}"


def stale_seeds(status: Mapping, ensemble: str, seeds: list[int]) -> list[int]:
    """Seeds whose stage `dvc status --json` lists (changed deps, params or missing outputs)."""
    return [seed for seed in seeds if stage_name(ensemble, seed) in status]


def gpu_count() -> int:
    """GPUs visible to this process, without starting TensorFlow (nvidia-smi; 0 without it)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    gpus = [line for line in done.stdout.splitlines() if line.startswith("GPU ")] if done.returncode == 0 else []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return min(len(gpus), len([v for v in visible.split(",") if v.strip()]))
    return len(gpus)


def worker_env(worker: int, jobs: int, gpus: int, cores: int) -> dict[str, str]:
    """Environment additions for worker ``worker`` of ``jobs``: one GPU each, or a share of the cores."""
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(gpus)]
        return {"CUDA_VISIBLE_DEVICES": ids[worker % gpus]}
    threads = str(max(1, cores // jobs))
    return {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": threads}


def member_command(ensemble: str, experiment: str, seed: int) -> list[str]:
    """The command of stage train_member@<ensemble>-<seed> in dvc.yaml."""
    out = f"models/ensembles/{ensemble}/seed{seed}"
    return [sys.executable, "-m", "stages.train", experiment, "--seed", str(seed), "--out", out]


def dvc_status(stages: list[str]) -> dict:
    done = subprocess.run(["dvc", "status", "--json", *stages], capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"`dvc status` failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout or "{}")


def main(ensemble: str, jobs: int = 2) -> None:
    params = config.load()
    spec = config.lookup(params.ensembles, ensemble, "ensemble")
    seeds = params.seeds(ensemble)
    stages = [stage_name(ensemble, seed) for seed in seeds]
    todo = stale_seeds(dvc_status(stages), ensemble, seeds)
    if not todo:
        print(f"members of {ensemble}: all {len(seeds)} up to date")
        return
    jobs, gpus, cores = max(1, min(jobs, len(todo))), gpu_count(), os.cpu_count() or 1
    print(f"members of {ensemble}: training seeds {todo}, {jobs} at a time ({gpus} GPUs, {cores} cores)")
    LOGS.mkdir(parents=True, exist_ok=True)
    start, queue = time.perf_counter(), list(todo)
    running: dict[subprocess.Popen, tuple[int, int, IO]] = {}
    failed, done = [], []
    while queue or running:
        while queue and len(running) < jobs:
            seed = queue.pop(0)
            worker = min(set(range(jobs)) - {w for w, _, _ in running.values()})
            log = (LOGS / f"member-{ensemble}-{seed}.log").open("w")
            proc = subprocess.Popen(
                member_command(ensemble, spec.experiment, seed),
                env={**os.environ, **worker_env(worker, jobs, gpus, cores)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            running[proc] = (worker, seed, log)
        time.sleep(0.5)
        for proc in [p for p in running if p.poll() is not None]:
            _, seed, log = running.pop(proc)
            log.close()
            (done if proc.returncode == 0 else failed).append(seed)
            print(f"  seed {seed}: {'done' if proc.returncode == 0 else f'failed (exit {proc.returncode})'}")
    seconds = time.perf_counter() - start
    if done:
        subprocess.run(["dvc", "commit", "--force", *[stage_name(ensemble, s) for s in done]], check=True)
    print(f"members of {ensemble}: {len(done)} trained in {seconds:.1f} s")
    if failed:
        logs = ", ".join(str(LOGS / f"member-{ensemble}-{s}.log") for s in failed)
        raise PipelineError(f"members of {ensemble}: seeds {failed} failed (see {logs})")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("ensemble", help="an ensemble of params.yaml (ensembles.<name>)")
    command.add_argument("-j", "--jobs", type=int, default=2, metavar="N", help="members trained at once (default 2)")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
