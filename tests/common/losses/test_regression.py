"""Regression losses against brute-force NumPy, Keras' Huber, SciPy; gradients; the delta trap."""

from common import losses

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, optimize, special, stats

from ._checks import assert_finite_value_and_gradient, assert_gradient_matches_finite_differences

RNG = np.random.default_rng(20)


def _rows(function, y_true, y_pred):
    """Applies a per-row NumPy loss to every row of `[B, D]` arrays, one row at a time."""
    return np.array([function(y_true[row], y_pred[row]) for row in range(len(y_true))])


def _np_weighted_mse(y_true, y_pred):
    total = 0.0
    for target, prediction in zip(y_true, y_pred):
        error = target - prediction
        total += error**2 * (1 + error**2)
    return total / len(y_true)


def _np_mse_plus_relative_error(y_true, y_pred, weight, eps):
    squared, relative = 0.0, 0.0
    for target, prediction in zip(y_true, y_pred):
        squared += (target - prediction) ** 2
        relative += abs(target - prediction) / (abs(target) + eps)
    return squared / len(y_true) + weight * relative / len(y_true)


def _np_rho(u, delta):
    return 0.5 * u * u if abs(u) <= delta else delta * abs(u) - 0.5 * delta * delta


def _np_huber(y_true, y_pred, delta):
    return np.mean([_np_rho(p - t, delta) for t, p in zip(y_true, y_pred)])


def _quad_log_normalizer(delta):
    """log ∫ exp(−ρ_δ(u)) du by numerical integration, independent of the closed form."""
    def density(u):
        return np.exp(-_np_rho(u, delta))

    half = integrate.quad(density, 0, delta, epsabs=0, epsrel=1e-12)[0]
    half += integrate.quad(density, delta, np.inf, epsabs=0, epsrel=1e-12)[0]
    return np.log(2 * half)


def _np_huber_nll(y_true, y_pred, delta, scale):
    log_z = _quad_log_normalizer(delta)
    return np.mean(
        [_np_rho((p - t) / scale, delta) + np.log(scale) + log_z for t, p in zip(y_true, y_pred)]
    )


def _random(shape):
    return RNG.normal(size=shape) * 2.0


@pytest.mark.parametrize("shape", [(7, 3), (1, 1), (4, 2, 5)])
def test_weighted_mse_and_relative_error_match_brute_force(shape):
    y_true, y_pred = _random(shape), _random(shape)
    y_true.flat[0] = y_pred.flat[0]  # an exact prediction
    flat_true, flat_pred = y_true.reshape(-1, shape[-1]), y_pred.reshape(-1, shape[-1])
    expected = _rows(_np_weighted_mse, flat_true, flat_pred).reshape(shape[:-1])
    np.testing.assert_allclose(losses.weighted_mse(y_true, y_pred), expected, rtol=1e-12)
    expected = _rows(
        lambda t, p: _np_mse_plus_relative_error(t, p, 0.3, 1e-7), flat_true, flat_pred
    ).reshape(shape[:-1])
    np.testing.assert_allclose(
        losses.mse_plus_relative_error(y_true, y_pred, weight=0.3), expected, rtol=1e-12
    )


@pytest.mark.parametrize("delta", [0.1, 1.0, 3.0])
def test_huber_matches_keras_and_brute_force(delta):
    y_true = _random((9, 4)).astype("float32")
    y_pred = _random((9, 4)).astype("float32")
    ours = losses.huber(y_true, y_pred, delta).numpy()
    np.testing.assert_allclose(
        ours, tf.keras.losses.huber(y_true, y_pred, delta).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        ours, _rows(lambda t, p: _np_huber(t, p, delta), y_true, y_pred), rtol=1e-5
    )
    keras_class = tf.keras.losses.Huber(delta)(y_true, y_pred).numpy()
    np.testing.assert_allclose(losses.Huber(delta)(y_true, y_pred).numpy(), keras_class, rtol=1e-6)


