"""The project's own loss (segmentation), registered so a compiled checkpoint loads back."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="stages")
class SparseCrossentropyDice(keras.losses.Loss):
    """Segmentation loss: pixel cross-entropy + ``dice_weight`` x (1 - soft Dice, mean over classes)."""

    def __init__(self, dice_weight: float = 1.0, name: str = "sparse_crossentropy_dice", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        labels = tf.cast(y_true, tf.int32)
        ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, y_pred), axis=[1, 2])
        onehot = tf.one_hot(labels, tf.shape(y_pred)[-1], dtype=y_pred.dtype)
        inter = tf.reduce_sum(onehot * y_pred, axis=[1, 2])
        total = tf.reduce_sum(onehot + y_pred, axis=[1, 2])
        dice = tf.reduce_mean((2 * inter + 1) / (total + 1), axis=-1)
        return ce + self.dice_weight * (1 - dice)

    def get_config(self) -> dict:
        return {**super().get_config(), "dice_weight": self.dice_weight}


def pixel_log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy over all pixels of masks ``y`` (N, H, W) under ``probs`` (N, H, W, K)."""
    picked = np.take_along_axis(probs, y[..., None].astype(np.int64), axis=-1)
    return float(-np.log(np.clip(picked, 1e-7, 1)).mean())
