"""Tests of common.losses.constrained: the Lagrangians against Eban et al.'s formulas by
brute force, their gradients, the multiplier's ascent, the constraint reached on a
separable toy problem, saving λ, and 2 replicas == 1 device."""

from common import losses
from common.losses import constrained

import numpy as np
import pytest
import tensorflow as tf

from tests.common.losses import _checks

RNG = np.random.default_rng(0)


def _bounds(logits, surrogate):
    """NumPy ℓ⁺, ℓ⁻: the hinge max(0, 1 ∓ f) or log2(1 + e^(∓f))."""
    if surrogate == "hinge":
        return np.maximum(0, 1 - logits), np.maximum(0, 1 + logits)
    return np.log1p(np.exp(-logits)) / np.log(2), np.log1p(np.exp(logits)) / np.log(2)


def _paper(kind, y, f, multiplier, target, surrogate):
    """The Lagrangian of Eban et al. 2017 summed by a loop over rows (§3 of the paper)."""
    tp_lower = fp_upper = flagged_upper = 0.0
    for label, logit in zip(y, f):
        missed, flagged = _bounds(np.array(logit), surrogate)
        flagged_upper += flagged
        if label == 1:
            tp_lower += 1 - missed
        else:
            fp_upper += flagged
    positives = y.sum()
    if kind == "precision_at_recall":
        return fp_upper + multiplier * (target * positives - tp_lower)
    if kind == "recall_at_precision":
        return -tp_lower + multiplier * (target * fp_upper - (1 - target) * tp_lower)
    return -tp_lower + multiplier * (flagged_upper - target * len(y))


FUNCTIONS = {"precision_at_recall": losses.precision_at_recall,
             "recall_at_precision": losses.recall_at_precision,
             "precision_at_share": losses.precision_at_share}
CLASSES = {"precision_at_recall": losses.PrecisionAtRecall,
           "recall_at_precision": losses.RecallAtPrecision,
           "precision_at_share": losses.PrecisionAtShare}


@pytest.mark.parametrize("surrogate", ["hinge", "logistic"])
@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_lagrangian_sums_to_the_papers_formula(kind, surrogate):
    for _ in range(5):
        y = (RNG.random(40) < 0.3).astype(np.float64)
        f = RNG.normal(scale=2.0, size=40)
        multiplier, target = RNG.uniform(0, 5), RNG.uniform(0.05, 0.95)
        per_row = FUNCTIONS[kind](y, f[:, None], multiplier, target, surrogate).numpy()
        assert per_row.shape == (40,)
        np.testing.assert_allclose(per_row.sum(), _paper(kind, y, f, multiplier, target,
                                                         surrogate), rtol=1e-10)


@pytest.mark.parametrize("surrogate", ["hinge", "logistic"])
def test_surrogates_bound_the_counts(surrogate):
    f = RNG.normal(scale=3.0, size=1000)
    missed, flagged = (t.numpy() for t in constrained.surrogate_bounds(tf.constant(f),
                                                                        surrogate))
    assert np.all(missed >= (f < 0)) and np.all(flagged >= (f >= 0))


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_gradient_matches_finite_differences(kind):
    y = tf.constant((RNG.random(12) < 0.4).astype(np.float64))
    _checks.assert_gradient_matches_finite_differences(
        lambda f: FUNCTIONS[kind](y, f, 2.5, 0.6, "logistic"), RNG.normal(size=12))
    # Hinge: away from its kinks at ±1 the gradient is exact too.
    _checks.assert_gradient_matches_finite_differences(
        lambda f: FUNCTIONS[kind](y, f, 2.5, 0.6, "hinge"), RNG.uniform(-0.9, 0.9, 12))


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_violation_is_the_multipliers_gradient_per_positive(kind):
    y = (RNG.random(50) < 0.2).astype(np.float32)
    f = RNG.normal(size=(50, 1)).astype(np.float32)
    loss = CLASSES[kind](0.7, multiplier=1.5)
    multiplier = tf.Variable(1.5)
    with tf.GradientTape() as tape:
        mean = tf.reduce_mean(loss.lagrangian(y, f, multiplier))
    expected = tape.gradient(mean, multiplier).numpy() / y.mean()
    np.testing.assert_allclose(loss.violation(y, f).numpy(), expected, rtol=1e-5)
    if kind == "precision_at_recall":  # the recall shortfall α − TPₗ / |Y⁺|
        missed, _ = _bounds(f[:, 0].astype(np.float64), "hinge")
        tp_lower = (1 - missed)[y == 1].sum()
        np.testing.assert_allclose(loss.violation(y, f).numpy(), 0.7 - tp_lower / y.sum(),
                                   rtol=1e-5)


