"""Stage `evaluate@<experiment>`: score a trained model on the test split, from the predictions it saved.

``train@<experiment>`` leaves ``models/<experiment>/test_probs.npy`` (or ``test_masks.npy``); this stage
turns them into the headline metrics (``reports/experiments/<experiment>/metrics.json``), the per-class
report, the data of DVC's confusion plot and a panel of test images (stages/reporting/evaluation.py).
It imports no TensorFlow, so an edit to the scoring or its figures re-scores every model in seconds
and retrains none. Example: ``python -m stages.evaluate objects8_cnn``
"""

from __future__ import annotations

import argparse

from stages.core import cli, config
from stages.reporting.evaluation import evaluate, summary_line


def main(name: str) -> None:
    print(f"evaluate@{summary_line(name, evaluate(config.load(), name))}")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("name", help="an experiment of params.yaml (experiments.<name>)")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
