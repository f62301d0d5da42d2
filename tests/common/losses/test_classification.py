"""Weighted BCE, focal, soft precision: brute force, Keras built-ins, gradients, stability,
the trap."""

import math

from common import losses

import numpy as np
import pytest
import tensorflow as tf

from ._checks import assert_finite_value_and_gradient, assert_gradient_matches_finite_differences

RNG = np.random.default_rng(30)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _np_weighted_bce(y_true, logits, pos_weight):
    """Per row: mean over elements of −[w·y·log p + (1 − y)·log(1 − p)], p = sigmoid(logit)."""
    rows = []
    for labels, row_logits in zip(y_true, logits):
        terms = []
        for label, logit in zip(labels, row_logits):
            p = _sigmoid(logit)
            terms.append(-(pos_weight * label * math.log(p) + (1 - label) * math.log(1 - p)))
        rows.append(np.mean(terms))
    return np.array(rows)


def _np_focal(y_true, logits, alpha, gamma):
    rows = []
    for labels, row_logits in zip(y_true, logits):
        terms = []
        for label, logit in zip(labels, row_logits):
            p = _sigmoid(logit)
            p_t = p if label == 1 else 1 - p
            weight = alpha if label == 1 else 1 - alpha
            terms.append(-weight * (1 - p_t) ** gamma * math.log(p_t))
        rows.append(np.mean(terms))
    return np.array(rows)


def _np_soft_precision(y_true, probabilities, weights):
    true_positive, predicted = 0.0, 0.0
    for row in range(len(y_true)):
        for label, p in zip(y_true[row], probabilities[row]):
            true_positive += weights[row] * label * p
            predicted += weights[row] * p
    return true_positive / (predicted + 1e-7)


def _labels_and_logits(shape):
    labels = (RNG.uniform(size=shape) < 0.3).astype("int32")
    return labels, RNG.normal(size=shape) * 3.0


@pytest.mark.parametrize("pos_weight", [1.0, 5.0])
def test_weighted_bce_matches_brute_force(pos_weight):
    labels, logits = _labels_and_logits((8, 3))
    expected = _np_weighted_bce(labels, logits, pos_weight)
    np.testing.assert_allclose(
        losses.weighted_binary_crossentropy(labels, logits, pos_weight, from_logits=True),
        expected,
        rtol=1e-12,
    )
    probabilities = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(
        losses.weighted_binary_crossentropy(labels, probabilities, pos_weight), expected, rtol=1e-5
    )


def test_bce_with_unit_weight_equals_keras():
    labels, logits = _labels_and_logits((16, 2))
    labels_float = labels.astype("float32")
    logits = logits.astype("float32")
    probabilities = tf.sigmoid(logits).numpy()
    probabilities[0, 0], probabilities[1, 1] = 0.0, 1.0  # Keras clips these; so must we
    for from_logits, predictions in ((True, logits), (False, probabilities)):
        keras = tf.keras.losses.BinaryCrossentropy(from_logits=from_logits, reduction="none")
        np.testing.assert_allclose(
            losses.weighted_binary_crossentropy(labels, predictions, from_logits=from_logits),
            keras(labels_float, predictions),
            rtol=1e-6,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            losses.WeightedBinaryCrossentropy(from_logits=from_logits)(labels, predictions),
            tf.keras.losses.BinaryCrossentropy(from_logits=from_logits)(labels_float, predictions),
            rtol=1e-6,
        )


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.6, 0.0), (0.1, 0.5), (0.5, 3.0)])
def test_focal_equals_keras_with_class_balancing_and_brute_force(alpha, gamma):
    labels, logits = _labels_and_logits((12, 3))
    labels_float = labels.astype("float32")
    logits = logits.astype("float32")
    probabilities = tf.sigmoid(logits).numpy()
    for from_logits, predictions in ((True, logits), (False, probabilities)):
        keras = tf.keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True,
            alpha=alpha,
            gamma=gamma,
            from_logits=from_logits,
            reduction="none",
        )
        ours = losses.binary_focal_crossentropy(labels, predictions, alpha, gamma, from_logits)
        np.testing.assert_allclose(ours, keras(labels_float, predictions), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        losses.binary_focal_crossentropy(labels, logits.astype("float64"), alpha, gamma, True),
        _np_focal(labels, logits.astype("float64"), alpha, gamma),
        rtol=1e-10,
    )


def test_soft_precision_and_bce_with_soft_precision_match_brute_force():
    labels, logits = _labels_and_logits((10, 2))
    probabilities = 1 / (1 + np.exp(-logits))
    weights = RNG.uniform(0.5, 2.0, size=10)
    expected_precision = _np_soft_precision(labels, probabilities, np.ones(10))
    np.testing.assert_allclose(
        losses.soft_precision(labels, logits, from_logits=True), expected_precision, rtol=1e-10
    )
    np.testing.assert_allclose(
        losses.soft_precision(labels, probabilities), expected_precision, rtol=1e-10
    )
    weighted_precision = _np_soft_precision(labels, probabilities, weights)
    np.testing.assert_allclose(
        losses.soft_precision(labels, logits, True, sample_weight=weights),
        weighted_precision,
        rtol=1e-10,
    )
    loss = losses.BCEWithSoftPrecision(pos_weight=4.0, precision_weight=0.7, from_logits=True)
    bce = _np_weighted_bce(labels, logits, 4.0)
    np.testing.assert_allclose(
        loss(labels, logits), np.mean(bce) + 0.7 * (1 - expected_precision), rtol=1e-10
    )
    np.testing.assert_allclose(
        loss(labels, logits, sample_weight=weights),
        np.sum(weights * bce) / 10 + 0.7 * (1 - weighted_precision),
        rtol=1e-10,
    )


