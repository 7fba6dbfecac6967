"""gray28 (seeds/003): architectures, weights error, data round trips, class map, vote, timing table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.core import config
from stages.core.errors import ConfigError, DataError
from stages.ensemble import majority_vote
from stages.models import weights
from stages.prepare import select_classes
from stages.sources.formats import read_raw
from stages.sources.generate import GENERATORS

# the report's model summaries (5 classes); the tuned model's count follows from its layer list
COUNTS = [
    ("gray28_cnn1", 693_317),
    ("gray28_cnn2", 13_017_125),
    ("gray28_cnn3", 19_342_629),
    ("gray28_cnn4", 1_503_749),
    ("gray28_tuned", 612_325),
]


@pytest.mark.parametrize(("name", "expected"), COUNTS)
def test_parameter_counts_match_the_report(name, expected):
    from stages.models import build

    assert build(name, (28, 28, 1), 5).count_params() == expected


def test_cnn2_and_cnn3_trainable_counts_match_the_report():
    from stages.models import build

    for name, trainable in (("gray28_cnn2", 13_015_461), ("gray28_cnn3", 19_340_453)):
        model = build(name, (28, 28, 1), 5)
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable


def test_imagenet_weights_offline_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("KERAS_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(ConfigError) as err:
        weights.resolve("imagenet", "vgg19")
    message = str(err.value)
    assert str(tmp_path / "keras" / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    assert "set model_args.weights to the path" in message
    assert weights.resolve(None, "vgg19") is None
    with pytest.raises(ConfigError, match="not found"):
        weights.resolve(str(tmp_path / "missing.h5"), "resnet50")
    cached = tmp_path / "keras" / "models" / weights.NOTOP_FILES["inception_v3"]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert weights.resolve("imagenet", "inception_v3") == "imagenet"
    assert weights.resolve(str(cached), "inception_v3") == str(cached)


def test_imagenet_model_without_weights_fails_before_building(tmp_path, monkeypatch):
    from stages.models import build

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        build("gray28_resnet50", (28, 28, 1), 5, input_size=32, weights="imagenet")


def test_resnet50_trainable_count_matches_the_report():
    from stages.models import build

    model = build("gray28_resnet50", (28, 28, 1), 5, input_size=32)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 23_544_837


def test_csv_generator_round_trips_through_detection(tmp_path):
    GENERATORS["fashion_mnist"](tmp_path, {"train_per_class": 3, "test_per_class": 2, "classes": 5}, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.csv", "train.csv"]
    assert tmp_path.joinpath("train.csv").read_text().startswith("label,pixel0,")
    assert tmp_path.joinpath("test.csv").read_text().startswith("pixel0,")
    raw = read_raw(tmp_path, "label_csv", options={"class_names": list("abcde")})
    with pytest.raises(DataError, match=r"not in the mnist_idx layout \(expected train-images-idx3-ubyte"):
        read_raw(tmp_path, "mnist_idx")
    assert raw.x_train.shape == (15, 28, 28, 1) and raw.x_train.dtype == np.uint8
    assert sorted(np.bincount(raw.y_train)) == [3] * 5
    assert raw.x_test is None and raw.y_test is None  # an unlabelled test.csv cannot be scored
    assert raw.classes == list("abcde")


def test_labelled_test_csv_is_the_test_set(tmp_path):
    GENERATORS["fashion_mnist"](tmp_path, {"train_per_class": 2, "test_per_class": 2, "test_labels": True}, seed=1)
    raw = read_raw(tmp_path, "label_csv")
    assert raw.x_test.shape == (20, 28, 28, 1) and sorted(set(raw.y_test)) == list(range(10))
    assert raw.classes == [str(i) for i in range(10)]


def test_idx_generator_round_trips_through_detection(tmp_path):
    from stages.extract import archive_stem
    from stages.sources.fetch import extract

    raw_dir, extracted = tmp_path / "raw", tmp_path / "extracted"
    raw_dir.mkdir()
    GENERATORS["fashion_mnist"](raw_dir, {"train_per_class": 2, "test_per_class": 1, "format": "mnist_idx"}, seed=2)
    for f in raw_dir.iterdir():  # as stage extract does: each .gz to a folder of its own
        extract(f, extracted / archive_stem(f.name))
    raw = read_raw(extracted, "mnist_idx")
    with pytest.raises(DataError, match=r"not in the label_csv layout \(expected train.csv"):
        read_raw(extracted, "label_csv")
    assert raw.x_train.shape == (20, 28, 28, 1) and raw.x_test.shape == (10, 28, 28, 1)
    assert sorted(set(raw.y_test)) == list(range(10))


def test_fashion_mnist_real_files_are_read(shared_datasets, tmp_path):
    folder = shared_datasets / "fashion-mnist"
    if not (folder / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("no Fashion-MNIST mirror")
    import shutil

    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(folder / name, tmp_path / name.replace("t10k", "train"))
    raw = read_raw(tmp_path, "mnist_idx")
    assert raw.x_train.shape == (10_000, 28, 28, 1) and np.bincount(raw.y_train).tolist() == [1000] * 10


def test_class_map_groups_ten_classes_into_five():
    params = config.load()
    names = params.datasets["gray28"].options["class_names"]
    five = {0: 0, 2: 0, 4: 0, 6: 0, 1: 1, 3: 2, 5: 3, 7: 3, 9: 3, 8: 4}  # the example in params.yaml
    from stages.sources.formats import RawData

    y = np.arange(10).repeat(2)
    raw = RawData(np.zeros((20, 28, 28, 1), np.uint8), y, None, None, names)
    out = select_classes(raw, None, five, "test")
    assert out.y_train.tolist() == [five[c] for c in y]
    assert out.classes == ["T-shirt/top+Pullover+Coat+Shirt", "Trouser", "Dress", "Sandal+Sneaker+Ankle boot", "Bag"]


def test_majority_vote_and_deterministic_ties():
    votes = np.array(
        [
            [0, 1, 2, 3, 4],
            [0, 1, 3, 4, 2],
            [1, 2, 2, 3, 0],
            [1, 1, 3, 4, 1],
        ]
    )
    # columns: tie 0/1 -> lowest; clear 1; tie 2/3 -> lowest; tie 3/4 -> lowest; four-way 0/1/2/4 tie -> 0
    assert majority_vote(votes, 5).tolist() == [0, 1, 2, 3, 0]
    probs = np.full((4, 5, 5), 0.1)
    probs[2, 0, 1] = probs[3, 0, 1] = 0.9  # class 1's voters were surer in column 0
    assert majority_vote(votes, 5, probs).tolist()[0] == 1
    assert majority_vote(votes[:1], 5).tolist() == [0, 1, 2, 3, 4]


def test_timing_table_from_fake_files(tmp_path, monkeypatch):
    from stages import report

    params = config.load()
    exp_reports, models = tmp_path / "reports" / "experiments", tmp_path / "models"
    live = exp_reports / "gray28_cnn1" / "train" / "plots" / "metrics" / "train"  # as DVCLiveCallback logs it
    live.mkdir(parents=True)
    (live / "epoch_seconds.tsv").write_text("step\tepoch_seconds\n0\t3.0\n1\t1.0\n2\t2.0\n")
    (models / "gray28_cnn1").mkdir(parents=True)
    summary = {"parameters": 1386, "epochs_run": 3, "test_seconds": 0.5}
    (models / "gray28_cnn1" / "summary.json").write_text(json.dumps(summary))
    (models / "gray28_cnn4").mkdir()  # trained, but no dvclive log: no per-epoch time
    (models / "gray28_cnn4" / "summary.json").write_text(json.dumps({**summary, "test_seconds": 1.25}))
    df = report.timing_table(params, "gray28", exp_reports, models)
    rows = {r["experiment"]: r for r in df.to_dict(orient="records")}
    assert set(rows) == {"gray28_cnn1", "gray28_cnn4"}
    assert rows["gray28_cnn1"]["train_seconds_per_epoch"] == 2.0
    assert rows["gray28_cnn1"]["test_seconds"] == 0.5
    assert np.isnan(rows["gray28_cnn4"]["train_seconds_per_epoch"])
    assert rows["gray28_cnn4"]["test_seconds"] == 1.25

    monkeypatch.setattr(report, "timing_table", lambda p, s: df)
    report.write_timing(params, "gray28", tmp_path)
    assert "| gray28_cnn1 " in (tmp_path / "gray28.md").read_text()
    assert json.loads((tmp_path / "gray28.json").read_text())["rows"][0]["experiment"] == "gray28_cnn1"


def test_embedded_profile_shrinks_the_big_models():
    params = config.load()
    from stages.training.settings import resolve

    exp = resolve(params.model_copy(update={"profile": "embedded"}), "gray28_vgg19")
    assert exp.model_args == {"input_size": 32, "weights": None} and exp.max_train_examples == 100
    assert exp.epochs == 1
    full = resolve(params.model_copy(update={"profile": "full"}), "gray28_vgg19")
    assert full.model_args["weights"] == "imagenet" and full.model_args["input_size"] == 150
    assert full.max_train_examples is None and full.epochs == 40


def test_parallel_members_retrain_only_the_stages_dvc_reports_changed():
    from stages.tools.train_members import stale_seeds

    # `dvc status --json` output: upstream stages can appear too, up-to-date members do not
    status = {
        "prepare@gray28": [{"changed deps": {"stages/prepare.py": "modified"}}],
        "train_member@gray28_tuned-5": [{"changed outs": {"models/ensembles/gray28_tuned/seed5": "deleted"}}],
        "train_member@gray28_tuned-7": [{"changed outs": {"models/ensembles/gray28_tuned/seed7": "deleted"}}],
    }
    assert stale_seeds(status, "gray28_tuned", [1, 2, 3, 4, 5, 6, 7]) == [5, 7]
    assert stale_seeds({}, "gray28_tuned", [1, 2, 3]) == []


def test_parallel_member_workers_split_gpus_or_cores(monkeypatch):
    from stages.tools.train_members import worker_env

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [worker_env(w, 4, gpus=2, cores=16)["CUDA_VISIBLE_DEVICES"] for w in range(4)] == ["0", "1", "0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert worker_env(1, 2, gpus=2, cores=16) == {"CUDA_VISIBLE_DEVICES": "5"}
    cpu = worker_env(0, 2, gpus=0, cores=2)
    assert cpu["TF_NUM_INTRAOP_THREADS"] == cpu["OMP_NUM_THREADS"] == "1"
    assert worker_env(0, 4, gpus=0, cores=2)["TF_NUM_INTRAOP_THREADS"] == "1"


def test_parallel_member_command_is_the_stage_command():
    import yaml

    from stages.tools.train_members import member_command
    from tests.conftest import REPO

    template = " ".join(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train_member"]["do"]["cmd"].split())
    member = config.load(REPO / "params.yaml").ensemble_members["gray28_tuned-1"]
    expected = template.replace("${item.experiment}", member.experiment).replace("${item.ensemble}", member.ensemble)
    expected = expected.replace("${item.seed}", "1")
    assert " ".join(["python", *member_command(member.ensemble, member.experiment, 1)[1:]]) == expected
