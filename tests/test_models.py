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


def test_airbench_parameter_count_follows_its_layers():
    model = build("airbench", (32, 32, 3), 10)
    # standardize 7; stem 2*2*3*24+24; convs 9*(24*64 + 64*64 + 64*256 + 3*256*256), no biases;
    # six BNs without scale: (beta, mean, variance) x width; head 256*10, no bias
    expected = 7 + 312 + 9 * (24 * 64 + 64 * 64 + 64 * 256 + 3 * 256 * 256) + 3 * 2 * (64 + 256 + 256) + 2560
    assert model.count_params() == expected == 1_973_951


def test_airbench_keeps_float32_probabilities_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build("airbench", (32, 32, 3), 10, widths=(8, 16, 16))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3)).astype("float32")
    probs = model(images, training=False)
    assert probs.dtype == "float32"
    np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, rtol=1e-6)


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