def test_loss_class_is_the_mean_at_its_fixed_multiplier_and_round_trips():
    y, f = np.array([1, 0, 0, 1, 0.0]), np.array([[0.3], [-2.0], [0.5], [-0.4], [1.2]])
    loss = losses.PrecisionAtRecall(0.8, multiplier=3.0, surrogate="logistic")
    np.testing.assert_allclose(loss(y, f).numpy(), _paper("precision_at_recall", y, f[:, 0],
                                                          3.0, 0.8, "logistic") / 5, rtol=1e-6)
    again = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert type(again) is losses.PrecisionAtRecall and again.get_config() == loss.get_config()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="target_recall"):
        losses.PrecisionAtRecall(0.0)
    with pytest.raises(ValueError, match="target_precision"):
        losses.RecallAtPrecision(1.5)
    with pytest.raises(ValueError, match="surrogate"):
        losses.PrecisionAtShare(0.1, surrogate="square")
    with pytest.raises(ValueError, match="one logit per row"):
        losses.PrecisionAtRecall(0.5)(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="ConstrainedLoss"):
        losses.DualAscentModel(tf.keras.Sequential([tf.keras.layers.Dense(1)])).compile(
            "sgd", loss="mse")


def _separable(rows=400, seed=1):
    """Two 2-D clusters with a gap between them; 15 % positives."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.15).astype(np.float32)
    x = rng.normal(size=(rows, 2)).astype(np.float32) * 0.5
    x[:, 0] += np.where(y == 1, 2.0, -2.0)
    return x, y


def _train_linear(loss, epochs=40):
    tf.keras.utils.set_random_seed(3)
    network = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(
        1, kernel_initializer="zeros", bias_initializer=tf.keras.initializers.Constant(-3.0))])
    model = losses.DualAscentModel(network)
    model.compile(tf.keras.optimizers.SGD(0.05), loss=loss)
    x, y = _separable()
    history = model.fit(x, y, batch_size=100, epochs=epochs, verbose=0, shuffle=False)
    recall = float(((network.predict(x, verbose=0)[:, 0] >= 0) & (y == 1)).sum() / y.sum())
    return recall, float(model.multiplier.numpy()), history


def test_the_constraint_is_reached_on_a_separable_problem():
    # From λ = 0 (only the false-positive term: every row pushed below the threshold),
    # the ascent on λ raises it until the training recall reaches α.
    recall, multiplier, history = _train_linear(losses.PrecisionAtRecall(
        0.9, multiplier=0.0, dual_learning_rate=0.5))
    assert recall >= 0.9 and multiplier > 0, (recall, multiplier)
    assert history.history["violation"][-1] <= 0.05
    # Control: without the ascent (rate 0) λ stays 0 and the recall stays at 0.
    recall, multiplier, _ = _train_linear(losses.PrecisionAtRecall(
        0.9, multiplier=0.0, dual_learning_rate=0.0))
    assert recall < 0.1 and multiplier == 0.0


def test_multiplier_saves_and_restores_with_the_model(tmp_path):
    _, multiplier, _ = _train_linear(losses.PrecisionAtRecall(0.9, multiplier=0.0,
                                                              dual_learning_rate=0.5), 5)
    network = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model = losses.DualAscentModel(network)
    model.compile("sgd", loss=losses.PrecisionAtRecall(0.9, multiplier=0.0,
                                                       dual_learning_rate=0.5))
    model.fit(*_separable(), batch_size=100, epochs=2, verbose=0)
    trained = float(model.multiplier.numpy())
    assert trained > 0
    model.save(tmp_path / "model.keras")
    loaded = tf.keras.models.load_model(tmp_path / "model.keras")
    assert float(loaded.multiplier.numpy()) == pytest.approx(trained)
    checkpoint = tf.train.Checkpoint(model=model)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    model.multiplier.assign(123.0)
    checkpoint.restore(path)
    assert float(model.multiplier.numpy()) == pytest.approx(trained)


def _two_steps(strategy, kind):
    """Weights and λ after a batch of 6 (split 3 + 3) and one of 5 (3 + 2)."""
    tf.keras.utils.set_random_seed(5)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(11, 3)).astype(np.float32)
    y = np.array([1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1], np.float32)
    with strategy.scope():
        network = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(
            1, kernel_initializer=tf.keras.initializers.Constant(0.3))])
        model = losses.DualAscentModel(network)
        model.compile(tf.keras.optimizers.SGD(0.1), run_eagerly=strategy is None,
                      loss=CLASSES[kind](0.6, multiplier=1.0, dual_learning_rate=0.7,
                                         surrogate="logistic"))
    states = []
    for rows in (slice(0, 6), slice(6, 11)):
        data = tf.data.Dataset.from_tensor_slices((x[rows], y[rows])).batch(6)
        model.fit(data, epochs=1, verbose=0)
        states.append([w.numpy() for w in network.weights] + [model.multiplier.numpy()])
    return states


@pytest.mark.parametrize("kind", list(CLASSES))
def test_two_replicas_take_the_one_device_step(mirrored_strategy, kind):
    one = _two_steps(tf.distribute.get_strategy(), kind)
    two = _two_steps(mirrored_strategy, kind)
    for step_one, step_two in zip(one, two):
        assert step_one[-1] != 1.0  # λ moved: the comparison is not empty
        for a, b in zip(step_one, step_two):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
