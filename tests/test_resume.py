"""Resuming is exact (issue #34): what a resumed run's data order rests on."""

from __future__ import annotations

import numpy as np


def test_a_pipeline_made_ready_at_an_epoch_gives_it_in_fits_order():
    """What a resumed run's data order rests on (``Splits.train_from``): Keras' fit reads epoch ``e`` in the
    order of the reshuffling pipeline's iterator ``2 * e`` (it makes two a epoch), and a new pipeline that
    :func:`at_epoch` made ready for epoch ``e`` gives that order first."""
    import keras

    from stages.training.data import at_epoch, make_dataset

    keras.utils.set_random_seed(0)
    x, y = np.zeros((12, 1, 1, 1), np.uint8), np.arange(12)
    seen: list[list[int]] = []

    class Recorder(keras.Model):
        def train_step(self, data: tuple) -> dict:
            seen.append(data[1].numpy().tolist())  # the epoch's one batch: its labels are the image order
            return {"loss": 0.0}

    inputs = keras.Input((1, 1, 1))
    model = Recorder(inputs, keras.layers.Flatten()(inputs))
    model.compile(run_eagerly=True)
    model.fit(make_dataset(x, y, 12, shuffle_seed=0), epochs=3, verbose=0, shuffle=False)
    assert len({tuple(order) for order in seen}) == 3, "each epoch reshuffled"
    for epoch, order in enumerate(seen):
        _, labels = next(iter(at_epoch(make_dataset(x, y, 12, shuffle_seed=0), epoch)))
        assert labels.numpy().tolist() == order, f"epoch {epoch}"
