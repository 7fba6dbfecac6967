"""The training loop on a tiny prepared dataset: outputs, and resuming after `kill -9`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages import models
from stages.core.files import save_npy, write_json
from tests.conftest import REPO, without_tf_notice

EPOCHS = 8


def make_project(root: Path, n: int = 600, epochs: int = EPOCHS, **experiment) -> None:
    """A params.yaml with one experiment, and its prepared dataset (bright squares vs discs)."""
    rng = np.random.default_rng(0)
    prepared = root / "data/prepared/tiny"
    for part, size in (("train", n), ("val", n // 5), ("test", n // 5)):
        y = rng.integers(0, 2, size)
        x = rng.integers(0, 60, (size, 32, 32, 1)).astype(np.uint8)
        for img, label in zip(x, y):
            if label:
                img[8:24, 8:24] = 220
            else:
                img[12:20, 4:28] = 220
        save_npy(prepared / f"x_{part}.npy", x)
        save_npy(prepared / f"y_{part}.npy", y.astype(np.int64))
    write_json(
        prepared / "meta.json",
        {
            "classes": ["square", "bar"],
            "image_shape": [32, 32, 1],
            "counts": {"train": n},
            "data": "generated sample data",
            "task": "classification",
        },
    )
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "full"
    params["datasets"] = {"tiny": {"source": "cifar10", "color": "gray"}}
    params["ensembles"], params["ensemble_members"] = {}, {}
    tiny = {
        "dataset": "tiny",
        "model": "cifar_gray_baseline",
        "epochs": epochs,
        "batch_size": 32,
        "callbacks": {"checkpoint": {"monitor": "val_accuracy"}},
        **experiment,
    }
    models.load_all()  # the study is the module that holds the model (its train stage depends on it)
    tiny["study"] = models.MODELS[tiny["model"]].__module__.rsplit(".", 1)[-1]
    params["experiments"] = {"tiny": tiny}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def run_train(root: Path, *, stderr: int = subprocess.STDOUT, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train", "tiny"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        **kwargs,
    )


def logged(root: Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) rows of one dvclive metric of the tiny experiment."""
    tsv = root / f"reports/experiments/tiny/train/plots/metrics/{metric}.tsv"
    if not tsv.is_file():
        return []
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:] if line.strip()]
    return [(int(row[0]), float(row[-1])) for row in rows]


def logged_epochs(root: Path) -> list[int]:
    return [step for step, _ in logged(root, "train/loss")]


