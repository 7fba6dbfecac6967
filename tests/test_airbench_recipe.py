"""airbench94's training pieces (docs/airbench.md): triangle schedule, bias learning-rate scale,
lookahead, alternating flips. Each against what airbench94 does, on tiny inputs."""

import keras
import numpy as np
import pytest

from stages.core import config
from stages.training.callbacks import Lookahead
from stages.training.data import alternating_flip_epochs
from stages.training.recipe import Triangle, make_optimizer


def test_triangle_schedule_rises_to_the_rate_at_23_percent_then_falls_to_7_percent():
    schedule = Triangle(1.5, total_steps=100)
    rates = [float(schedule(step)) for step in (0, 11, 23, 50, 100)]
    np.testing.assert_allclose(rates, [0.3, 1.5 * (0.2 + 0.8 * 11 / 23), 1.5, 1.5 * (1 - 0.93 * 27 / 77), 0.105])


def one_sgd_step(bias_lr_scale: float | None) -> dict[str, np.ndarray]:
    """The change of each weight of a conv -> BN (shift only) -> dense net after one plain SGD step."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(2, 3, name="conv"),
            keras.layers.BatchNormalization(scale=False, name="conv_bn"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="logits"),
        ],
        name="net",
    )
    opt = config.Optimizer(name="sgd", learning_rate=0.1, bias_lr_scale=bias_lr_scale)
    model.compile(make_optimizer(opt, 1, 1), "sparse_categorical_crossentropy")
    before = {w.path: w.numpy().copy() for w in model.trainable_weights}
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 1)).astype(np.float32)
    model.fit(x, np.arange(8) % 3, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return {w.path.split("/", 1)[1]: w.numpy() - before[w.path] for w in model.trainable_weights}


def test_bias_lr_scale_moves_only_the_batchnorm_shifts_faster():
    plain, scaled = one_sgd_step(None), one_sgd_step(64.0)
    assert np.abs(plain["conv_bn/beta"]).max() > 0
    np.testing.assert_allclose(scaled["conv_bn/beta"], 64 * plain["conv_bn/beta"], rtol=1e-4)
    for path in ("conv/kernel", "conv/bias", "logits/kernel"):
        np.testing.assert_allclose(scaled[path], plain[path], rtol=1e-5, atol=1e-8)


def test_lookahead_pulls_the_weights_into_their_growing_average():
    """Every 2nd step from epoch 1: the first visit starts the average; later ones set average and
    weights to rho * average + (1 - rho) * weights, rho = 0.9 ** 2 * (step / total) ** 3."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    kernel = model.weights[0]
    settings = config.Lookahead(start_epoch=1, every_steps=2, decay=0.9, power=3.0)
    cb = Lookahead(settings, steps_per_epoch=4, total_steps=8)
    cb.set_model(model)
    cb.on_epoch_begin(0)
    kernel.assign(np.ones((2, 1)))
    cb.on_train_batch_end(1)  # epoch 0: before start_epoch, nothing
    assert cb.average is None
    cb.on_epoch_begin(1)
    cb.on_train_batch_end(1)  # step 6: the average starts at the weights
    np.testing.assert_array_equal(cb.average[0].numpy(), np.ones((2, 1)))
    kernel.assign(np.full((2, 1), 3.0))
    cb.on_train_batch_end(2)  # step 7: not a multiple of 2
    np.testing.assert_array_equal(kernel.numpy(), np.full((2, 1), 3.0))
    cb.on_train_batch_end(3)  # step 8
    rho = 0.9**2 * (8 / 8) ** 3
    np.testing.assert_allclose(kernel.numpy(), np.full((2, 1), rho * 1 + (1 - rho) * 3), rtol=1e-6)
    kernel.assign(np.zeros((2, 1)))
    cb.on_epoch_end(1)  # the epoch ends on the average
    np.testing.assert_allclose(kernel.numpy(), cb.average[0].numpy())


@pytest.mark.parametrize("first", [0, 3])
def test_alternating_flips_mirror_each_image_on_every_other_epoch(first):
    """Each image is seen mirrored in exactly one of two consecutive epochs, the same way every two
    epochs; each epoch has its own order. A resumed run (``first`` 3) continues the same alternation."""
    n = 12
    x = np.zeros((n, 2, 3, 1), np.uint8)
    x[:, :, 0, 0] = 255  # left column lit: a mirrored image has it on the right
    x[:, 0, 1, 0] = np.arange(n)  # each image's id, in the middle column (unchanged by a mirror)
    batches = alternating_flip_epochs(x, np.arange(n), batch_size=5, seed=0, first=first, last=first + 3)
    epochs = [[], [], []]
    for step, (images, labels) in enumerate(batches):  # 3 batches per epoch: 5, 5, 2
        epochs[step // 3].append((images.numpy(), labels.numpy()))
    flipped = []
    for epoch in epochs:
        images = np.concatenate([b[0] for b in epoch])
        labels = np.concatenate([b[1] for b in epoch])
        assert sorted(labels) == list(range(n)) and (images[:, 0, 1, 0] == labels).all()
        flipped.append(dict(zip(labels, images[:, 0, 2, 0] == 255, strict=True)))
    assert all(flipped[0][i] != flipped[1][i] and flipped[0][i] == flipped[2][i] for i in range(n))
    assert 0 < sum(flipped[0].values()) < n
    assert [b[1].tolist() for b in epochs[0]] != [b[1].tolist() for b in epochs[2]]  # reshuffled
    if first == 3:  # epoch 3 is odd: what the first run flipped on epoch 1
        from_start = alternating_flip_epochs(x, np.arange(n), batch_size=n, seed=0, first=1, last=2)
        images, labels = next(iter(from_start))
        assert dict(zip(labels.numpy(), images.numpy()[:, 0, 2, 0] == 255, strict=True)) == flipped[0]
