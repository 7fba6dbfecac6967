"""What a training run leaves: test predictions, the model folder (model.keras, summary, model card)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from stages.core.files import OutputError, atomic_path, save_npy, write_json, write_text
from stages.models.flops import model_flops

if TYPE_CHECKING:
    from stages.training.settings import Run


def check_writable(*folders: Path) -> None:
    """Fail in one line, before the first epoch, when an output folder cannot be written (not once training is over)."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            reason = "a file is in the way" if isinstance(exc, FileExistsError | NotADirectoryError) else exc.strerror
            raise OutputError(f"cannot write to {folder}/: {reason or exc} (checked before training)") from None


def shifted(images: tf.Tensor, pixels: int) -> tf.Tensor:
    """A batch (N, H, W, C) moved by ``pixels`` down-right (negative: up-left), the uncovered edge reflected."""
    height, width, pad = images.shape[1], images.shape[2], abs(pixels)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    start = pad - pixels  # 0 keeps the top-left of the padding (content moves down-right), 2 * pad the other way
    return padded[:, start : start + height, start : start + width]


def predict_test(
    model: keras.Model, test_ds: tf.data.Dataset, tta_flip: bool, tta_shift: int = 0
) -> tuple[np.ndarray, float]:
    """Test-split probabilities and the seconds taken. Test-time augmentation: ``tta_flip`` averages
    each view with its left-right mirror (a mask predicted from the mirror is mirrored back);
    ``tta_shift`` (airbench94's multi-crop) gives half the weight to the images as they are and a
    quarter each to them shifted by that many pixels down-right and up-left (:func:`shifted`)."""
    start = time.perf_counter()

    def view_probs(view: Callable[[tf.Tensor], tf.Tensor]) -> np.ndarray:
        probs = model.predict(test_ds.map(lambda x, y: (view(x), y)), verbose=0).astype(np.float32)
        if tta_flip:
            mirrored = model.predict(test_ds.map(lambda x, y: (tf.reverse(view(x), [2]), y)), verbose=0)
            if mirrored.ndim == 4:  # per-pixel probabilities (N, H, W, classes): back to the image's side
                mirrored = mirrored[:, :, ::-1]
            probs = (probs + mirrored.astype(np.float32)) / 2
        return probs

    probs = view_probs(lambda x: x)
    if tta_shift:
        down_right = view_probs(lambda x: shifted(x, tta_shift))
        up_left = view_probs(lambda x: shifted(x, -tta_shift))
        probs = probs / 2 + (down_right + up_left) / 4
    return probs, time.perf_counter() - start


def model_size(model: keras.Model) -> dict[str, int]:
    return {
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "flops": model_flops(model),
    }


def write_model(target: Path, model: keras.Model, outputs: dict[str, np.ndarray], summary: dict, card: str) -> None:
    """The model, its test outputs, summary.json and README.md card: one folder, written atomically."""
    # Shared uncompiled: the same layers and weights without the optimizer's state (a third of the file
    # for Adam) or a loss (the project's own would make plain `keras.models.load_model` fail).
    model = keras.Model(model.inputs, model.outputs, name=model.name)
    with atomic_path(target, is_dir=True) as tmp:
        model.save(tmp / "model.keras")
        for file, array in outputs.items():
            save_npy(tmp / file, array)
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "README.md", card)


def model_card(run: Run, meta: dict, summary: dict, y_test: np.ndarray, outputs: dict) -> str:
    """A short Markdown card that travels with the shared model: what it is, the data it saw, how it scored."""
    if "test_probs.npy" in outputs:
        score = f"test accuracy {float((outputs['test_probs.npy'].argmax(axis=1) == y_test).mean()):.4f}"
    else:
        score = f"test pixel accuracy {float((outputs['test_masks.npy'] == y_test).mean()):.4f}"
    caveat = (
        "\n**GENERATED SAMPLE DATA**: trained on the project's generated images (profile `embedded`), so it "
        "shows the pipeline works; it is not a model of the real dataset.\n"
        if meta["data"].startswith("generated")
        else ""
    )
    return (
        f"# {run.experiment}\n{caveat}\n"
        f"- study `{run.study}`, model `{run.model}` {run.model_args or ''}: {summary['parameters']:,} parameters, "
        f"{summary['flops'] or 0:,} FLOPs per image\n"
        f"- data: {meta['data']}; prepared set `{run.dataset}` {meta['counts']}; input {meta['image_shape']}, "
        "raw 0..255 pixels (scaling is inside the model)\n"
        f"- classes: {', '.join(map(str, meta['classes']))}\n"
        f"- trained {summary['epochs_run']} of {summary['epochs_requested']} epochs, batch {summary['batch_size']}, "
        f"seed {summary['seed']}; {score}\n\n"
        'Load it with plain Keras, no project code: `keras.models.load_model("model.keras")`.\n'
    )
