"""Benchmark: `python -m stages.tools.bench` -> reports/bench.json and reports/bench.md.

Not part of `dvc repro`. Measures, in one run on this machine (ratios, since the
machines are noisy; compare two implementations in the same run):

1. prepare: decode + resize images/s of the project's reader vs a plain per-image loop;
2. input pipeline: training images/s through the project's tf.data pipeline vs the same
   model fed one in-memory batch over and over (the compute-only ceiling);
3. compute efficiency: achieved training GFLOP/s vs this machine's dense matmul GFLOP/s, and
   what moves it (dtype, batch size, XLA, oneDNN, threads, activation);
4. DVC overhead: `dvc status` and a no-op `dvc repro` on this repository.

Uses small real data where ../shared/datasets exists, generated data otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.core import cli
from stages.core.files import write_json, write_text
from stages.core.paths import REPORTS

# OpenCV and TensorFlow load inside the functions that use them: after the command's environment (stages/core/cli.py)
if TYPE_CHECKING:
    import keras
    import tensorflow as tf

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MODELS_TO_TIME = [  # (builder, its arguments, input shape, classes, batch size): the classification studies
    ("cifar_gray_baseline", {}, (32, 32, 1), 10, 128),
    ("cifar_gray_tuned", {}, (32, 32, 1), 10, 128),
    ("cifar_rgb_cnn", {}, (32, 32, 3), 10, 128),
    ("objects8_cnn", {}, (32, 32, 3), 8, 50),
    ("resnet_fast", {"activation": "relu"}, (32, 32, 3), 10, 256),
    ("airbench", {}, (32, 32, 3), 10, 256),
    ("gray28_cnn1", {}, (28, 28, 1), 10, 128),
    ("gray28_tuned", {}, (28, 28, 1), 10, 128),
    ("natural_light", {}, (50, 50, 3), 8, 32),
    ("natural_resnet50", {}, (50, 50, 3), 8, 32),
]
# What moves compute efficiency: cifar_rgb_fast's model (airbench, bfloat16 on CPUs with AMX or AVX512_BF16) in memory,
# one setting changed at a time, each in a fresh process (thread counts and oneDNN are fixed when
# TensorFlow starts); then resnet_fast, whose narrower layers gain less, or lose, from bfloat16.
KNOBS = [
    ("as trained (airbench, bf16 with AMX/AVX512_BF16, batch 256, 2 threads, oneDNN, no XLA)", {}, {}),
    ("float32", {"policy": "float32"}, {}),
    ("batch 64", {"batch": 64}, {}),
    ("batch 512", {"batch": 512}, {}),
    ("XLA (jit_compile=True)", {"jit_compile": True}, {}),
    ("oneDNN off", {}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    ("1 thread", {}, {"TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}),
    ("gelu instead of relu", {"activation": "gelu"}, {}),
    # what airbench94's pieces cost per step: the whitening stem is frozen, dirac is only an init, the
    # lookahead copies the weights every 5 steps, the bias scale is one multiply (cifar_rgb_airbench's
    # settings; its alternating flips are in tf.data, outside this in-memory loop)
    ("+ weight EMA (Keras use_ema)", {"ema": 0.99}, {}),
    ("cifar_rgb_airbench's recipe (whitening, dirac, gelu, lookahead, bias lr x64)", {"recipe": True}, {}),
    ("cifar_rgb_airbench's recipe at its batch 1024", {"recipe": True, "batch": 1024}, {}),
    ("resnet_fast 32/64/128, float32", {"model": "resnet_fast", "policy": "float32"}, {}),
    ("resnet_fast 32/64/128, as trained with bf16 where native", {"model": "resnet_fast"}, {}),
]


def rate(fn, n: int, repeats: int = 3) -> float:
    """Items per second of ``fn()`` processing ``n`` items, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def photo_folder(root: Path, n: int = 600) -> list[Path]:
    """JPEGs the size of Kaggle Natural Images' photos (a few hundred pixels a side)."""
    import cv2

    from stages.sources.synthetic import shape_dataset

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(200, 400)), int(rng.integers(250, 500))
        img = cv2.resize(shape_dataset(1, 1, 64, 3, i)[0][0], (w, h))
        path = root / f"photo_{i:04d}.jpg"
        if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"cannot write {path}")
        paths.append(path)
    return paths


def plain_loop_read(
    paths: Sequence[str | os.PathLike], size: tuple[int, int] | None, color: str = "rgb"
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """The naive baseline of :func:`bench_prepare`: ``cv2.imread`` + ``cv2.resize`` + ``np.array``,
    one file after another.

    The decoding flags and return value of :func:`read_image_files`, so results compare equal; no
    checks, no thread pool; with ``size=None`` all images must share one size.
    """
    import cv2

    channels = 1 if color in ("gray", "grayscale") else 3
    orient = cv2.IMREAD_IGNORE_ORIENTATION  # as read_image_files (EXIF orientation is not applied)
    images, ok, skipped = [], [], []
    for i, p in enumerate(paths):
        try:
            if channels == 1:
                img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE | orient)
            else:
                img = cv2.imread(str(p), cv2.IMREAD_COLOR | orient)
                if img is not None:
                    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        except cv2.error:  # e.g. over OpenCV's pixel limit
            img = None
        if img is None:
            skipped.append((str(p), "cv2.imread failed"))
            continue
        if size is not None:
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(img.reshape(img.shape[0], img.shape[1], channels))
        ok.append(i)
    x = np.array(images, dtype=np.uint8) if images else np.empty((0, 0, 0, channels), np.uint8)
    return x, ok, skipped


