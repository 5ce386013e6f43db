"""Shapes, dropout placement, augmentation and option checks of the paper's networks."""

import math

import keras
import numpy as np
import pytest

from mi_estimators.checks import DROPOUT_KINDS
from utils.layers import InformationDropout, dropout_layers, noise_spec
from utils.models import ALPHA_LOGITS_NAME, build_model
from utils.nets import NETS


def _build(net, dropout="gaussian", shape=(28, 28, 1), **kwargs):
    return build_model(
        net, **{"dropout": dropout, "p": 0.2, "input_shape": shape, "n_classes": 10, "n_train": 1000, **kwargs}
    )


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *shape)).astype("float32")


@pytest.mark.parametrize(
    "net, shape, dim",
    [
        ("fc", (28, 28, 1), 32),
        ("fc", (8, 8, 1), 32),
        ("lenet", (28, 28, 1), 84),
        ("lenet", (8, 8, 1), 84),
        ("convnet", (32, 32, 3), 128),
        ("allcnn", (32, 32, 3), 16 * 16 * 96),
    ],
)
@pytest.mark.parametrize("dropout", DROPOUT_KINDS)
def test_each_net_and_dropout_kind_builds_with_one_named_dropout_layer(net, shape, dim, dropout):
    model = _build(net, dropout, shape)
    probs = np.asarray(model(_images(shape), training=False))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    layers = dropout_layers(model)
    assert [layer.name for layer in layers] == ["dropout"]
    assert math.prod(layers[0].output.shape[1:]) == dim
    assert noise_spec(layers[0])["dropout"] == dropout
    assert np.asarray(model(_images(shape), training=True)).shape == (2, 10)


def test_gaussian_dropout_layer_uses_the_requested_rate():
    spec = noise_spec(_build("fc", p=0.4).get_layer("dropout"))
    assert spec == {"dropout": "gaussian", "p": 0.4, "noise_std": pytest.approx(math.sqrt(0.4 / 0.6))}


@pytest.mark.parametrize("dropout", DROPOUT_KINDS)
def test_resnet18_has_a_128_unit_bottleneck_before_the_classifier(dropout):
    model = _build("resnet18", dropout, (32, 32, 3))
    assert np.asarray(model(_images((32, 32, 3)), training=False)).shape == (2, 10)
    layer = model.get_layer("dropout")
    assert layer.output.shape[1:] == (128,)
    assert model.get_layer("predictions").input.shape[1:] == (128,)
    # the paper's bottleneck is linear; information dropout needs f > 0 and gets a softplus
    activations = [layer for layer in model.layers if layer.name == "dropout_input_activation"]
    assert len(activations) == (1 if dropout == "information" else 0)


def test_information_dropout_gets_a_parallel_alpha_layer_and_kl_weight_beta_over_n_train():
    model = _build("lenet", "information", beta=20.0, n_train=500, alpha_max=0.5)
    layer = model.get_layer("dropout")
    assert isinstance(layer, InformationDropout)
    f_shape, logit_shape = (tuple(t.shape) for t in layer.input)
    assert f_shape == logit_shape == (None, 84)
    assert model.get_layer(ALPHA_LOGITS_NAME).output.shape == (None, 84)
    assert (layer.beta, layer.kl_weight, layer.alpha_max, layer.prior) == (20.0, 20.0 / 500, 0.5, "lognormal")
    model(_images((28, 28, 1)), training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) > 0


def test_filters_scale_allcnn_widths():
    layer = _build("allcnn", "information", (32, 32, 3), filters=0.25).get_layer("dropout")
    assert layer.output.shape[1:] == (16, 16, 24)


def test_cifar_augmentation_acts_only_in_training_and_normalisation_always():
    keras.utils.set_random_seed(0)
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    model = _build("convnet", shape=(32, 32, 3), normalization=(mean, std))
    x = _images((32, 32, 3), n=8)
    augmented = keras.Model(model.input, model.get_layer("random_flip").output)
    np.testing.assert_array_equal(np.asarray(augmented(x, training=False)), x)
    shifted = np.asarray(augmented(x, training=True))
    assert shifted.shape == x.shape and not np.allclose(shifted, x)
    assert np.all(np.isin(shifted, np.append(x.ravel(), 0.0)))  # pixels moved or zero fill, never blended
    normalised = keras.Model(model.input, model.get_layer("normalization").output)(x, training=False)
    np.testing.assert_allclose(np.asarray(normalised), (x - mean) / std, rtol=1e-5, atol=1e-5)


def test_mnist_nets_have_no_augmentation():
    names = {layer.name for layer in _build("lenet").layers}
    assert not names & {"random_crop", "random_flip", "normalization"}


def test_same_seed_gives_same_weights_and_noise():
    outs = []
    for _ in range(2):
        keras.utils.set_random_seed(5)
        model = _build("fc", "information", (8, 8, 1))
        outs.append(np.asarray(model(_images((8, 8, 1), n=4), training=True)))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_nets_list_dataset_family_and_dropout_kinds():
    assert {net: spec.family for net, spec in NETS.items()} == {
        "fc": "mnist",
        "lenet": "mnist",
        "resnet18": "cifar10",
        "convnet": "cifar10",
        "allcnn": "cifar10",
    }
    assert NETS["allcnn"].default_dropout == "information"
    assert all(spec.default_dropout in spec.dropouts for spec in NETS.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"net": "vgg"}, "unknown net 'vgg'"),
        ({"dropout": "alpha"}, "cannot take dropout 'alpha'"),
        ({"p": 0.0}, r"p must be in \(0, 1\)"),
        ({"p": 1.0}, r"p must be in \(0, 1\)"),
        ({"p": None}, r"p must be in \(0, 1\)"),
        ({"filters": 0.25}, "filters applies to the CIFAR-10"),
        ({"net": "allcnn", "filters": 0.0}, "filters must be"),
        ({"input_shape": (784,)}, "input_shape"),
        ({"n_classes": 1}, "n_classes"),
        ({"n_train": 0}, "n_train"),
        ({"beta": -1.0}, "beta"),
        ({"normalization": ([0.5, 0.5], [0.2, 0.2])}, "normalization needs 1"),
        ({"normalization": ([0.5], [0.0])}, "stds"),
    ],
)
def test_bad_options_raise_one_line_value_errors(kwargs, match):
    args = {
        "net": "fc",
        "dropout": "gaussian",
        "p": 0.2,
        "input_shape": (28, 28, 1),
        "n_classes": 10,
        "n_train": 100,
        **kwargs,
    }
    if args["net"] == "allcnn":
        args["input_shape"] = (32, 32, 3)
    with pytest.raises(ValueError, match=match) as err:
        build_model(args.pop("net"), **args)
    assert "\n" not in str(err.value)


def test_information_dropout_ignores_p():
    assert isinstance(_build("fc", "information", p=None).get_layer("dropout"), InformationDropout)
