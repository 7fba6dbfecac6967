"""The GPU check: ``python -m stages.tools.gpucheck [--epochs N] [--allow-cpu]`` -> reports/gpu_check.{json,md}.

On a machine with a GPU, trains the fast CIFAR recipe's network (``airbench``, cifar_rgb_fast's
widths) and the pets U-Net (model 3) for a few epochs on generated images in the precision
policy ``auto`` picks (bfloat16 from compute capability 8, float16 with loss scaling before),
with XLA, and writes images per second (epochs after the first, which compiles), accuracy after
each epoch against the seconds so far, the policy and the device. A few minutes on one GPU.
Without a GPU it stops, unless ``--allow-cpu`` (to try the script itself; the numbers then say
nothing about a GPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stages.core import cli
from stages.core.errors import ConfigError
from stages.core.files import write_json, write_text
from stages.core.paths import REPORTS


def timed_fit(model, x, y, x_test, y_test, epochs: int, batch: int) -> dict:
    """Fit epoch by epoch; images/s after the first epoch, and (seconds, test accuracy) per epoch."""
    seconds, curve = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
        seconds.append(time.perf_counter() - start)
        _, accuracy = model.evaluate(x_test, y_test, batch_size=batch, verbose=0)
        curve.append({"seconds": round(sum(seconds), 2), "test_accuracy": round(float(accuracy), 4)})
    steady = seconds[1:] or seconds
    return {"images_per_second": round(len(x) * len(steady) / sum(steady), 1), "curve": curve}


def check(name: str, model, data: tuple, epochs: int, batch: int, jit: bool) -> dict:
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit,
    )
    return {
        "model": name,
        "parameters": int(model.count_params()),
        "batch": batch,
        **timed_fit(model, *data, epochs, batch),
    }


def pets_data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from stages.sources.synthetic import pet_scene  # OpenCV: after the command's environment (stages/core/cli.py)

    rng = np.random.default_rng(seed)
    scenes = [pet_scene(rng, size, size, dog=bool(i % 2)) for i in range(n)]
    masks = np.stack([s[1] for s in scenes]).astype("int64") - 1  # trimap 1 pet, 2 background, 3 border -> 0..2
    return np.stack([s[0] for s in scenes]).astype("float32"), masks


def main(epochs: int = 4, images: int = 20_000, allow_cpu: bool = False) -> None:
    """Train two models briefly on the GPU and write reports/gpu_check.json and .md."""
    import keras
    import tensorflow as tf

    from stages.models import build
    from stages.sources.synthetic import shape_dataset
    from stages.training.hardware import gpu_capability, precision_policy

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not allow_cpu:
        raise ConfigError("no GPU visible to TensorFlow: nothing to check (--allow-cpu tries the script on a CPU)")
    policy = precision_policy("auto", gpu_capability(), cpu_bf16=False)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    jit = bool(gpus)  # XLA fuses the small ops of both nets on a GPU; on a CPU it only adds compile time
    per_class = max(1, images // 10)
    x, y = shape_dataset(per_class, 10, 32, 3, seed=0)
    test = shape_dataset(max(1, per_class // 5), 10, 32, 3, seed=1)
    cifar = build("airbench", (32, 32, 3), 10, widths=(64, 256, 256))
    results = [check("airbench 64/256/256", cifar, (x.astype("float32"), y, *test), epochs, 512, jit)]
    n_pets = max(2, images // 20)
    unet = build("pets_unet", (96, 96, 3), 3, batch_norm=True)
    pets = (*pets_data(n_pets, 96, 2), *pets_data(max(2, n_pets // 5), 96, 3))
    results.append(check("pets_unet, batch norm (model 3)", unet, pets, epochs, 32, jit))
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"
    report = {"device": device, "policy": policy, "xla": jit, "epochs": epochs, "models": results}
    write_json(REPORTS / "gpu_check.json", report)
    lines = [
        f"# GPU check: {device}, {policy}, XLA {'on' if jit else 'off'}",
        "",
        "| model | parameters | batch | images/s | test accuracy by epoch (seconds so far) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        curve = ", ".join(f"{p['test_accuracy']:.3f} ({p['seconds']:.0f} s)" for p in r["curve"])
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['batch']} | {r['images_per_second']:,} | {curve} |")
    write_text(REPORTS / "gpu_check.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("--epochs", type=int, default=4, metavar="N", help="epochs per model (default 4)")
    command.add_argument("--images", type=int, default=20_000, metavar="N", help="generated CIFAR-size training images")
    command.add_argument("--allow-cpu", action="store_true", help="run without a GPU (to try the script)")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