def bench_prepare(tmp: Path) -> list[dict]:
    from stages.sources.readers.images import read_image_files

    sets: list[tuple[str, list[Path], tuple[int, int]]] = [
        ("generated photos 200-400 px -> 50x50", photo_folder(tmp / "photos"), (50, 50))
    ]
    natural = SHARED / "natural-images-30px.zip"
    if natural.is_file():
        with zipfile.ZipFile(natural) as zf:
            zf.extractall(tmp / "natural")
        files = sorted(p for p in (tmp / "natural").rglob("*.jpg"))[:3000]
        sets.append(("real Natural Images (30x30 copy) -> 50x50", files, (50, 50)))
    rows = []
    for label, paths, size in sets:
        plain = rate(lambda paths=paths, size=size: plain_loop_read(paths, size), len(paths))
        project = rate(lambda paths=paths, size=size: read_image_files(paths, size), len(paths))
        one = rate(lambda paths=paths, size=size: read_image_files(paths, size, workers=1), len(paths))
        plain, project, one = round(plain), round(project), round(one)  # the ratios are of the rates shown
        rows.append(
            {
                "data": label,
                "images": len(paths),
                "plain_loop_per_s": plain,
                "project_per_s": project,
                "ratio": round(project / plain, 2),
                "project_one_thread_per_s": one,
                "all_cores_vs_one": round(project / one, 2),
            }
        )
    return rows


def core_scaling(path: Path, n: int = 300) -> float:
    """One in-memory JPEG decoded ``n`` times per thread, a thread per core, over one thread alone:
    how far this machine's cores scale any parallel decoder (OpenCV releases the GIL, and the
    Python per call is negligible next to the decode), the ceiling for the reader's own scaling."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    buf = np.frombuffer(path.read_bytes(), np.uint8)

    def loop(count: int) -> None:
        for _ in range(count):
            cv2.imdecode(buf, cv2.IMREAD_COLOR)

    cores = os.cpu_count() or 1
    one = rate(lambda: loop(n), n)
    with ThreadPoolExecutor(cores) as pool:
        every = rate(lambda: list(pool.map(loop, [n] * cores)), n * cores)
    return round(every / one, 2)


def one_batch(x: np.ndarray, y: np.ndarray, batch: int) -> tf.data.Dataset:
    """The first ``batch`` images, already float32 in memory, repeated: the compute-only ceiling's input."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((tf.constant(x[:batch], tf.float32), tf.constant(y[:batch]))).repeat()


def fit_rate(
    model: keras.Model, data: tf.data.Dataset, steps: int, batch: int, repeats: int = 3, callbacks: list | None = None
) -> float:
    """Training images/s of ``model.fit`` over ``steps`` batches of ``data``, best of ``repeats``."""
    return rate(
        lambda: model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=callbacks),
        steps * batch,
        repeats,
    )


