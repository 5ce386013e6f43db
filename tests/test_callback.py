"""The representation callback on hand-made Keras models (functional and Sequential, one or several
dropout layers): inference-mode representations, noisy surrogates without batch-norm/augmentation in
training mode, information-dropout KL and alphas, file names, resume, and bad models."""

import math

import keras
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from mi_estimators.discrete import discrete_entropy
from utils import run_folder
from utils.callback import RepresentationCallback, layer_entries
from utils.layers import InformationDropout, seed_states


def _data(n, shape, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, n_classes, n)


def _start(model, run_dir, train, test, **kwargs):
    cb = RepresentationCallback(run_dir, train, test, **kwargs)
    cb.set_model(model)
    cb.on_train_begin()
    return cb


def _bn_flip_model(p):
    """Flip augmentation + conv + batch norm (with non-trivial moving statistics) before a Gaussian dropout."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.Conv2D(3, 3)(x)
    bn = keras.layers.BatchNormalization()
    x = keras.layers.Flatten()(bn(x))
    x = keras.layers.Dense(5, activation="softplus")(x)
    x = keras.layers.GaussianDropout(p, name="gd")(x)
    outputs = keras.layers.Dense(
        3, activation="softmax", name="head", kernel_initializer=keras.initializers.RandomNormal(stddev=3.0)
    )(x)
    model = keras.Model(inputs, outputs)
    bn.moving_mean.assign(np.array([0.3, -0.2, 0.1], np.float32))
    bn.moving_variance.assign(np.array([0.5, 2.0, 0.2], np.float32))
    return model, bn


def test_noisy_surrogate_uses_the_layer_noise_but_inference_batchnorm_and_no_augmentation(tmp_path):
    p = 0.5
    model, bn = _bn_flip_model(p)
    train, test = _data(64, (6, 6, 1)), _data(3000, (6, 6, 1), seed=1)
    moving = bn.moving_mean.numpy().copy()
    _start(model, tmp_path, train, test, batch_size=512)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving)

    clean_f = keras.Model(model.inputs, model.get_layer("gd").input).predict(test[0], verbose=0)
    saved = run_folder.load_npy(run_folder.representation_path(tmp_path, "test", 0))
    np.testing.assert_allclose(saved, clean_f, rtol=1e-6, atol=1e-6)

    # Expected noisy cross-entropy by Monte Carlo over Z = f * (1 + sigma * e) through the head.
    w, b = (v.numpy().astype(np.float64) for v in model.get_layer("head").weights)
    sigma, y = math.sqrt(p / (1 - p)), test[1]
    rng = np.random.default_rng(5)
    draws = np.stack(
        [
            -log_softmax((clean_f * (1 + sigma * rng.standard_normal(clean_f.shape))) @ w + b, axis=1)[
                np.arange(len(y)), y
            ]
            for _ in range(40)
        ]
    )
    expected, spread = draws.mean(), draws.std()
    se = spread / math.sqrt(len(y))  # of the callback's single-draw mean; the MC mean is 40x more precise
    observed = discrete_entropy(y) - run_folder.load_ip(tmp_path, "test", "mi_zy")[0]
    assert abs(observed - expected) < 5 * se
    clean_ce = -log_softmax(clean_f @ w + b, axis=1)[np.arange(len(y)), y].mean()
    assert abs(clean_ce - expected) > 20 * se, "the test needs noise that visibly changes the cross-entropy"
    assert run_folder.load_ip(tmp_path, "test", "mean_kl") == {0: 0.0}


def test_noisy_passes_depend_on_the_epoch_only_and_leave_the_training_noise_alone(tmp_path):
    model, _ = _bn_flip_model(0.5)
    train, test = _data(64, (6, 6, 1)), _data(500, (6, 6, 1), seed=1)
    cb = _start(model, tmp_path, train, test, batch_size=128)
    states = [keras.ops.convert_to_numpy(s.value).copy() for s in seed_states(model)]
    cb.record(1, save=False)
    for state, before in zip(seed_states(model), states):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(state.value), before)
    first = run_folder.load_ip(tmp_path, "test", "mi_zy")[1]
    model.get_layer("gd")(np.ones((8, 5), np.float32), training=True)  # the training stream moves on ...
    cb.record(1, save=False)  # ... the callback's noise of epoch 1 does not
    assert run_folder.load_ip(tmp_path, "test", "mi_zy")[1] == first
    cb.record(2, save=False)
    assert run_folder.load_ip(tmp_path, "test", "mi_zy")[2] != first


def test_information_dropout_alphas_and_kl(tmp_path):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((4,))
    f = keras.layers.Dense(6, activation="softplus")(inputs)
    logits = keras.layers.Dense(6)(inputs)
    layer = InformationDropout(alpha_max=0.5, beta=3.0, kl_weight=0.01, name="info")
    z = layer([f, logits])
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(z))
    train, test = _data(200, (4,)), _data(100, (4,), seed=1)
    _start(model, tmp_path, train, test)

    f_clean, logits_clean = keras.Model(model.inputs, [f, logits]).predict(train[0], verbose=0)
    saved_f = run_folder.load_npy(run_folder.representation_path(tmp_path, "train", 0))
    saved_alpha = run_folder.load_npy(run_folder.alpha_path(tmp_path, "train", 0))
    np.testing.assert_allclose(saved_f, f_clean, rtol=1e-6)
    np.testing.assert_allclose(saved_alpha, 0.001 + 0.5 / (1 + np.exp(-logits_clean)), rtol=1e-5)
    assert saved_alpha.dtype == np.float32 and saved_alpha.shape == (200, 6)
    kl = keras.ops.convert_to_numpy(layer.kl_divergence(saved_f, saved_alpha))
    assert kl.mean() > 0
    assert run_folder.load_ip(tmp_path, "train", "mean_kl")[0] == pytest.approx(float(kl.mean()), rel=1e-5)
    (entry,) = layer_entries(model)
    assert entry == {
        "name": "info",
        "dim": 6,
        "shape": [6],
        "dropout": "information",
        "p": None,
        "noise_std": None,
        "alpha_max": 0.5,
        "beta": 3.0,
        "kl_weight": 0.01,
        "prior": "lognormal",
    }


def test_several_layers_downstream_layer_saved_noise_free_with_layer_names(tmp_path):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((5,))
    h = keras.layers.GaussianDropout(0.5, name="g1")(keras.layers.Dense(8, activation="softplus")(inputs))
    f = keras.layers.Dense(4, activation="softplus")(h)
    z = InformationDropout(beta=1.0, kl_weight=0.01, name="info")([f, keras.layers.Dense(4)(h)])
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(z))
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    train, test = _data(60, (5,), n_classes=2), _data(30, (5,), n_classes=2, seed=1)
    cb = RepresentationCallback(tmp_path, train, test, save_every=2, metrics_subset=20)
    model.fit(*train, epochs=3, batch_size=20, callbacks=[cb], verbose=0)

    names = {p.name for p in (tmp_path / run_folder.REPR_DIR).iterdir()}
    for epoch in (0, 2, 3):
        assert {
            f"no_noise_test_representations_g1_{epoch}.npy",
            f"no_noise_test_representations_info_{epoch}.npy",
            f"alpha_train_info_{epoch}.npy",
        } <= names
    assert not any(n.startswith("no_noise_train_representations_1") or "_1.npy" in n for n in names)
    clean = keras.Model(model.inputs, f).predict(test[0], verbose=0)  # weights after the last epoch
    np.testing.assert_allclose(
        run_folder.load_npy(run_folder.representation_path(tmp_path, "test", 3, "info")), clean, rtol=1e-6
    )
    assert run_folder.load_ip(tmp_path, "train", "mean_kl", "g1") == {e: 0.0 for e in range(4)}
    assert sorted(run_folder.load_ip(tmp_path, "test", "mean_kl", "info")) == [0, 1, 2, 3]
    assert sorted(run_folder.load_ip(tmp_path, "train", "mi_zy")) == [0, 1, 2, 3]
    assert sorted(cb.seconds) == [0, 1, 2, 3]


def test_sequential_model_and_resume_merges(tmp_path):
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((3, 3, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softplus"),
            keras.layers.Dropout(0.3, name="bern"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    train, test = _data(40, (3, 3, 1), n_classes=2), _data(20, (3, 3, 1), n_classes=2, seed=1)
    cb = _start(model, tmp_path, train, test)
    clean = keras.Model(model.inputs, model.get_layer("bern").input).predict(train[0], verbose=0)
    np.testing.assert_allclose(
        run_folder.load_npy(run_folder.representation_path(tmp_path, "train", 0)), clean, rtol=1e-6
    )
    np.testing.assert_array_equal(run_folder.load_npy(run_folder.inputs_path(tmp_path, "train")), train[0])
    np.testing.assert_array_equal(run_folder.load_npy(run_folder.labels_path(tmp_path, "test")), test[1])
    cb.record(1, save=False)

    first = run_folder.representation_path(tmp_path, "train", 0).stat().st_mtime_ns
    again = _start(model, tmp_path, train, test)  # epoch 0 is complete: not redone
    assert run_folder.representation_path(tmp_path, "train", 0).stat().st_mtime_ns == first
    again.record(2, save=True)
    assert sorted(run_folder.load_ip(tmp_path, "test", "mi_zy")) == [0, 1, 2]
    assert not run_folder.representation_path(tmp_path, "train", 1).exists()


def test_recorded_noise_std_is_the_layer_noise():
    p = 0.2
    model = keras.Sequential(
        [keras.Input((1000,)), keras.layers.GaussianDropout(p, name="g"), keras.layers.Dense(2, activation="softmax")]
    )
    (entry,) = layer_entries(model)
    assert entry["dropout"] == "gaussian" and entry["p"] == p and entry["dim"] == 1000
    z = keras.ops.convert_to_numpy(model.get_layer("g")(np.ones((200, 1000), np.float32), training=True))
    n = z.size
    assert abs(z.mean() - 1.0) < 5 * entry["noise_std"] / math.sqrt(n)
    assert abs(z.std() - entry["noise_std"]) < 5 * entry["noise_std"] / math.sqrt(2 * n)


def test_cross_entropy_from_logits_matches_probabilities(tmp_path):
    train = _data(10, (2,))
    logits = np.random.default_rng(0).normal(size=(10, 3)) * 4
    kwargs = dict(train=train, test=train)
    ce_logits = RepresentationCallback(tmp_path, from_logits=True, **kwargs)._cross_entropy(logits, train[1])
    ce_probs = RepresentationCallback(tmp_path, **kwargs)._cross_entropy(softmax(logits, axis=1), train[1])
    np.testing.assert_allclose(ce_logits, ce_probs, rtol=1e-6)


def test_unusable_models_and_arguments_are_refused(tmp_path):
    data = _data(10, (4,))
    no_dropout = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    inner = keras.Sequential([keras.Input((4,)), keras.layers.GaussianDropout(0.1)], name="inner")
    inputs = keras.Input((4,))
    nested = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inner(inputs)))
    z = keras.layers.GaussianDropout(0.1)(inputs)
    two_outputs = keras.Model(inputs, [keras.layers.Dense(2)(z), keras.layers.Dense(2)(z)])
    for model, message in (
        (no_dropout, r"no noise layer.*its layers: dense_\d+ \(Dense\)"),
        (nested, "nested"),
        (two_outputs, "one output"),
    ):
        with pytest.raises(ValueError, match=message):
            _start(model, tmp_path, data, data)
    for kwargs, message in (
        ({"save_every": 0}, "save_every"),
        ({"metrics_subset": 0}, "metrics_subset"),
        ({"batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(ValueError, match=message):
            RepresentationCallback(tmp_path, data, data, **kwargs)
    with pytest.raises(ValueError, match="equal length"):
        RepresentationCallback(tmp_path, (data[0], data[1][:5]), data)
    with pytest.raises(ValueError, match="integer"):
        RepresentationCallback(tmp_path, (data[0], data[1] + 0.5), data)
