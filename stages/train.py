"""Stage `train@<experiment>`: train one experiment of params.yaml (the loop: stages/training/loop.py).

``python -m stages.train <experiment>`` resolves the experiment under the active profile
(stages/training/settings.py), trains it and writes ``models/<experiment>``: model.keras, its card,
summary.json and the test predictions that ``evaluate@<experiment>`` scores. ``--seed N --out
models/...`` trains another run of it (an ensemble member). A killed or interrupted run resumes from
its last completed epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core import cli, config
from stages.core.paths import MODELS


def main(name: str, seed: int | None = None, out: Path | None = None) -> None:
    if seed is not None and not 0 <= seed <= config.MAX_SEED:  # params.yaml's seeds: the schema's range
        raise config.ConfigError(f"--seed {seed}: must be between 0 and {config.MAX_SEED}")
    if out is not None and not out.is_relative_to(MODELS):
        raise config.ConfigError(f"--out {out}: must be a folder under {MODELS}/")
    # TensorFlow loads here, after cli.run has set its environment, and never for --help
    from stages.training.loop import checkpoint_dir, interrupted, train
    from stages.training.settings import resolve

    run = resolve(config.load(), name, seed=seed)
    with cli.on_interrupt(lambda: interrupted(name, checkpoint_dir(name, out), run.resume)):
        summary = train(run, out=out)
    print(f"train@{name}: done, {summary['epochs_run']} epochs in {summary['train_seconds']} s")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("name", metavar="experiment", help="an experiment of params.yaml (experiments.<name>)")
    command.add_argument("--seed", type=int, metavar="N", help="train with this seed instead (an ensemble member)")
    command.add_argument(
        "--out", type=Path, metavar="DIR", help="into this folder under models/ instead (an ensemble member)"
    )
    return command


if __name__ == "__main__":
    cli.run(main, parser())
