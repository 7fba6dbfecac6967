"""Re-score trained models from their saved test predictions, without retraining them.

``train@<experiment>`` scores its model as its last step; after an edit to the scoring or the
figures (stages/reporting/), this redraws them for the given experiments from
``models/<experiment>/test_probs.npy`` (or ``test_masks.npy``). DVC then sees the new report
files as changed outputs of ``train@<experiment>``: ``dvc commit train@<experiment>`` records
them without a retraining. Example: ``python -m stages.evaluate objects8_cnn pets_unet3``
"""

from __future__ import annotations

import argparse

from stages.core import cli, config
from stages.reporting.evaluation import evaluate, summary_line


def main(experiments: list[str]) -> None:
    params = config.load()
    for name in experiments:
        print(summary_line(name, evaluate(params, name)))


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("experiments", nargs="+", metavar="experiment", help="an experiment of params.yaml")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
