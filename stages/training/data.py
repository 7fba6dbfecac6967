"""The prepared arrays as tf.data pipelines: uint8 images in, float32 batches out."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from stages.core.errors import DataError
from stages.core.files import load_npy
from stages.core.paths import PREPARED

if TYPE_CHECKING:
    from stages.training.settings import Run


def load_split(dataset: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    folder = PREPARED / dataset
    return load_npy(folder / f"x_{part}.npy"), load_npy(folder / f"y_{part}.npy")


def read_meta(dataset: str) -> dict:
    """The prepared dataset's meta.json; DataError naming the stage that writes it when missing."""
    path = PREPARED / dataset / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; run `dvc repro prepare@{dataset}` first")
    return json.loads(path.read_text())


def flip_together(image: tf.Tensor, mask: tf.Tensor, seed: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Segmentation augmentation: one random draw flips an image (H, W, C) and its mask (H, W)
    left-right together, so that the labels stay on their pixels."""
    flip = tf.random.uniform([], seed=seed) < 0.5
    return tf.where(flip, tf.reverse(image, [1]), image), tf.where(flip, tf.reverse(mask, [1]), mask)


def zoom_together(
    image: tf.Tensor, mask: tf.Tensor, max_zoom: float, seed: int | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Segmentation augmentation: one random square crop of side ``1 - u * max_zoom`` (u uniform in
    [0, 1)) at a random place, resized back to the full size: the image bilinear (float32), its mask
    nearest-neighbour (no label is blended). Three draws, seeded ``seed + 1`` to ``seed + 3`` so that
    they are not the same sequence."""
    size = tf.shape(mask)[:2]
    seeds = (None, None, None) if seed is None else (seed + 1, seed + 2, seed + 3)
    side = 1.0 - tf.random.uniform([], 0, max_zoom, seed=seeds[0])
    crop = tf.maximum(tf.cast(tf.round(side * tf.cast(size, tf.float32)), tf.int32), 1)
    top = tf.random.uniform([], 0, size[0] - crop[0] + 1, dtype=tf.int32, seed=seeds[1])
    left = tf.random.uniform([], 0, size[1] - crop[1] + 1, dtype=tf.int32, seed=seeds[2])
    image = tf.image.resize(image[top : top + crop[0], left : left + crop[1]], size, method="bilinear")
    mask = tf.image.resize(mask[top : top + crop[0], left : left + crop[1], None], size, method="nearest")
    return image, tf.cast(mask[..., 0], mask.dtype)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    num_classes: int | None = None,
    augment_seed: int | None = None,
    augment_zoom: float = 0.0,
    cached: tf.data.Dataset | None = None,
) -> tf.data.Dataset:
    """uint8 arrays -> batches of float32 0..255 images (the models scale them).

    ``shuffle_seed`` set: a seeded reshuffle every epoch (training). ``num_classes``
    set: one-hot labels, for categorical cross-entropy with label smoothing.
    ``augment_seed`` set (segmentation: ``y`` holds masks): seeded random flips applied
    to each image and its mask together (:func:`flip_together`), and with ``augment_zoom`` a random
    zoom-in as well (:func:`zoom_together`). ``cached``: the (x, y) pairs already sliced and cached, so
    that a resumed run builds its reshuffling pipeline anew on the same cache (:meth:`Splits.train_from`).
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache() if cached is None else cached
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    if augment_seed is not None:
        ds = ds.map(lambda img, mask: flip_together(img, mask, augment_seed), num_parallel_calls=tf.data.AUTOTUNE)
        if augment_zoom:
            zoom = functools.partial(zoom_together, max_zoom=augment_zoom, seed=augment_seed)
            ds = ds.map(zoom, num_parallel_calls=tf.data.AUTOTUNE)
    return as_float_batches(ds.batch(batch_size), num_classes)


#: Iterators that Keras 3's ``fit`` makes of a training dataset each epoch: the epoch's own, and one it makes
#: at the epoch's end and drops at the next epoch's start (keras/src/trainers/epoch_iterator.py). Making an
#: iterator draws the shuffle's next seeds, so epoch ``e`` reads the order of iterator number ``2 * e``.
ITERATORS_PER_EPOCH = 2


def at_epoch(reshuffling: tf.data.Dataset, epoch: int) -> tf.data.Dataset:
    """A new, never iterated, reshuffling pipeline made ready to give ``fit`` epoch ``epoch``'s order first:
    the iterators of the epochs before it are made and dropped. (Making one draws its shuffle seeds; as
    none is read, no image is loaded or shuffled.)"""
    for _ in range(ITERATORS_PER_EPOCH * epoch):
        iter(reshuffling)
    return reshuffling


def as_float_batches(batches: tf.data.Dataset, num_classes: int | None) -> tf.data.Dataset:
    """uint8 batches -> float32 0..255 batches (one-hot labels when ``num_classes``), prefetched."""

    def to_float(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        labels = tf.one_hot(labels, num_classes) if num_classes else labels
        return tf.cast(images, tf.float32), labels

    return batches.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def alternating_flip_epochs(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first: int, last: int, num_classes: int | None = None
) -> tf.data.Dataset:
    """Training batches for epochs ``first`` to ``last`` in one pipeline (airbench94's alternating flips):
    a seeded half of the images is mirrored on even epochs, the other half on odd ones, so every image is
    seen both ways every two epochs, where random flips repeat a side half the time. Each epoch is
    reshuffled with its own seed (``seed`` + epoch). Fit it with ``steps_per_epoch``."""
    even_flips = np.random.default_rng(seed).random(len(x)) < 0.5
    images = tf.data.Dataset.from_tensor_slices((x, y, even_flips)).cache()

    def one_epoch(epoch: int) -> tf.data.Dataset:
        def flip(image: tf.Tensor, label: tf.Tensor, flip_on_even: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            flip_now = tf.logical_not(flip_on_even) if epoch % 2 else flip_on_even
            return tf.cond(flip_now, lambda: tf.reverse(image, [1]), lambda: image), label

        shuffled = images.shuffle(len(x), seed=seed + epoch)
        return shuffled.map(flip, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

    epochs = [one_epoch(epoch) for epoch in range(first, last)]
    return as_float_batches(functools.reduce(tf.data.Dataset.concatenate, epochs), num_classes)


@dataclass
class Splits:
    """One experiment's prepared splits as tf.data pipelines, with what the loop needs to know of them."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset
    x_train: np.ndarray  # for layers that adapt to the data (Normalization)
    y_test: np.ndarray
    batch_size: int
    one_hot: int | None  # the class count when labels are one-hot (categorical cross-entropy)
    segmentation: bool  # labels are masks
    # a new pipeline like ``train`` (on the same cache), for a run that starts past the first epoch
    reshuffled: Callable[[], tf.data.Dataset]
    # alternating flips: the training pipeline for epochs (first, last), which replaces ``train``
    train_epochs: Callable[[int, int], tf.data.Dataset] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.x_train) / self.batch_size)

    def train_from(self, epoch: int, last: int) -> tuple[tf.data.Dataset, int | None]:
        """The batches for ``fit``'s epochs ``epoch`` to ``last``, each in the order that a run started at
        epoch 0 gives it, and the ``steps_per_epoch`` to fit them with (None: one pass of it per epoch)."""
        if self.train_epochs:  # alternating flips: one pipeline that knows each epoch's number
            return self.train_epochs(epoch, last), self.steps_per_epoch
        if not epoch:
            return self.train, None
        return at_epoch(self.reshuffled(), epoch), None


