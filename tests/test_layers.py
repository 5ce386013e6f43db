"""Noise statistics, inference identity, KL term and serialisation of the dropout layers."""

import math

import keras
import numpy as np
import pytest
from scipy import integrate, stats

from utils.layers import (
    ALPHA_MIN,
    InformationDropout,
    dropout_layers,
    noise_spec,
    reseed,
    reseeded,
    seed_states,
    upstream_noise,
)

Z = 5.0  # tolerance in standard errors; every random draw below is seeded


@pytest.mark.parametrize("p", [0.2, 0.4])
def test_gaussian_dropout_noise_is_normal_with_mean_one_and_variance_p_over_1_minus_p(p):
    keras.utils.set_random_seed(0)
    layer = keras.layers.GaussianDropout(p)
    x = np.full((2000, 100), 3.0, dtype="float32")
    noise = np.asarray(layer(x, training=True)).ravel() / 3.0
    n, var = noise.size, p / (1 - p)
    assert abs(noise.mean() - 1.0) < Z * math.sqrt(var / n)
    assert abs(noise.var(ddof=1) - var) < Z * var * math.sqrt(2.0 / (n - 1))
    # normal, not only the right two moments: P(|D - 1| < sigma) = 0.6827
    inside = np.mean(np.abs(noise - 1.0) < math.sqrt(var))
    assert abs(inside - 0.6827) < Z * math.sqrt(0.6827 * 0.3173 / n)
    assert noise_spec(layer)["noise_std"] == pytest.approx(math.sqrt(var))
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def _info_layer(**kwargs):
    layer = InformationDropout(**{"kl_weight": 0.01, **kwargs})
    layer.build([(None, 4), (None, 4)])
    return layer


def test_information_dropout_log_noise_is_normal_with_std_alpha_per_unit():
    keras.utils.set_random_seed(1)
    layer = _info_layer(alpha_max=0.7)
    n = 40000
    f = np.tile(np.array([[0.5, 1.0, 2.0, 7.0]], dtype="float32"), (n, 1))
    logits = np.tile(np.array([[-3.0, -0.5, 0.5, 4.0]], dtype="float32"), (n, 1))
    alpha = ALPHA_MIN + 0.7 / (1.0 + np.exp(-logits[0]))
    np.testing.assert_allclose(np.asarray(layer.alpha(logits[:1]))[0], alpha, rtol=1e-6)
    log_noise = np.log(np.asarray(layer([f, logits], training=True), dtype=np.float64) / f)
    assert np.all(np.abs(log_noise.mean(axis=0)) < Z * alpha / math.sqrt(n))
    assert np.all(np.abs(log_noise.std(axis=0, ddof=1) - alpha) < Z * alpha / math.sqrt(2 * (n - 1)))
    inside = np.mean(np.abs(log_noise) < alpha, axis=0)
    assert np.all(np.abs(inside - 0.6827) < Z * math.sqrt(0.6827 * 0.3173 / n))
    # units are independent of each other
    corr = np.corrcoef(log_noise.T)[np.triu_indices(4, 1)]
    assert np.all(np.abs(corr) < Z / math.sqrt(n))


def test_information_dropout_is_identity_without_loss_in_inference():
    inputs = keras.Input((4,))
    f = keras.layers.Dense(4, activation="softplus")(inputs)
    logits = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, InformationDropout(kl_weight=0.5, name="dropout")([f, logits]))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    f_model = keras.Model(inputs, f)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(f_model(x)))
    assert not model.losses
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(f_model(x)))


def test_training_adds_kl_weight_times_batch_mean_kl_to_model_losses():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((3,))
    f = keras.layers.Dense(5, activation="softplus")(inputs)
    logits = keras.layers.Dense(5)(inputs)
    layer = InformationDropout(kl_weight=0.25, name="dropout")
    model = keras.Model(inputs, layer([f, logits]))
    x = np.random.default_rng(1).normal(size=(32, 3)).astype("float32")
    model(x, training=True)
    assert len(model.losses) == 1
    f_x, logits_x = (np.asarray(t) for t in keras.Model(inputs, [f, logits])(x))
    expected = 0.25 * np.mean(np.asarray(layer.kl_divergence(f_x, layer.alpha(logits_x))))
    assert float(model.losses[0]) == pytest.approx(expected, rel=1e-5)