def test_huber_rejects_non_positive_delta_also_as_a_tensor():
    ones = np.ones((2, 1), "float32")
    for delta in (0.0, -1.0, tf.constant(-0.5)):
        with pytest.raises(ValueError, match="delta must be > 0"):
            losses.huber(ones, ones, delta)
    # A delta whose value is unknown when traced is checked when the graph runs.
    check = tf.function(lambda delta: losses.huber(ones, ones, delta))
    with pytest.raises(tf.errors.InvalidArgumentError, match="delta must be > 0"):
        check(tf.constant(-2.0))
    with pytest.raises(ValueError, match="delta must be > 0"):
        losses.Huber(delta=0.0)


@pytest.mark.parametrize("delta", [1e-3, 0.3, 0.999, 1.0, 1.001, 2.5, 10.0])
def test_huber_log_normalizer_matches_numerical_integration(delta):
    closed_form = losses.huber_log_normalizer(tf.constant(delta, tf.float64)).numpy()
    np.testing.assert_allclose(closed_form, _quad_log_normalizer(delta), rtol=1e-10)


def test_huber_log_normalizer_stays_finite_for_extreme_delta():
    deltas = tf.constant([1e-30, 1e-20, 1e-8, 50.0, 1e4], tf.float32)
    value, gradient = assert_finite_value_and_gradient(losses.huber_log_normalizer, deltas)
    # Z → 2/δ as δ → 0 and → √(2π) as δ → ∞.
    np.testing.assert_allclose(value[1].numpy(), np.log(2e20), rtol=1e-6)
    np.testing.assert_allclose(value[-1].numpy(), 0.5 * np.log(2 * np.pi), rtol=1e-6)
    assert np.all(gradient.numpy() <= 0), "Z decreases with delta"


@pytest.mark.parametrize("delta,scale", [(1.0, 1.0), (0.4, 2.0), (3.0, 0.5)])
def test_huber_nll_matches_brute_force(delta, scale):
    y_true, y_pred = _random((6, 3)), _random((6, 3))
    expected = _rows(lambda t, p: _np_huber_nll(t, p, delta, scale), y_true, y_pred)
    # The quadrature in the reference is good to ~1e-9 here, the closed form to rounding.
    np.testing.assert_allclose(losses.huber_nll(y_true, y_pred, delta, scale), expected, rtol=1e-7)
    np.testing.assert_allclose(
        losses.HuberNLL(delta, scale, reduction="none")(y_true, y_pred), expected, rtol=1e-7
    )


def test_gradients_match_finite_differences():
    y_true = _random((5, 3))
    y_pred = _random((5, 3))
    for function in (
        lambda p: losses.weighted_mse(y_true, p),
        lambda p: losses.mse_plus_relative_error(y_true, p, 0.5),
        lambda p: losses.huber(y_true, p, 0.7),
        lambda p: losses.huber_nll(y_true, p, 0.7, 1.3),
    ):
        assert_gradient_matches_finite_differences(function, y_pred)
    # The NLL with respect to its parameters, on both sides of δ = 1.
    for delta in (0.3, 1.7):
        assert_gradient_matches_finite_differences(
            lambda parameters: losses.huber_nll(y_true, y_pred, parameters[0], parameters[1]),
            [delta, 1.3],
        )


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    y_true = tf.constant(_random((4, 3)), dtype)
    y_pred = tf.constant(_random((4, 3)), dtype)
    for function in (
        losses.weighted_mse,
        losses.mse_plus_relative_error,
        losses.huber,
        lambda t, p: losses.huber_nll(t, p, 1.0, 1.0),
    ):
        result = function(y_true, y_pred)
        assert result.dtype == tf.float32
        reference = function(tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32))
        np.testing.assert_allclose(result, reference, rtol=1e-6)
        assert_finite_value_and_gradient(lambda p: function(y_true, p), y_pred.numpy(), dtype)


def test_large_errors_stay_finite():
    y_true = np.array([[1e4, -1e4], [0.0, 3.0]], "float32")
    for function in (
        losses.huber,
        lambda t, p: losses.huber_nll(t, p, 0.5, 0.1),
        losses.mse_plus_relative_error,
    ):
        assert_finite_value_and_gradient(lambda p: function(y_true, p), -y_true)


