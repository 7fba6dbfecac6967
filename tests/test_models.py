"""The studies' architectures: parameter counts from the reports, and the raw-pixel contract."""

import numpy as np
import pytest

from stages.models import MODELS, SEGMENTATION_MODELS, build

# (builder, input shape, classes, total parameters, where the number comes from)
COUNTS = [
    ("objects8_cnn", (32, 32, 3), 8, 598_392),  # seeds/000: 598,392 in the report's summary
    # seeds/001 lists the layers but no summary: the counts follow from them
    ("cifar_gray_baseline", (32, 32, 1), 10, 535_658),
    ("cifar_gray_tuned", (32, 32, 1), 10, 2_267_338),
    # seeds/002 own CNN: 403,882 trainable + BN statistics, + 7 for the standardisation layer
    ("cifar_rgb_cnn", (32, 32, 3), 10, 404_785),
]


@pytest.mark.parametrize(("name", "shape", "classes", "expected"), COUNTS)
def test_parameter_counts_match_the_reports(name, shape, classes, expected):
    assert build(name, shape, classes).count_params() == expected


def test_cifar_rgb_cnn_trainable_parameters():
    model = build("cifar_rgb_cnn", (32, 32, 3), 10)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 403_882  # 896+9248+18496+36928+73856 convs, 262272+1290 dense, 704+256 BN scales


def test_cifar_gray_grid_follows_its_hyperparameters():
    small = build("cifar_gray_grid", (32, 32, 1), 10, units=16, dense_units=256, pool_size=4)
    # conv 16*(2*2*1)+16, dense (8*8*16)*256+256, head 256*10+10
    assert small.count_params() == 80 + 262_400 + 2_570


@pytest.mark.parametrize("name", sorted(set(MODELS) - SEGMENTATION_MODELS))  # U-Nets: tests/test_pets.py
def test_every_model_maps_raw_pixels_to_probabilities(name):
    shape = (32, 32, 1) if name.startswith(("cifar_gray", "gray28")) else (32, 32, 3)
    model = build(name, shape, 5)
    images = np.random.default_rng(0).integers(0, 256, size=(2, *shape)).astype("float32")
    probs = np.asarray(model(images, training=False))
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