def _numerical_kl(p, q, lower, upper):
    def integrand(z):
        pz = p.pdf(z)
        return pz * (p.logpdf(z) - q.logpdf(z)) if pz > 0 else 0.0

    return integrate.quad(integrand, lower, upper, limit=400, points=[p.median()])[0]


def test_lognormal_kl_matches_numerical_integration_over_z():
    layer = _info_layer()
    mean = np.array([0.0, -0.4, 0.3, 1.0])
    log_std = np.array([0.0, 0.2, -0.3, 0.5])
    layer.prior_mean.assign(mean)
    layer.prior_log_std.assign(log_std)
    f = np.array([[0.3, 1.0, 2.5, 0.8]], dtype="float32")
    alpha = np.array([[0.05, 0.2, 0.5, 0.7]], dtype="float32")
    expected = 0.0
    for i in range(4):
        posterior = stats.lognorm(s=alpha[0, i], scale=f[0, i])  # log z ~ N(log f, alpha^2)
        prior = stats.lognorm(s=math.exp(log_std[i]), scale=math.exp(mean[i]))
        expected += _numerical_kl(posterior, prior, posterior.ppf(1e-12), posterior.ppf(1 - 1e-12))
    assert float(np.asarray(layer.kl_divergence(f, alpha))[0]) == pytest.approx(expected, rel=1e-4)


def test_loguniform_kl_is_minus_log_alpha_up_to_a_constant_and_zero_at_maximal_noise():
    layer = _info_layer(prior="loguniform", alpha_max=0.7)
    alphas = np.array([0.01, 0.1, 0.4, 0.701])
    kl = np.asarray(layer.kl_divergence(np.ones((4, 1), "float32"), alphas[:, None].astype("float32")))
    # KL(N(m, a^2) || U on a wide log-interval of length L) = log L - h(N(0, a^2)); h by quadrature
    entropies = np.array(
        [
            integrate.quad(
                lambda t, a=a: -stats.norm.pdf(t, 0, a) * stats.norm.logpdf(t, 0, a), -40 * a, 40 * a, points=[0.0]
            )[0]
            for a in alphas
        ]
    )
    np.testing.assert_allclose(kl - kl[0], -(entropies - entropies[0]), rtol=1e-5, atol=1e-5)
    assert kl[-1] == pytest.approx(0.0, abs=1e-6)
    assert np.all(kl >= -1e-6)


def test_information_dropout_is_reproducible_under_keras_seed():
    f = np.ones((8, 4), "float32")
    outs = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        outs.append(np.asarray(_info_layer()([f, f], training=True)))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_get_config_round_trip_and_model_save_load(tmp_path):
    layer = InformationDropout(0.5, 20.0, kl_weight=20.0 / 1000, prior="loguniform", seed=3, name="dropout")
    clone = InformationDropout.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    inputs = keras.Input((4,))
    f = keras.layers.Dense(4, activation="softplus")(inputs)
    model = keras.Model(inputs, InformationDropout(kl_weight=0.1, name="dropout")([f, keras.layers.Dense(4)(inputs)]))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert noise_spec(loaded.get_layer("dropout")) == noise_spec(model.get_layer("dropout"))
    x = np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_noise_spec_values():
    assert noise_spec(keras.layers.GaussianDropout(0.2)) == {"dropout": "gaussian", "p": 0.2, "noise_std": 0.5}
    assert noise_spec(keras.layers.Dropout(0.3)) == {"dropout": "bernoulli", "p": 0.3, "noise_std": None}
    assert noise_spec(_info_layer(alpha_max=0.6, beta=20.0, kl_weight=0.02)) == {
        "dropout": "information",
        "p": None,
        "noise_std": None,
        "alpha_max": 0.6,
        "beta": 20.0,
        "kl_weight": 0.02,
        "prior": "lognormal",
    }
    assert noise_spec(keras.layers.Dense(3)) is None
    assert noise_spec(keras.layers.GaussianNoise(0.1)) == {"dropout": "additive", "p": None, "noise_std": 0.1}
    with pytest.raises(ValueError, match="p < 1"):
        noise_spec(keras.layers.GaussianDropout(1.0))


