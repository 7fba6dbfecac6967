"""Stage `evaluate@<experiment>`: score a trained model on the test split, from the predictions it saved.

``train@<experiment>`` leaves ``models/<experiment>/test_probs.npy`` (or ``test_masks.npy``); this stage
turns them into the headline metrics (``reports/experiments/<experiment>/metrics.json``), the per-class
report, the data of DVC's confusion plot and a panel of test images (stages/reporting/evaluation.py).
It imports no TensorFlow, so an edit to the scoring or its figures re-scores every model in seconds
and retrains none. Example: ``python -m stages.evaluate objects8_cnn``
"""

from __future__ import annotations

import sys

from stages.core import config
from stages.reporting.evaluation import evaluate, summary_line


def main(name: str) -> None:
    """``python -m stages.evaluate <experiment>``"""
    print(f"evaluate@{summary_line(name, evaluate(config.load(), name))}")


if __name__ == "__main__":
    from stages.core.cli import run

    run(main, sys.argv[1:])