def load_splits(run: Run, meta: dict) -> Splits:
    """train (seeded reshuffles; segmentation flips with ``augment``), val and test pipelines."""
    batch_size, seed = run.batch_size, run.seed
    x_train, y_train = load_split(run.dataset, "train")
    if run.max_train_examples:  # prepared train images are already in seeded random order
        x_train, y_train = x_train[: run.max_train_examples], y_train[: run.max_train_examples]
    x_val, y_val = load_split(run.dataset, "val")
    x_test, y_test = load_split(run.dataset, "test")
    one_hot = len(meta["classes"]) if run.loss == "categorical_crossentropy" else None
    segmentation = meta.get("task") == "segmentation"
    augment_seed = seed if segmentation and run.augment else None
    reshuffled = functools.partial(
        make_dataset,
        x_train,
        y_train,
        batch_size,
        shuffle_seed=seed,
        num_classes=one_hot,
        augment_seed=augment_seed,
        augment_zoom=run.augment_zoom,
        cached=tf.data.Dataset.from_tensor_slices((x_train, y_train)).cache(),
    )
    return Splits(
        train=reshuffled(),
        val=make_dataset(x_val, y_val, batch_size, num_classes=one_hot) if len(x_val) else None,
        test=make_dataset(x_test, y_test, batch_size, num_classes=one_hot),
        x_train=x_train,
        y_test=y_test,
        batch_size=batch_size,
        one_hot=one_hot,
        segmentation=segmentation,
        reshuffled=reshuffled,
        train_epochs=functools.partial(alternating_flip_epochs, x_train, y_train, batch_size, seed, num_classes=one_hot)
        if run.alternating_flip
        else None,
    )
