"""Sweep summary from a real throwaway DVC project (tests/test_compare.py's) and three DVC experiments."""

from pathlib import Path

import pytest

from stages.reporting import experiments
from stages.tools.sweep import parallel_coordinates, sweep_table, write_tensorboard
from tests.test_compare import DVC, _run, make_project


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> list[dict]:
    """`dvc.api.exp_show()`'s rows after a sweep of objects8_cnn's epochs (the baseline has 3)."""
    root = make_project(tmp_path_factory.mktemp("sweep"))
    for epochs in (1, 5, 7):
        _run(root, DVC, "exp", "run", "-q", "-n", f"epochs-{epochs}", "-S", f"experiments.objects8_cnn.epochs={epochs}")
    monkeypatch_module.chdir(root)
    experiments.git_repo.cache_clear()
    experiments.read_at.cache_clear()
    return experiments.exp_rows()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_every_run_once_best_first_with_only_the_varied_hyperparameters(rows):
    df = sweep_table(rows, "objects8_cnn")
    assert list(df.columns) == ["run", "epochs", "test_accuracy", "test_loss"]
    assert df["epochs"].tolist() == [7, 5, 3, 1]  # the stage's accuracy is 0.5 + epochs / 100
    assert df["test_accuracy"].tolist() == pytest.approx([0.57, 0.55, 0.53, 0.51])
    assert df["run"].tolist() == ["epochs-7", "epochs-5", "main", "epochs-1"]


def test_unknown_experiment_gives_an_empty_table(rows):
    assert sweep_table(rows, "not_there").empty


def test_parallel_coordinates_figure_is_written(rows, tmp_path: Path):
    out = tmp_path / "sweep.png"
    parallel_coordinates(sweep_table(rows, "objects8_cnn"), "sweep", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_hparams_logs_hold_every_run(rows, tmp_path: Path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    df = sweep_table(rows, "objects8_cnn")
    write_tensorboard(df, tmp_path / "a")
    runs = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "a"))
    runs.Reload()
    sessions = {}
    for run, content in runs.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        for tag, raw in content.items():
            if tag == metadata.SESSION_START_INFO_TAG:
                info = metadata.parse_session_start_info_plugin_data(raw)
                sessions[run] = info.hparams["epochs"].number_value
    assert sorted(sessions.values()) == [1, 3, 5, 7]
    best = df.iloc[0]["run"]
    from tensorboard.util.tensor_util import make_ndarray

    assert float(make_ndarray(runs.Tensors(best, "test_accuracy")[0].tensor_proto)) == pytest.approx(0.57)


def test_shards_split_the_sweep_as_dvc_expands_it():
    from stages.tools.shard import shard, sweep_runs

    runs = sweep_runs(["experiments.a.epochs=choice(1,2)", "experiments.a.batch_size=range(8,24,8)"])
    assert runs[0] == ["experiments.a.epochs=1", "experiments.a.batch_size=8"] and len(runs) == 4
    parts = [shard(runs, k, 3) for k in range(3)]
    assert sorted(i for part in parts for i, _ in part) == [0, 1, 2, 3]  # each run on exactly one machine
    assert [i for i, _ in parts[1]] == [1]
    assert sweep_runs([]) == [[]]


def test_shard_index_out_of_range_is_one_line():
    from stages.core.errors import ConfigError
    from stages.tools.shard import shard

    with pytest.raises(ConfigError, match="shard index 2 of 2: need 0 <= index < count"):
        shard([[]], 2, 2)
