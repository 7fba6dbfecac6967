"""Stage `ensemble@<name>`: majority vote of an experiment retrained with several seeds.

Each member is its own DVC stage (`train_member@<name>-<seed>`, one per entry of
`ensemble_members`, writing models/ensembles/<name>/seed<seed>/), so adding a member trains
only it. This stage needs no TensorFlow: it votes on the members' saved test
probabilities and reports the ensemble's accuracy next to the best and mean member.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stages.core import cli, config
from stages.core.errors import DataError
from stages.core.files import load_npy, write_json
from stages.core.paths import MODELS, PREPARED, REPORTS

ENSEMBLE_MODELS = MODELS / "ensembles"
ENSEMBLE_REPORTS = REPORTS / "ensembles"


def member_dir(name: str, seed: int) -> Path:
    return ENSEMBLE_MODELS / name / f"seed{seed}"


def majority_vote(votes: np.ndarray, num_classes: int, probs: np.ndarray | None = None) -> np.ndarray:
    """Per column of ``votes`` (members x images, class ids): the most voted class.

    Ties are broken deterministically: by the tied classes' summed probability when
    ``probs`` (members x images x classes) is given, then by the lowest class id.
    """
    votes = np.asarray(votes, dtype=np.int64)
    if votes.ndim != 2:
        raise ValueError(f"votes must be members x images, got shape {votes.shape}")
    counts = np.zeros((votes.shape[1], num_classes), np.int64)
    for member in votes:
        counts[np.arange(votes.shape[1]), member] += 1
    tied = counts == counts.max(axis=1, keepdims=True)
    if probs is None:
        return tied.argmax(axis=1)  # argmax returns the first (lowest) True
    score = np.where(tied, np.asarray(probs, np.float64).sum(axis=0), -np.inf)
    return score.argmax(axis=1)  # equal scores: the lowest class id again


def ensemble(params: config.Params, name: str) -> dict:
    ens = config.lookup(params.ensembles, name, "ensemble")
    exp = params.experiments[ens.experiment]  # checked by the schema: an ensemble names an experiment
    prepared = PREPARED / exp.dataset
    for path in (prepared / "meta.json", prepared / "y_test.npy"):
        if not path.is_file():
            raise DataError(f"{path}: missing; run `dvc repro prepare@{exp.dataset}`")
    y_test = load_npy(prepared / "y_test.npy")
    num_classes = len(json.loads((prepared / "meta.json").read_text())["classes"])
    probs = []
    seeds = params.seeds(name)
    for seed in seeds:
        path = member_dir(name, seed) / "test_probs.npy"
        if not path.is_file():
            raise DataError(f"{path}: missing; run `dvc repro train_member@{name}-{seed}`")
        probs.append(load_npy(path))
        if probs[-1].shape != (len(y_test), num_classes):
            raise DataError(
                f"{path}: shape {probs[-1].shape}, expected {(len(y_test), num_classes)} for {prepared}'s test split"
            )
    probs_arr = np.stack(probs)
    member_acc = (probs_arr.argmax(axis=2) == y_test).mean(axis=1)
    voted = majority_vote(probs_arr.argmax(axis=2), num_classes, probs_arr)
    result = {
        "experiment": ens.experiment,
        "members": len(seeds),
        "ensemble_accuracy": float((voted == y_test).mean()),
        "best_member_accuracy": float(member_acc.max()),
        "mean_member_accuracy": float(member_acc.mean()),
        "member_accuracy": {str(s): float(a) for s, a in zip(seeds, member_acc)},
        "test_images": len(y_test),
    }
    write_json(ENSEMBLE_REPORTS / name / "metrics.json", result)
    return result


def main(name: str) -> None:
    params = config.load()
    r = ensemble(params, name)
    print(
        f"ensemble@{name}: {r['members']} members, vote {r['ensemble_accuracy']:.4f}, "
        f"best member {r['best_member_accuracy']:.4f}, mean {r['mean_member_accuracy']:.4f}"
    )


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("name", help="an ensemble of params.yaml (ensembles.<name>)")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
