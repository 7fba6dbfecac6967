"""Sweep summary from real `dvc exp show --json` output (DVC 3, recorded from a small project)."""

import json
from pathlib import Path

import pytest

from stages.sweep import parallel_coordinates, sweep_table, write_tensorboard

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


def test_tensorboard_hparams_logs_hold_every_run(tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    df = sweep_table(EXP_SHOW, "a")
    write_tensorboard(df, tmp_path / "a")
    runs = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "a"))
    runs.Reload()
    sessions = {}
    for run, content in runs.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        for tag, raw in content.items():
            if tag == metadata.SESSION_START_INFO_TAG:
                info = metadata.parse_session_start_info_plugin_data(raw)
                sessions[run] = info.hparams["model_args.units"].number_value
    assert sorted(sessions.values()) == [1, 3, 5, 7]
    best = df.iloc[0]["run"]
    from tensorboard.util.tensor_util import make_ndarray

    assert float(make_ndarray(runs.Tensors(best, "test_accuracy")[0].tensor_proto)) == pytest.approx(0.7)


def test_shards_split_the_sweep_as_dvc_expands_it():
    from stages.shard import shard, sweep_runs

    runs = sweep_runs(["experiments.a.epochs=choice(1,2)", "experiments.a.batch_size=range(8,24,8)"])
    assert runs[0] == ["experiments.a.epochs=1", "experiments.a.batch_size=8"] and len(runs) == 4
    parts = [shard(runs, k, 3) for k in range(3)]
    assert sorted(i for part in parts for i, _ in part) == [0, 1, 2, 3]  # each run on exactly one machine
    assert [i for i, _ in parts[1]] == [1]
    assert sweep_runs([]) == [[]]


def test_shard_index_out_of_range_is_one_line():
    from stages.core.errors import ConfigError
    from stages.shard import shard

    with pytest.raises(ConfigError, match="shard index 2 of 2: need 0 <= index < count"):
        shard([[]], 2, 2)