def test_batch_against_batch_by_one_is_aligned_not_broadcast():
    y_true = np.array([1.0, 2.0, 3.0], "float32")
    y_pred = y_true[:, None]
    # The common snippet broadcasts [B] against [B, 1] to [B, B]: exact predictions cost 1.33.
    snippet = tf.reduce_mean(tf.square(y_true - y_pred)).numpy()
    assert snippet == pytest.approx(4.0 / 3.0)
    for function in (losses.weighted_mse, losses.huber, losses.mse_plus_relative_error):
        np.testing.assert_array_equal(function(y_true, y_pred).numpy(), np.zeros(3))
        np.testing.assert_array_equal(function(y_pred, y_true).numpy(), np.zeros(3))
        assert function(y_true, y_true).shape == (3,)


def test_real_shape_mismatch_names_the_arguments():
    with pytest.raises(
        ValueError, match=r"huber: y_true has shape \(4,\) and y_pred has shape \(4, 3\)"
    ):
        losses.huber(np.zeros(4), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="y_true has shape"):
        losses.weighted_mse(np.zeros((4, 2)), np.zeros((4, 3)))
    # Dimensions unknown while tracing are compared when the graph runs.
    traced = tf.function(
        losses.weighted_mse,
        input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([None, 2])],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="same shape"):
        traced(np.zeros((4, 2), "float32"), np.zeros((3, 2), "float32"))


def test_integer_labels_are_accepted():
    y_true = np.array([[1, 2], [3, 4]], "int32")
    y_pred = y_true.astype("float32") + 0.5
    np.testing.assert_allclose(losses.huber(y_true, y_pred), [0.125, 0.125])
    np.testing.assert_allclose(losses.weighted_mse(y_true, y_pred), [0.3125, 0.3125])


# --- Learning delta: the trap, and AdaptiveHuber against SciPy's optimum -------------------


def _log_z(delta):
    return np.log(
        np.sqrt(2 * np.pi) * special.erf(delta / np.sqrt(2)) + 2 * np.exp(-delta**2 / 2) / delta
    )


def _vector_rho(u, delta):
    magnitude = np.abs(u)
    return np.where(magnitude <= delta, 0.5 * u * u, delta * magnitude - 0.5 * delta**2)


def _sample_optimum(noise, learn_scale):
    """The NLL's minimiser on this sample, by SciPy (Nelder–Mead over log δ, log scale)."""
    def nll(log_parameters):
        delta = np.exp(log_parameters[0])
        log_scale = log_parameters[1] if learn_scale else 0.0
        return np.mean(_vector_rho(noise / np.exp(log_scale), delta)) + log_scale + _log_z(delta)

    result = optimize.minimize(
        nll, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-12}
    )
    return np.exp(result.x[0]), np.exp(result.x[1]) if learn_scale else 1.0


def _population_delta_at_unit_scale(density):
    """argmin over δ of E[ρ_δ(e)] + log Z(δ) for a symmetric noise density, by quadrature."""
    def expected_nll(log_delta):
        delta = np.exp(log_delta)
        integrand = lambda e: 2 * density(e) * _vector_rho(e, delta)  # noqa: E731
        inner = integrate.quad(integrand, 0, delta)[0] + integrate.quad(integrand, delta, np.inf)[0]
        return inner + _log_z(delta)

    return np.exp(optimize.minimize_scalar(expected_nll, bounds=(-3, 3), method="bounded").x)


def test_reference_optima_of_the_huber_likelihood():
    # REFERENCES.md: unit scale, δ ≈ 0.97 for Student-t(3) noise, ≈ 1.08 for Laplace.
    assert _population_delta_at_unit_scale(stats.t(3).pdf) == pytest.approx(0.97, abs=0.005)
    assert _population_delta_at_unit_scale(stats.laplace.pdf) == pytest.approx(1.08, abs=0.01)