def test_training_writes_model_summary_and_test_outputs(tmp_path):
    make_project(tmp_path, n=200, epochs=2, track_test=True, tta_flip=True)
    proc = run_train(tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    summary = json.loads((tmp_path / "models/tiny/summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["parameters"] > 0
    probs = np.load(tmp_path / "models/tiny/test_probs.npy")
    assert probs.shape == (40, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-4)
    assert logged_epochs(tmp_path) == [0, 1]
    # track_test: the time-to-accuracy curve, test accuracy and elapsed wall time per epoch
    test_acc, elapsed = logged(tmp_path, "test/accuracy"), logged(tmp_path, "train/elapsed_seconds")
    assert [step for step, _ in test_acc] == [0, 1] and all(0 <= acc <= 1 for _, acc in test_acc)
    final_acc = float((probs.argmax(axis=1) == np.load(tmp_path / "data/prepared/tiny/y_test.npy")).mean())
    assert any(acc == pytest.approx(final_acc, abs=1e-6) for _, acc in test_acc), "the kept epoch was logged"
    assert 0 < elapsed[0][1] < elapsed[1][1]
    assert not (tmp_path / "checkpoints/tiny").exists(), "checkpoints of a finished run are removed"


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_epoch(tmp_path):
    make_project(tmp_path)
    proc = run_train(tmp_path, start_new_session=True)
    deadline = time.time() + 300
    while len(logged_epochs(tmp_path)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed: make the test data larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(logged_epochs(tmp_path))
    assert not (tmp_path / "models/tiny").exists(), "a killed run must not leave a model behind"
    assert (tmp_path / "checkpoints/tiny/backup").is_dir()

    proc = run_train(tmp_path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "(resuming)" in out
    summary = json.loads((tmp_path / "models/tiny/summary.json").read_text())
    assert summary["epochs_run"] == EPOCHS
    # resumed from the last saved epoch, not from the start: a kill that lands after an epoch's log
    # line but before its checkpoint is written costs that one epoch again, its log line replaced
    assert logged_epochs(tmp_path) == list(range(EPOCHS)), f"killed after {done_before} epochs"
    assert out.count("Epoch ") <= EPOCHS - done_before + 1, "resumed run repeated finished epochs"


def test_ctrl_c_during_training_is_one_line_exit_130_and_keeps_the_checkpoint(tmp_path):
    make_project(tmp_path)
    # as at a terminal: a job started in the background of a script inherits Ctrl-C ignored, and Python
    # then leaves it ignored
    proc = run_train(tmp_path, stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    backup, deadline = tmp_path / "checkpoints/tiny/backup", time.time() + 300
    # an epoch is backed up once its state.json is written, the backup's last file
    while not (backup / "state.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted: make the test data larger"
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-3000:]
    assert without_tf_notice(err) == [
        "interrupted: train@tiny stopped; the checkpoint in checkpoints/tiny/ is kept, run again to resume"
    ]
    assert backup.is_dir() and (tmp_path / "checkpoints/tiny/settings.json").is_file()
    assert not (tmp_path / "models/tiny").exists()


def test_the_interrupted_line_says_what_the_checkpoint_holds(tmp_path):
    from stages.training.loop import interrupted

    ckpt = tmp_path / "checkpoints/x"
    assert interrupted("x", ckpt, True) == "train@x stopped before its first epoch ended; run again to start over"
    (ckpt / "backup_fine_tune").mkdir(parents=True)  # a backup folder without a finished epoch in it
    assert interrupted("x", ckpt, True) == "train@x stopped before its first epoch ended; run again to start over"
    (ckpt / "backup_fine_tune/state.json").write_text(json.dumps({"epoch": 1, "stopped": False}))
    assert interrupted("x", ckpt, True) == f"train@x stopped; the checkpoint in {ckpt}/ is kept, run again to resume"
    assert interrupted("x", ckpt, False) == "train@x stopped; with resume: false the next run starts over"


# `python -m stages.train` whose final write fails (a disk that fills up once training is over)
FAILING_WRITE = """
import sys
import stages.train as t
import stages.training.outputs as outputs
from stages.core.cli import run
from stages.core.files import OutputError
def fail(target, **kwargs):
    raise OutputError(f"cannot write {target}: No space left on device")
outputs.atomic_path = fail
run(t.main, t.parser(), sys.argv[1:])
"""


def run_train_failing_write(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", FAILING_WRITE, "tiny"]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_failed_final_write_keeps_the_run_resumable_and_its_best_model(tmp_path):
    import keras

    make_project(tmp_path, n=200, epochs=2)
    done = run_train_failing_write(tmp_path)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "error: cannot write models/tiny: No space left on device" in done.stderr
    assert "Traceback" not in done.stderr
    ckpt = tmp_path / "checkpoints/tiny"
    assert (ckpt / "backup").is_dir(), "the checkpoint must outlive a failed write of the final model"
    assert (ckpt / "best.keras").is_file()

    done = run_train_failing_write(tmp_path)  # the re-run has nothing left to train
    assert done.returncode == 1 and "(resuming)" in done.stdout
    assert "Epoch " not in done.stdout, "a finished run was trained again"
    assert logged_epochs(tmp_path) == [0, 1]

    # the best score reached before the stop, one that later epochs cannot beat (strictly)
    shutil.copy(ckpt / "best.keras", tmp_path / "best_before.keras")
    tsv = tmp_path / "reports/experiments/tiny/train/plots/metrics/eval/accuracy.tsv"
    rows = tsv.read_text().splitlines()
    rows[-1] = rows[-1].rsplit("\t", 1)[0] + "\t1.0"
    tsv.write_text("\n".join(rows) + "\n")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["experiments"]["tiny"]["epochs"] = 4  # two more epochs after the resume
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_train(tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "(resuming)" in out and out.count("Epoch ") == 2
    assert logged_epochs(tmp_path) == [0, 1, 2, 3]
    final = keras.models.load_model(tmp_path / "models/tiny/model.keras").get_weights()
    before = keras.models.load_model(tmp_path / "best_before.keras").get_weights()
    assert len(final) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(final, before)), "a worse epoch replaced the best model"
    assert not ckpt.exists(), "the checkpoint goes once the final model is written"


def test_a_checkpoint_made_with_other_settings_is_not_resumed(tmp_path):
    """Resuming after a settings change would carry weights trained under the old settings into the run."""
    from stages.core import config
    from stages.training.settings import resolve

    make_project(tmp_path, n=200, epochs=2)
    assert run_train_failing_write(tmp_path).returncode == 1  # leaves checkpoints/tiny after 2 epochs
    # what the checkpoint was made with: the resolved run (all but its epochs), nothing else of params.yaml
    recorded = json.loads((tmp_path / "checkpoints/tiny/settings.json").read_text())
    run = resolve(config.load(tmp_path / "params.yaml"), "tiny")
    assert recorded["run"] == run.model_dump(mode="json", exclude={"epochs"})
    assert set(recorded) == {"run", "precision", "data", "backup"}
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["experiments"]["tiny"]["batch_size"] //= 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_train(tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "discarding the checkpoint of an interrupted run with other settings" in out
    assert "(resuming)" not in out and out.count("Epoch ") == 2  # trained again from the first epoch
    assert logged_epochs(tmp_path) == [0, 1]


def test_best_so_far_reads_dvclive_train_and_eval_logs(tmp_path):
    from stages.training.callbacks import best_so_far

    metrics = tmp_path / "plots" / "metrics"
    (metrics / "eval").mkdir(parents=True)
    (metrics / "train").mkdir()
    (metrics / "eval" / "accuracy.tsv").write_text("timestamp\tstep\taccuracy\n1\t0\t0.5\n2\t1\t0.75\n3\t2\t0.6\n")
    (metrics / "train" / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t0.9\n2\t1\t0.4\n3\t2\t0.7\n")
    assert best_so_far(tmp_path, "val_accuracy") == 0.75  # dvclive: eval/accuracy
    assert best_so_far(tmp_path, "loss") == 0.4  # dvclive: train/loss
    assert best_so_far(tmp_path, "val_loss") is None


def test_bad_model_argument_value_is_a_config_error():
    from stages.core import config
    from stages.core.errors import ConfigError
    from stages.training.recipe import build_model
    from stages.training.settings import resolve

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["experiments"]["x"] = {
        "study": "cifar_gray",
        "dataset": "cifar10_gray",
        "model": "cifar_gray_tuned",
        "model_args": {"dropout": 7},  # a value the builder refuses: its name is one the registry lists
        "epochs": 1,
        "batch_size": 1,
    }
    run = resolve(config.parse(yaml.safe_dump(params)), "x")
    with pytest.raises(ConfigError, match=r"^params\.yaml: experiments\.x\.model_args: ") as err:
        build_model(run, [32, 32, 1], 2)
    assert "\n" not in str(err.value)


def test_unwritable_output_folder_is_reported_before_training(tmp_path):
    from stages.core.files import OutputError
    from stages.training.outputs import check_writable

    (tmp_path / "models").write_text("a file where the folder should be\n")
    with pytest.raises(OutputError, match="cannot write to .*models/: a file is in the way"):
        check_writable(tmp_path / "checkpoints", tmp_path / "models")
    assert (tmp_path / "checkpoints").is_dir()
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(OutputError, match="Permission denied"):
            check_writable(tmp_path / "ro")


@pytest.mark.parametrize(
    ("setting", "capability", "cpu_bf16", "policy"),
    [
        ("auto", None, False, "float32"),  # a CPU: nothing that could slow it down
        ("auto", None, True, "float32"),  # even with native bf16: narrow nets lose speed in it
        ("auto", (9, 0), False, "mixed_bfloat16"),  # H100
        ("auto", (8, 0), False, "mixed_bfloat16"),  # A100
        ("auto", (7, 5), False, "mixed_float16"),  # T4: no bfloat16, float16 with loss scaling
        ("auto_cpu_bf16", None, True, "mixed_bfloat16"),  # AMX or AVX512_BF16 CPU (cifar_rgb_fast)
        ("auto_cpu_bf16", None, False, "float32"),  # neither: bfloat16 would be emulated, slower
        ("auto_cpu_bf16", (7, 5), True, "mixed_float16"),  # a GPU decides, not the host CPU
        ("float32", (9, 0), False, "float32"),
        ("mixed_float16", None, False, "mixed_float16"),
    ],
)
def test_mixed_precision_policy(setting, capability, cpu_bf16, policy):
    from stages.training.hardware import precision_policy

    assert precision_policy(setting, capability, cpu_bf16) == policy


def test_cpu_native_bf16_detection_matches_proc_cpuinfo():
    from stages.core.machine import cpu_has_native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    assert cpu_has_native_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)


AMX_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize(
    ("flags", "environ", "kind"),
    [
        (AMX_FLAGS, {}, "amx"),
        (AMX_FLAGS, {"ONEDNN_MAX_CPU_ISA": "ALL"}, "amx"),
        (AMX_FLAGS, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "avx2"),  # oneDNN's AVX2 kernels: another kind's numbers
        (AMX_FLAGS, {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, "avx512_bf16"),
        (AMX_FLAGS, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, "avx512"),
        (frozenset({"avx2"}), {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "avx2"),  # a cap raises nothing
        (AMX_FLAGS, {"TF_ENABLE_ONEDNN_OPTS": "0"}, "eigen"),  # TensorFlow's own kernels
        (frozenset(), {}, "other"),
    ],
)
def test_the_machine_kind_is_the_kernels_onednn_runs(flags, environ, kind):
    """reports/machine.json's isa decides whether a fresh run must match the committed metrics exactly:
    a user who caps or turns off oneDNN runs another kind's kernels."""
    from stages.core.machine import kernel_kind

    assert kernel_kind(flags, environ) == kind


def test_experiment_mixed_precision_overrides_the_accelerator_setting(tmp_path):
    make_project(
        tmp_path,
        n=60,
        epochs=1,
        model="airbench",
        model_args={"widths": [8, 16, 16]},
        mixed_precision="mixed_bfloat16",
        callbacks={},
    )
    proc = run_train(tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "epochs, batch 32, mixed_bfloat16" in out  # the params' accelerator says auto: float32 on a CPU
    probs = np.load(tmp_path / "models/tiny/test_probs.npy")
    assert probs.dtype == np.float32 and probs.shape == (12, 2)


def test_single_device_strategy_without_gpus_or_tf_config(monkeypatch):
    import tensorflow as tf

    from stages.training.hardware import distribution_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if len(tf.config.list_physical_devices("GPU")) > 1:
        pytest.skip("several GPUs visible: MirroredStrategy is expected")
    strategy = distribution_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)


def test_time_to_accuracy_table_and_chart_data_from_dvclive_logs(tmp_path):
    from stages import report
    from stages.core import config
    from tests.conftest import REPO

    params = config.load(REPO / "params.yaml")
    fast = next(name for name, exp in params.experiments.items() if exp.track_test)
    metrics = tmp_path / fast / "train" / "plots" / "metrics"
    (metrics / "test").mkdir(parents=True)
    (metrics / "train").mkdir()
    (metrics / "test" / "accuracy.tsv").write_text("step\taccuracy\n0\t0.5\n1\t0.875\n")
    (metrics / "train" / "elapsed_seconds.tsv").write_text("step\telapsed_seconds\n0\t60\n1\t150\n")
    df = report.time_to_accuracy(params, tmp_path)
    assert df[["experiment", "epoch", "elapsed_minutes", "test_accuracy"]].values.tolist() == [
        [fast, 1, 1.0, 0.5],
        [fast, 2, 2.5, 0.875],
    ]
    # what DVC's time-to-accuracy chart draws (reports/plots/time_to_accuracy.csv, the series template)
    points = report.time_to_accuracy_points(df)
    assert points.values.tolist() == [[60.0, 0.5, fast], [150.0, 0.875, fast]]


def test_fine_tune_phase_unfreezes_the_base_and_continues_the_logs(tmp_path):
    fine_tune = {"epochs": 1, "trainable_layers": 3, "learning_rate": 1e-4}
    make_project(
        tmp_path,
        n=60,
        epochs=1,
        model="gray28_vgg19",  # a frozen pretrained base (no weights here) under a small head
        model_args={"input_size": 32, "weights": None},
        fine_tune=fine_tune,
    )
    proc = run_train(tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "fine-tuning the last 3 layers of vgg19 for 1 epochs at learning rate 0.0001" in out
    summary = json.loads((tmp_path / "models/tiny/summary.json").read_text())
    assert summary["epochs_run"] == summary["epochs_requested"] == 2
    assert logged_epochs(tmp_path) == [0, 1], "phase 2 continues phase 1's dvclive steps"


def test_unfreeze_last_layers_of_the_base_only():
    import keras

    from stages.core.errors import ConfigError
    from stages.training.recipe import unfreeze_last_layers

    base = keras.Sequential([keras.layers.Dense(4, name=f"d{i}") for i in range(5)], name="base")
    base.build((None, 3))
    base.trainable = False
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(base(inputs, training=False)))
    unfreeze_last_layers(model, 2)
    assert [layer.trainable for layer in base.layers] == [False, False, False, True, True]
    assert len(model.trainable_weights) == 2 * 2 + 2  # two base layers + the head
    with pytest.raises(ConfigError, match="no pretrained base"):
        unfreeze_last_layers(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), 1)


def test_scorecard_row_without_the_model_says_what_is_missing(tmp_path, monkeypatch):
    from stages import report
    from stages.core import config
    from tests.conftest import REPO

    params = config.load(REPO / "params.yaml")
    studies = config.load_studies(params, REPO / "studies.yaml")
    monkeypatch.chdir(tmp_path)  # metrics in git, model not pulled: reports/ only
    metrics = {"test_accuracy": 0.5, "test_loss": 1.0, "parameters": 10, "epochs_run": 1}
    folder = tmp_path / "reports/experiments/cifar_gray_baseline"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "details.json").write_text(json.dumps({"train_seconds": 2.0}))
    rows = report.scorecard(params, studies).to_dict(orient="records")
    assert [r["experiment"] for r in rows] == ["cifar_gray_baseline"]
    assert "models/cifar_gray_baseline/summary.json missing" in rows[0]["data"]


MIRRORED_ON_TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from stages.training import hardware
# what distribution_strategy() returns on a machine with two GPUs, on two logical CPU devices (the loop
# takes it from hardware when it is imported, so patched before)
hardware.distribution_strategy = lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
from stages.core import config
from stages.training import loop
from stages.training.settings import resolve
summary = loop.train(resolve(config.load(), "tiny"))
print("replicas", hardware.distribution_strategy().num_replicas_in_sync, "epochs", summary["epochs_run"])
"""


def test_mirrored_strategy_fits_on_two_logical_devices(tmp_path):
    make_project(tmp_path, n=200, epochs=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_ON_TWO_CPUS], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2 epochs 2" in done.stdout
    assert (tmp_path / "models/tiny/model.keras").is_file()


MULTI_WORKER = """
import json, os, sys
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": sys.argv[2].split(",")},
                                      "task": {"type": "worker", "index": int(sys.argv[1])}})
import keras, numpy as np, tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
model.fit(tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int64"))).batch(16), epochs=1, verbose=0)
print("fitted")
"""


def test_multi_worker_training_is_still_broken_in_keras_3(tmp_path, monkeypatch):
    """Why `train` refuses TF_CONFIG: two workers on loopback, Keras 3's fit under
    MultiWorkerMirroredStrategy. If this starts to pass, the refusal can go."""
    import socket

    from stages.core.errors import ConfigError
    from stages.training.hardware import distribution_strategy

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    cluster = ",".join(f"localhost:{p}" for p in ports)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI_WORKER, str(i), cluster],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert all("fitted" not in out for out in outputs), "multi-worker fit works now: drop MULTI_WORKER_REFUSED"
    assert "Attempt to convert a value (PerReplica" in outputs[0], outputs[0][-2000:]
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}')
    with pytest.raises(ConfigError, match="MultiWorkerMirroredStrategy"):
        distribution_strategy()


def test_shifted_views_move_the_image_and_reflect_the_edge():
    from stages.training.outputs import shifted

    images = np.arange(2 * 5 * 6 * 3, dtype=np.float32).reshape(2, 5, 6, 3)
    down_right, up_left = shifted(images, 2).numpy(), shifted(images, -2).numpy()
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(down_right, padded[:, :5, :6])
    np.testing.assert_array_equal(up_left, padded[:, 4:9, 4:10])
    np.testing.assert_array_equal(down_right[:, 2:, 2:], images[:, :3, :4])  # the content moved by 2 pixels


def test_multi_crop_tta_weights_the_views_as_airbench94():
    """tta_shift + tta_flip: half on the mirror-averaged originals, a quarter on each mirror-averaged shift."""
    import keras
    import tensorflow as tf

    from stages.training.outputs import predict_test, shifted

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    x = np.random.default_rng(0).uniform(0, 255, (10, 6, 6, 1)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(10, np.int64))).batch(4)

    def mirrored_mean(images: np.ndarray) -> np.ndarray:
        return (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2

    down_right, up_left = shifted(x, 1).numpy(), shifted(x, -1).numpy()
    expected = mirrored_mean(x) / 2 + (mirrored_mean(down_right) + mirrored_mean(up_left)) / 4
    probs, _ = predict_test(model, ds, tta_flip=True, tta_shift=1)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    plain, _ = predict_test(model, ds, tta_flip=False)
    assert not np.allclose(plain, probs)  # the views changed the answer, so the check above had teeth


def test_flip_tta_mirrors_a_predicted_mask_back():
    """A segmentation model's flip TTA: the mask predicted from the mirrored image is mirrored back before
    averaging. A model that copies its input's left half to the output can tell the two apart."""
    import keras
    import tensorflow as tf

    from stages.training.outputs import predict_test

    x = np.zeros((2, 4, 6, 1), np.float32)
    x[:, :, :3] = 1.0  # left half lit: class 1 there, class 0 on the right
    inputs = keras.Input((4, 6, 1))
    model = keras.Model(inputs, keras.layers.Concatenate()([1 - inputs, inputs]))  # per-pixel 2-class "probs"
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros((2, 4, 6), np.int64))).batch(2)
    probs, _ = predict_test(model, ds, tta_flip=True)
    assert probs.shape == (2, 4, 6, 2)
    np.testing.assert_array_equal(probs.argmax(-1)[:, :, :3], 1)  # still the left half, where the input is lit
    np.testing.assert_array_equal(probs.argmax(-1)[:, :, 3:], 0)


def test_ema_momentum_gives_keras_weight_averaging():
    from stages.core import config
    from stages.training.recipe import make_optimizer

    opt = make_optimizer(config.Optimizer(name="sgd", learning_rate=0.1, momentum=0.9, ema_momentum=0.95), 2, 10)
    assert opt.use_ema and opt.ema_momentum == 0.95
    assert not make_optimizer(config.Optimizer(name="sgd", learning_rate=0.1), 2, 10).use_ema


def _dense_model(learning_rate: float = 0.1):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy")
    return model


def test_a_non_finite_loss_stops_before_the_backup_saves_the_epoch(tmp_path):
    """The step whose loss is inf raises the project's error at once: the epoch's later callbacks (the
    backup) never see the ruined weights, so the backup keeps the last finite epoch."""
    import keras

    from stages.core.errors import PipelineError
    from stages.training.callbacks import StopOnNonFiniteLoss

    x, y = np.ones((40, 2), np.float32), np.zeros(40, np.int64)
    backup = tmp_path / "backup"

    def callbacks():
        return [
            StopOnNonFiniteLoss("tiny", Path("models/tiny")),
            keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
        ]

    model = _dense_model()
    model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0, callbacks=callbacks())
    saved = {p.name: p.read_bytes() for p in backup.iterdir()}
    x[25] = np.inf  # the third step of the next epoch
    with pytest.raises(PipelineError) as err:
        model.fit(x, y, batch_size=10, initial_epoch=1, epochs=2, shuffle=False, verbose=0, callbacks=callbacks())
    assert str(err.value) == (
        "train@tiny: the training loss became nan in epoch 2, step 3, at learning rate 0.1; stopped, nothing "
        "written (models/tiny/ is left as it was): lower the learning rate in params.yaml's experiments.tiny"
    )
    assert {p.name: p.read_bytes() for p in backup.iterdir()} == saved, "the backup took the ruined epoch"


def test_a_non_finite_validation_loss_stops_at_the_epochs_end():
    """A single step (or an epoch's last) can ruin the weights without any training loss showing it."""
    from stages.core.errors import PipelineError
    from stages.training.callbacks import StopOnNonFiniteLoss

    x, y = np.ones((10, 2), np.float32), np.zeros(10, np.int64)
    x_val = x.copy()
    x_val[3] = np.nan
    with pytest.raises(PipelineError, match=r"^train@tiny: the validation loss became nan after epoch 1, at learning"):
        _dense_model().fit(
            x, y, validation_data=(x_val, y), verbose=0, callbacks=[StopOnNonFiniteLoss("tiny", Path("models/tiny"))]
        )


def test_a_model_with_non_finite_predictions_is_not_written(tmp_path):
    """The last check before writing: without a validation split, the last steps' damage shows only here."""
    import tensorflow as tf

    from stages.core import config
    from stages.core.errors import PipelineError
    from stages.training.data import Splits
    from stages.training.loop import test_outputs
    from stages.training.settings import resolve

    model = _dense_model()
    model.layers[0].kernel.assign(np.full((2, 2), np.nan, np.float32))
    x, y = np.ones((4, 2), np.float32), np.zeros(4, np.int64)
    test = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    splits = Splits(
        train=test,
        val=None,
        test=test,
        x_train=x,
        y_test=y,
        batch_size=2,
        one_hot=None,
        segmentation=False,
        reshuffled=lambda: test,
    )
    run = resolve(config.load(REPO / "params.yaml"), "cifar_gray_baseline")
    with pytest.raises(PipelineError, match="test predictions are not finite; stopped, nothing written"):
        test_outputs(model, run, splits, Path("models/tiny"))
    assert not (tmp_path / "models").exists()
