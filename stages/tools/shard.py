"""Run one machine's share of a sweep as DVC experiments, then push them.

    python -m stages.tools.shard <index> <count> <name> [-S key=choice(...) ...] [--target STAGE ...]

Every machine runs the same command with its own ``index`` (0 .. count-1; a Kubernetes Indexed
Job's ``JOB_COMPLETION_INDEX``, a Slurm array's ``SLURM_ARRAY_TASK_ID``): the ``-S`` sweep is
expanded exactly as ``dvc exp run --queue`` expands it (DVC's own Hydra sweep parser), run ``i``
goes to machine ``i % count`` and is named ``<name>-<i>``, so shards never clash and every
machine's names are known in advance. Each run is a plain ``dvc exp run`` whose outputs then go
to the default DVC remote (``dvc push``); at the end the shard's experiments go to the Git remote
(``dvc exp push``). Anyone then collects every shard with
``dvc exp pull <git remote> <names...>`` and compares with ``dvc exp show`` or ``stages.tools.compare``.
``--threads N`` caps TensorFlow's thread pools, for several shards on one host.
"""

from __future__ import annotations

import argparse
import os
import subprocess

from stages.core import cli
from stages.core.errors import ConfigError, PipelineError


def sweep_runs(sets: list[str]) -> list[list[str]]:
    """Every run of the sweep, as the ``key=value`` settings of each, in DVC's own order."""
    from dvc.utils.hydra import get_hydra_sweeps

    try:
        return [run["params.yaml"] for run in get_hydra_sweeps({"params.yaml": sets})] if sets else [[]]
    except Exception as exc:  # Hydra's parser errors have no common base class
        raise ConfigError(f"-S: {' '.join(str(exc).split())}") from None


def shard(runs: list[list[str]], index: int, count: int) -> list[tuple[int, list[str]]]:
    """The runs of machine ``index`` of ``count``: run i goes to machine i % count."""
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard index {index} of {count}: need 0 <= index < count")
    return [(i, run) for i, run in enumerate(runs) if i % count == index]


def dvc(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(["dvc", *args], env=env)
    if done.returncode != 0:
        raise PipelineError(f"dvc {' '.join(args)} failed (exit {done.returncode})")


def main(
    index: int,
    count: int,
    name: str,
    set_param: list[str],
    target: list[str],
    remote: str = "origin",
    no_push: bool = False,
    threads: int | None = None,
) -> None:
    """Run machine <index> of <count>'s runs of the sweep, named <name>-<run>, then push them."""
    mine = shard(sweep_runs(set_param), index, count)
    env = dict(os.environ)
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=str(threads))
    names = []
    for i, sets in mine:
        names.append(f"{name}-{i}")
        print(f"shard {index}/{count}: {names[-1]}: {' '.join(sets) or '(no change)'}", flush=True)
        dvc("exp", "run", "-n", names[-1], *[a for s in sets for a in ("-S", s)], *target, env=env)
        if not no_push:  # this run's outputs, now in the workspace, to the DVC remote
            dvc("push", *(["--with-deps", *target] if target else []))
    if names and not no_push:  # the experiments' Git refs (their data went up run by run)
        dvc("exp", "push", "--no-cache", remote, *names)
    print(f"shard {index}/{count}: {len(names)} run(s): {', '.join(names) or 'none'}")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("index", type=int, help="this machine's number, 0 .. count-1")
    command.add_argument("count", type=int, help="the number of machines")
    command.add_argument("name", help="the experiments' name prefix: <name>-<run>")
    command.add_argument(
        "-S", "--set-param", action="append", default=[], metavar="KEY=VALUE", help="as dvc exp run -S (sweeps too)"
    )
    command.add_argument("--target", action="append", default=[], metavar="STAGE", help="stages to run (default: all)")
    command.add_argument("--remote", default="origin", help="Git remote to push to (default origin)")
    command.add_argument("--no-push", action="store_true", help="keep the experiments here")
    command.add_argument(
        "--threads", type=int, metavar="N", help="TensorFlow threads per run (several shards on one host)"
    )
    return command


if __name__ == "__main__":
    cli.run(main, parser())
