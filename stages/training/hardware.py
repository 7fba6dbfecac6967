"""What the machine offers for training: GPUs and their compute capability, the dtype policy (whether the
CPU has native bfloat16 is read in stages/core/machine.py) and the distribution strategy."""

from __future__ import annotations

import os

import tensorflow as tf

from stages.core.errors import ConfigError

#: Why one model is not trained across machines (tests/test_train.py re-checks it with two workers).
MULTI_WORKER_REFUSED = (
    "TF_CONFIG is set, but Keras 3's fit cannot train under MultiWorkerMirroredStrategy "
    "(keras-team/keras#20585); use several GPUs of one machine, or run separate experiments "
    "on several machines (docs/gpus.md)"
)


def distribution_strategy() -> tf.distribute.Strategy:
    """Several GPUs: mirror across them (MirroredStrategy); else the default device."""
    if os.environ.get("TF_CONFIG"):
        raise ConfigError(MULTI_WORKER_REFUSED)
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def gpu_capability() -> tuple[int, int] | None:
    """The first GPU's compute capability, or None without a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))


def precision_policy(setting: str, capability: tuple[int, int] | None, cpu_bf16: bool = False) -> str:
    """The Keras dtype policy for ``mixed_precision``. ``auto``: float32 on a CPU, bfloat16 on GPUs of
    compute capability 8 or more, float16 (Keras adds loss scaling) below. ``auto_cpu_bf16``: the
    same, but bfloat16 on CPUs with native bfloat16 (``cpu_bf16``: AMX or AVX512_BF16); elsewhere it is
    emulated, 0.28x the float32 speed of cifar_rgb_fast's model when oneDNN was limited to AVX-512 without it."""
    if setting not in ("auto", "auto_cpu_bf16"):
        return setting
    if capability is None:
        return "mixed_bfloat16" if setting == "auto_cpu_bf16" and cpu_bf16 else "float32"
    return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