def test_dropout_layers_finds_stock_and_nested_layers_in_model_order():
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(6), keras.layers.GaussianDropout(0.1, name="g")], name="inner"
    )
    inputs = keras.Input((6,))
    x = keras.layers.Dropout(0.5, name="b")(inputs)
    x = inner(x)
    x = InformationDropout(kl_weight=0.0, name="i")([x, keras.layers.Dense(6)(x)])
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert [layer.name for layer in dropout_layers(model)] == ["b", "g", "i"]
    assert dropout_layers(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prior": "gaussian"}, "prior"),
        ({"alpha_max": 0.0}, "alpha_max"),
        ({"beta": -1.0}, "beta"),
        ({"kl_weight": float("nan")}, "kl_weight"),
    ],
)
def test_information_dropout_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InformationDropout(**{"kl_weight": 0.1, **kwargs})


def test_information_dropout_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same shape"):
        InformationDropout(kl_weight=0.1)([keras.Input((4,)), keras.Input((5,))])


def _noisy_model():
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
            keras.layers.GaussianDropout(0.5),
        ]
    )


def test_seed_states_are_the_random_generators_and_nothing_else():
    model = _noisy_model()
    states = seed_states(model)
    assert len(states) == 2 and all(tuple(s.shape) == (2,) and not s.trainable for s in states)
    assert not {id(s) for s in states} & {id(w) for w in model.weights}
    assert seed_states(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])) == []


def test_reseed_makes_the_noise_a_function_of_the_key():
    model = _noisy_model()
    x = np.random.default_rng(0).random((64, 6, 6, 1), dtype=np.float32)
    reseed(model, (3, 0, 5))
    first = np.asarray(model(x, training=True))
    model(x, training=True)  # the streams move on
    assert not np.array_equal(np.asarray(model(x, training=True)), first)
    reseed(model, (3, 0, 5))
    np.testing.assert_array_equal(np.asarray(model(x, training=True)), first)
    reseed(model, (3, 0, 6))
    assert not np.allclose(np.asarray(model(x, training=True)), first)


def test_reseeded_block_leaves_the_streams_where_they_were():
    model = _noisy_model()
    x = np.ones((8, 6, 6, 1), np.float32)
    reseed(model, (1, 0, 0))
    before = [keras.ops.convert_to_numpy(s.value).copy() for s in seed_states(model)]
    with reseeded(model, (1, 1, 0)):
        inside = np.asarray(model(x, training=True))
    after = [keras.ops.convert_to_numpy(s.value) for s in seed_states(model)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    with reseeded(model, (1, 1, 0)):
        np.testing.assert_array_equal(np.asarray(model(x, training=True)), inside)


def test_upstream_noise_names_the_noise_layers_before_a_layer():
    inputs = keras.Input((4,))
    h = keras.layers.GaussianNoise(0.1, name="input_noise")(inputs)
    h = keras.layers.Dense(3, activation="softplus")(h)
    first = keras.layers.GaussianDropout(0.2, name="first")
    second = keras.layers.GaussianDropout(0.2, name="second")
    h = second(keras.layers.Dense(3, activation="softplus")(first(h)))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    assert [layer.name for layer in dropout_layers(model)] == ["input_noise", "first", "second"]
    assert upstream_noise(model, model.get_layer("input_noise")) == []
    assert upstream_noise(model, model.get_layer("first")) == ["input_noise"]
    assert upstream_noise(model, model.get_layer("second")) == ["input_noise", "first"]
