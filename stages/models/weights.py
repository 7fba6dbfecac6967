"""Pretrained weights for the Keras application models: one mechanism for every study.

A model's ``weights`` argument is ``"imagenet"``, ``None`` (random initialisation) or
the path of a local weights file. Keras downloads ImageNet weights on first use into
``$KERAS_HOME/models`` (``~/.keras/models``); offline, that download would fail deep
inside Keras. :func:`resolve` checks first and raises a one-line ConfigError naming
the exact file Keras looks for and the two ways to supply it.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.core.errors import ConfigError

# The "no top" ImageNet weights file of each architecture (keras/src/applications/*.py).
NOTOP_FILES = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_resnet_v2": "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights (the same rule as keras.src.backend.config)."""
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"])
    else:
        base = Path(os.path.expanduser("~"))
        home = (base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras"
    return home / "models"


def resolve(weights: str | None, arch: str, *, where: str = "model_args.weights") -> str | None:
    """The value to pass as Keras' ``weights=``: None, "imagenet" (file present) or a file path.

    ConfigError when the ImageNet file is not cached (Keras would need the network) or
    when a given path does not exist.
    """
    if weights is None or str(weights).lower() in ("", "none", "null"):
        return None
    if weights == "imagenet":
        if arch not in NOTOP_FILES:
            raise ConfigError(f"{where}: no ImageNet weights known for {arch!r} (known: {', '.join(NOTOP_FILES)})")
        cached = keras_models_dir() / NOTOP_FILES[arch]
        if cached.is_file() or os.environ.get("KERAS_ALLOW_DOWNLOAD") == "1":
            return "imagenet"
        raise ConfigError(
            f"{where}: ImageNet weights for {arch} are not available offline: Keras looks for {cached}. "
            f"Put {NOTOP_FILES[arch]} there (from https://storage.googleapis.com/tensorflow/keras-applications/), "
            f"or set {where} to the path of that file, or to null to train from scratch "
            "(KERAS_ALLOW_DOWNLOAD=1 lets Keras download it)"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"{where}: weights file {path} not found (expected {NOTOP_FILES.get(arch, 'a .h5 file')})")
    return str(path)