def test_gradients_match_finite_differences():
    labels, logits = _labels_and_logits((6, 2))
    probabilities = 0.05 + 0.9 / (1 + np.exp(-logits))
    checks = [
        (lambda x: losses.weighted_binary_crossentropy(labels, x, 3.0, True), logits),
        (lambda x: losses.weighted_binary_crossentropy(labels, x, 3.0), probabilities),
        (lambda x: losses.binary_focal_crossentropy(labels, x, 0.3, 2.0, True), logits),
        (lambda x: losses.binary_focal_crossentropy(labels, x, 0.3, 0.5, True), logits),
        (lambda x: losses.binary_focal_crossentropy(labels, x, 0.3, 2.0), probabilities),
        (lambda x: losses.soft_precision(labels, x, from_logits=True), logits),
        (lambda x: losses.BCEWithSoftPrecision(2.0, 0.5, True)(labels, x), logits),
    ]
    for function, point in checks:
        assert_gradient_matches_finite_differences(function, point)


def test_extreme_logits_and_saturated_probabilities_stay_finite():
    labels = np.array([[1, 0, 1, 0]], "int32")
    logits = np.array([[1e4, -1e4, -1e4, 1e4]], "float32")
    probabilities = np.array([[1.0, 0.0, 0.0, 1.0]], "float32")
    for from_logits, predictions in ((True, logits), (False, probabilities)):
        for function in (
            lambda x: losses.weighted_binary_crossentropy(labels, x, 10.0, from_logits),
            lambda x: losses.binary_focal_crossentropy(labels, x, 0.25, 2.0, from_logits),
            lambda x: losses.binary_focal_crossentropy(labels, x, 0.25, 0.5, from_logits),
            lambda x: losses.binary_focal_crossentropy(labels, x, 0.25, 0.0, from_logits),
            lambda x: losses.soft_precision(labels, x, from_logits),
            lambda x: losses.BCEWithSoftPrecision(3.0, 1.0, from_logits)(labels, x),
        ):
            assert_finite_value_and_gradient(function, predictions)
    # Wrong answers at ±1e4 cost about 1e4 from logits, not inf.
    np.testing.assert_allclose(
        losses.weighted_binary_crossentropy(labels, logits, 1.0, True), [5e3], rtol=1e-6
    )
    # No predicted positive at all: precision 0, gradient finite.
    assert_finite_value_and_gradient(lambda x: losses.soft_precision(labels, x), np.zeros((1, 4)))


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    labels, logits = _labels_and_logits((8, 1))
    logits = tf.constant(logits, dtype)
    for function in (
        lambda x: losses.weighted_binary_crossentropy(labels, x, 2.0, True),
        lambda x: losses.binary_focal_crossentropy(labels, x, from_logits=True),
        lambda x: losses.soft_precision(labels, x, True),
        lambda x: losses.BCEWithSoftPrecision(from_logits=True)(labels, x),
    ):
        assert function(logits).dtype == tf.float32
        np.testing.assert_allclose(
            function(logits), function(tf.cast(logits, tf.float32)), rtol=1e-6
        )
        assert_finite_value_and_gradient(function, logits.numpy(), dtype)


def test_labels_of_any_dtype_and_shape_alignment():
    logits = RNG.normal(size=(5, 1))
    reference = losses.weighted_binary_crossentropy(
        np.array([[1], [0], [1], [1], [0]], "float64"), logits, 2.0, True
    )
    for labels in (
        np.array([1, 0, 1, 1, 0], "int32"),
        np.array([[True], [False], [True], [True], [False]]),
        np.array([1, 0, 1, 1, 0], "int64"),
    ):
        np.testing.assert_allclose(
            losses.weighted_binary_crossentropy(labels, logits, 2.0, True), reference
        )
    with pytest.raises(ValueError, match="y_true has shape"):
        losses.weighted_binary_crossentropy(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="sample_weight has shape"):
        losses.BCEWithSoftPrecision()(
            np.zeros((5, 1)), np.zeros((5, 1)), sample_weight=np.ones((5, 2))
        )


def test_precision_metric_in_a_loss_fails_where_soft_precision_trains():
    """The trap: tf.keras.metrics.Precision inside a loss has no gradient (and breaks fit)."""
    labels = tf.constant([[1.0], [0.0], [1.0], [0.0]])
    logits = tf.Variable([[0.5], [0.3], [-0.2], [-1.0]])
    with tf.GradientTape(persistent=True) as tape:
        metric = tf.keras.metrics.Precision()
        metric.update_state(labels, tf.round(tf.sigmoid(logits)))
        snippet = 1.0 - metric.result()
        ours = 1.0 - losses.soft_precision(labels, logits, from_logits=True)
    assert tape.gradient(snippet, logits) is None
    assert tape.gradient(ours, logits) is not None

    # Inside fit: a logistic model trained with BCE + soft precision on overlapping classes.
    tf.keras.utils.set_random_seed(3)
    features = RNG.normal(size=(512, 2)).astype("float32")
    targets = (features[:, :1] + 0.8 * RNG.normal(size=(512, 1)) > 1.0).astype("float32")
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(
        tf.keras.optimizers.Adam(0.05),
        loss=losses.BCEWithSoftPrecision(pos_weight=1.0, precision_weight=2.0, from_logits=True),
    )
    history = model.fit(features, targets, batch_size=128, epochs=8, verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]
    predicted = tf.sigmoid(model(features)).numpy() > 0.5
    true_precision = (predicted & (targets > 0)).sum() / max(predicted.sum(), 1)
    assert true_precision > 2 * targets.mean()  # far above the ~20 % base rate