def bench_training(steps: int = 50) -> tuple[list[dict], float]:
    import keras
    import tensorflow as tf

    from stages.models import build
    from stages.models.flops import model_flops
    from stages.sources.synthetic import shape_dataset
    from stages.training.data import make_dataset

    a = tf.random.normal((2048, 2048))
    matmul = tf.function(lambda: tf.matmul(a, a))
    matmul()
    matmul_gflops = rate(lambda: [matmul() for _ in range(20)], 20 * 2 * 2048**3) / 1e9

    rows = []
    for name, args, shape, classes, batch in MODELS_TO_TIME:
        x, y = shape_dataset(max(1, batch * steps // classes + 1), classes, shape[0], shape[2], 0)
        model = build(name, shape, classes, **args)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        pipeline = make_dataset(x, y, batch, shuffle_seed=0).repeat()
        model.fit(pipeline, steps_per_epoch=3, epochs=1, verbose=0)  # build and warm up
        piped = fit_rate(model, pipeline, steps, batch)
        ceiling = fit_rate(model, one_batch(x, y, batch), steps, batch)
        train_flops = 3 * model_flops(model)
        rows.append(
            {
                "model": name,
                "batch": batch,
                "pipeline_images_per_s": round(piped),
                "in_memory_images_per_s": round(ceiling),
                "pipeline_vs_ceiling": round(piped / ceiling, 3),
                "train_gflop_per_image": round(train_flops / 1e9, 4),
                "achieved_gflops": round(piped * train_flops / 1e9, 1),
                "fraction_of_matmul": round(piped * train_flops / 1e9 / matmul_gflops, 3),
            }
        )
        keras.backend.clear_session()
    return rows, round(matmul_gflops, 1)


def knob_rate(setting: dict, steps: int = 15) -> float:
    """Training images/s of airbench fed one in-memory batch, with ``setting`` (model, model_args, batch,
    jit_compile, activation, dtype policy, weight EMA) changed; run by :func:`bench_knobs` in a fresh process."""
    import keras

    from stages.core import config
    from stages.core.machine import cpu_has_native_bf16
    from stages.models import build
    from stages.sources.synthetic import shape_dataset
    from stages.training.callbacks import Lookahead
    from stages.training.hardware import precision_policy
    from stages.training.recipe import make_optimizer
    from stages.training.settings import resolve

    as_trained = precision_policy("auto_cpu_bf16", None, cpu_has_native_bf16())  # cifar_rgb_fast's, on a CPU
    keras.mixed_precision.set_global_policy(setting.get("policy", as_trained))
    batch = setting.get("batch", 256)
    x, y = shape_dataset(batch // 10 + 1, 10, 32, 3, 0)
    recipe = resolve(config.load(), "cifar_rgb_airbench") if setting.get("recipe") else None
    model_args = {"activation": setting.get("activation", "relu"), **setting.get("model_args", {})}
    if recipe:
        model_args = recipe.model_args
    model = build(setting.get("model", "airbench"), (32, 32, 3), 10, **model_args)
    jit = setting.get("jit_compile", False)
    ema = setting.get("ema")
    optimizer = keras.optimizers.SGD(use_ema=ema is not None, ema_momentum=ema or 0.99)
    callbacks = []
    if recipe:
        optimizer = make_optimizer(recipe.optimizer, 1, steps)
        callbacks = [Lookahead(recipe.optimizer.lookahead.model_copy(update={"start_epoch": 0}), steps, steps)]
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=jit)
    data = one_batch(x, y, batch)
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    return fit_rate(model, data, steps, batch, repeats=2, callbacks=callbacks)


def bench_knobs() -> list[dict]:
    rows, base = [], None
    for label, setting, env in KNOBS:
        code = f"from stages.tools.bench import knob_rate; print(knob_rate({setting!r}))"
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, check=True
        )
        images = float(done.stdout.strip().splitlines()[-1])
        base = base or images
        rows.append({"setting": label, "images_per_s": round(images), "vs_as_trained": round(images / base, 2)})
    return rows


def bench_dvc() -> dict:
    out = {}
    for label, cmd in (("dvc_status_s", ["dvc", "status"]), ("dvc_repro_noop_s", ["dvc", "repro"])):
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        out[label] = round(time.perf_counter() - start, 2)
        out[f"{label}_ok"] = done.returncode == 0 and (
            "up to date" in done.stdout.lower() or "didn't change" in done.stdout
        )
    return out


def markdown(result: dict) -> str:
    import pandas as pd

    parts = [f"# Benchmark ({result['machine']}, data: {result['data']})\n"]
    parts += ["## Prepare: decode + resize\n", pd.DataFrame(result["prepare"]).to_markdown(index=False), ""]
    parts += [
        f"All cores against one for the same in-memory JPEG decode (the machine's ceiling for "
        f"`all_cores_vs_one`): {result['decode_core_scaling']}x\n"
    ]
    parts += [
        f"## Training input pipeline and compute (matmul: {result['matmul_gflops']} GFLOP/s)\n",
        pd.DataFrame(result["training"]).to_markdown(index=False),
        "",
    ]
    parts += [
        "## What moves compute efficiency (cifar_rgb_fast's airbench, in memory)\n",
        pd.DataFrame(result["knobs"]).to_markdown(index=False),
        "",
    ]
    parts += ["## DVC overhead\n", pd.DataFrame([result["dvc"]]).to_markdown(index=False), ""]
    return "\n".join(parts) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prepare = bench_prepare(Path(tmp))
        scaling = core_scaling(photo_folder(Path(tmp) / "one", n=1)[0])
    training, matmul = bench_training()
    knobs = bench_knobs()
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU"
        if not _gpus()
        else f"{os.cpu_count()} CPU cores, GPU: {_gpus()}",
        "data": "real (../shared/datasets) + generated" if SHARED.is_dir() else "generated",
        "prepare": prepare,
        "decode_core_scaling": scaling,
        "matmul_gflops": matmul,
        "training": training,
        "knobs": knobs,
        "dvc": bench_dvc(),
    }
    write_json(REPORTS / "bench.json", result)
    text = markdown(result)
    write_text(REPORTS / "bench.md", text)
    print(text)


def _gpus() -> str:
    import tensorflow as tf

    return ", ".join(d.name for d in tf.config.list_physical_devices("GPU"))


def parser() -> argparse.ArgumentParser:
    return cli.parser(main)


if __name__ == "__main__":
    cli.run(main, parser())
