"""Sweep summary from real `dvc exp show --json` output (DVC 3, recorded from a small project)."""

import json
from pathlib import Path

from stages.sweep import parallel_coordinates, sweep_table

EXP_SHOW = json.loads((Path(__file__).parent / "data/exp_show_dvc3.json").read_text())


def test_every_run_once_best_first_with_only_the_varied_hyperparameters():
    df = sweep_table(EXP_SHOW, "a")
    assert list(df.columns) == ["run", "model_args.units", "test_accuracy", "test_loss"]
    assert df["model_args.units"].tolist() == [7, 5, 3, 1]
    assert df["test_accuracy"].tolist() == [0.7, 0.5, 0.3, 0.1]
    assert "fenny-hajj" in df["run"].tolist()


def test_unknown_experiment_gives_an_empty_table():
    assert sweep_table(EXP_SHOW, "not_there").empty


def test_parallel_coordinates_figure_is_written(tmp_path):
    out = tmp_path / "sweep.png"
    parallel_coordinates(sweep_table(EXP_SHOW, "a"), "sweep", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
