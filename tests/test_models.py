"""The studies' architectures: parameter counts from the reports, the raw-pixel contract, and float32
probabilities under mixed precision."""

import keras
import numpy as np
import pytest

from stages.models import MODELS, SEGMENTATION_MODELS, STUDIES, build, load_all

load_all()  # every study's builders, for the tables below (a train stage imports only its own)

# Every registered model at a small size (input shape, classes, model_args): a pretrained base at its
# smallest input and without ImageNet weights. tests/test_model_files.py uses it too.
SMALL = {
    "cifar_gray_baseline": ((32, 32, 1), 5, {}),
    "cifar_gray_grid": ((32, 32, 1), 5, {"units": 8, "dense_units": 16}),
    "cifar_gray_tuned": ((32, 32, 1), 5, {}),
    "cifar_rgb_cnn": ((32, 32, 3), 5, {}),
    "cifar_rgb_transfer": ((32, 32, 3), 5, {"input_size": 75, "weights": None}),
    "airbench": ((32, 32, 3), 5, {"widths": (8, 16, 16)}),
    "resnet_fast": ((32, 32, 3), 5, {"widths": (8, 16, 16)}),
    "objects8_cnn": ((32, 32, 3), 5, {"conv_layers": 2, "filters": 8}),
    "gray28_cnn1": ((28, 28, 1), 5, {}),
    "gray28_cnn2": ((28, 28, 1), 5, {}),
    "gray28_cnn3": ((28, 28, 1), 5, {}),
    "gray28_cnn4": ((28, 28, 1), 5, {}),
    "gray28_tuned": ((28, 28, 1), 5, {}),
    "gray28_vgg19": ((28, 28, 1), 5, {"input_size": 32, "weights": None}),
    "gray28_inception_v3": ((28, 28, 1), 5, {"input_size": 75, "weights": None}),
    "gray28_inception_small": ((28, 28, 1), 5, {"width": 0.25}),
    "gray28_resnet50": ((28, 28, 1), 5, {"input_size": 32, "weights": None}),
    "pets_unet": ((32, 32, 3), 3, {"filters": (4, 8), "dropouts": (0.1, 0.1), "up_dropouts": (0.1,)}),
    "natural_resnet50": ((32, 32, 3), 5, {"weights": None}),
    "natural_light": ((32, 32, 3), 5, {"widths": (8, 16)}),
}

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


def test_dirac_init_passes_the_first_channels_through():
    from stages.models.blocks import dirac_init

    conv = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 4)).astype("float32")
    conv(x)
    dirac_init(conv)
    y = np.asarray(conv(x))
    np.testing.assert_allclose(y[..., :4], x, rtol=1e-6)  # filters 0-3: their own input channel
    assert np.abs(y[..., 4:]).sum() > 0  # filters 4-5 keep their random init


def test_whitening_stem_whitens_the_patches_it_sees_and_stays_frozen(tmp_path):
    """airbench(whiten=True) after init_whitening: the stem's first 12 outputs (the eigenvectors) are
    uncorrelated with unit variance on the training images, the other 12 are their negatives; the stem
    is not trained, and the saved model loads with plain Keras."""
    from stages.models.blocks import WHITEN_LAYER
    from stages.training.recipe import adapt_to_training_images

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, size=(300, 32, 32, 1))
    images = np.clip(base + rng.normal(0, 20, size=(300, 32, 32, 3)), 0, 255).astype(np.uint8)  # correlated RGB
    model = build("airbench", (32, 32, 3), 10, widths=(8, 16, 16), whiten=True, dirac=True)
    assert WHITEN_LAYER not in [w.path.split("/")[0] for w in model.trainable_weights]
    adapt_to_training_images(model, images)
    stem = keras.Model(model.inputs, model.get_layer(WHITEN_LAYER).output)
    out = np.asarray(stem(images[:200].astype("float32"), training=False))  # augmentation off
    flat = out.reshape(-1, 24).astype(np.float64)
    covariance = flat[:, :12].T @ flat[:, :12] / (len(flat) - 1)
    np.testing.assert_allclose(np.diag(covariance), 1.0, atol=0.02)  # eigenvalues >> eps
    np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0.0, atol=0.02)
    np.testing.assert_allclose(flat[:, 12:], -flat[:, :12], atol=1e-4)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        loaded.get_layer(WHITEN_LAYER).get_weights()[0], model.get_layer(WHITEN_LAYER).get_weights()[0]
    )


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


def test_every_registered_model_has_a_small_size():
    assert set(SMALL) == set(MODELS)


@pytest.fixture(params=["mixed_bfloat16", "mixed_float16"])
def mixed_policy(request):
    """GPUs of compute capability 8+ train in bfloat16, older ones in float16 (with loss scaling)."""
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param.removeprefix("mixed_")
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_outputs_float32_probabilities_under_mixed_precision(name, mixed_policy):
    shape, classes, args = SMALL[name]
    model = build(name, shape, classes, **args)
    assert any(layer.compute_dtype == mixed_policy for layer in model.layers)  # the policy took effect
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, *shape)).astype("float32")
    probs = model(images, training=True)  # as in fit(): augmentation, dropout and batch statistics active
    assert probs.dtype == "float32"
    labels = rng.integers(0, classes, size=probs.shape[:-1])  # one class per image, or per pixel
    loss = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("study", STUDIES)
def test_a_study_module_uses_only_the_shared_model_code(study):
    """So a train stage depends on its own study's module (plus blocks and registry) and no other."""
    import ast
    from pathlib import Path

    import stages.models.studies

    tree = ast.parse((Path(stages.models.studies.__file__).parent / f"{study}.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    allowed = {"stages.models.blocks", "stages.models.registry"}
    assert {m for m in imported if m and m.startswith("stages")} <= allowed