def test_trainable_delta_minimising_huber_itself_runs_away():
    """The trap: the Huber loss falls as δ falls, so gradient descent drives δ down without end."""
    noise = tf.constant(RNG.standard_t(3, size=(2000, 1)), tf.float32)
    delta = tf.Variable(1.0)
    optimizer = tf.keras.optimizers.SGD(0.5)
    trajectory = []
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.keras.losses.huber(noise, tf.zeros_like(noise), delta))
        optimizer.apply_gradients([(tape.gradient(loss, delta), delta)])
        trajectory.append(float(delta.numpy()))
    assert np.all(np.diff(trajectory) < 0) and trajectory[-1] < 0.0


def _train_adaptive_huber(noise, initial_delta, learn_scale, steps):
    layer = losses.AdaptiveHuber(initial_delta=initial_delta, learn_scale=learn_scale)
    optimizer = tf.keras.optimizers.Adam(0.05)
    targets = tf.constant(noise[:, None], tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = layer((targets, tf.zeros_like(targets)))
        gradients = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(gradients, layer.trainable_variables))
        return layer.delta

    trajectory = [float(step()) for _ in range(steps)]
    return trajectory, float(layer.scale)


def test_adaptive_huber_with_unit_scale_learns_the_nll_optimum_and_never_collapses():
    noise = RNG.standard_t(3, size=20000)
    trajectory, scale = _train_adaptive_huber(
        noise, initial_delta=0.2, learn_scale=False, steps=300
    )
    optimum, _ = _sample_optimum(noise, learn_scale=False)
    assert scale == 1.0
    assert optimum == pytest.approx(0.97, abs=0.04)  # the sample's optimum near the population's
    assert trajectory[-1] == pytest.approx(optimum, abs=0.005)
    # Started at 0.2, δ only rises towards the optimum: it does not collapse.
    assert min(trajectory) >= 0.2 - 1e-6


def test_adaptive_huber_learns_delta_and_scale_inside_fit():
    noise = RNG.standard_t(3, size=20000).astype("float32")
    target = tf.keras.Input((1,))
    adaptive = losses.AdaptiveHuber()
    # The location is known (0) here, so the prediction is a constant and only δ and the
    # scale learn; the endpoint pattern from AdaptiveHuber's docstring.
    model = tf.keras.Model(target, target)
    model.add_loss(adaptive((target, tf.keras.layers.Lambda(tf.zeros_like)(target))))
    model.compile(tf.keras.optimizers.Adam(0.05))
    dataset = tf.data.Dataset.from_tensors(noise[:, None]).repeat()
    model.fit(dataset, steps_per_epoch=300, epochs=1, verbose=0)
    optimum_delta, optimum_scale = _sample_optimum(noise.astype("float64"), learn_scale=True)
    assert float(adaptive.delta) == pytest.approx(optimum_delta, abs=0.01)
    assert float(adaptive.scale) == pytest.approx(optimum_scale, abs=0.01)
    # REFERENCES.md gives δ ≈ 0.77, scale ≈ 0.82; the population optimum, by quadrature, is
    # (0.752, 0.798), and the likelihood is so flat there that (0.77, 0.82) is 3e-5 above it.
    assert optimum_delta == pytest.approx(0.77, abs=0.03)
    assert optimum_scale == pytest.approx(0.82, abs=0.03)


def test_adaptive_huber_on_gaussian_noise_grows_delta_towards_mse():
    noise = RNG.normal(size=20000)
    trajectory, scale = _train_adaptive_huber(noise, initial_delta=1.0, learn_scale=True, steps=300)
    assert trajectory[-1] > 2.5 and np.all(np.diff(trajectory[50:]) > 0)
    assert scale == pytest.approx(1.0, abs=0.03)  # large δ: the Gaussian scale is σ


def test_adaptive_huber_rejects_non_positive_initial_values():
    with pytest.raises(ValueError, match="initial_delta"):
        losses.AdaptiveHuber(initial_delta=0.0)
