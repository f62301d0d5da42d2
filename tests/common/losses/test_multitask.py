"""Uncertainty weighting and Dynamic Weight Average against their published formulas."""

from common import losses

import numpy as np
import pytest
import tensorflow as tf


def test_uncertainty_weighting_matches_kendall_formula_and_its_gradient():
    log_variances = np.array([0.3, -1.2, 2.0])
    task_losses = np.array([0.8, 2.5, 0.1])
    layer = losses.UncertaintyWeighting(3)
    layer.log_variances.assign(log_variances)
    expected = np.sum(task_losses / (2 * np.exp(log_variances)) + log_variances / 2)
    np.testing.assert_allclose(layer(list(task_losses)), expected, rtol=1e-6)
    np.testing.assert_allclose(layer(tf.constant(task_losses)), expected, rtol=1e-6)
    with tf.GradientTape() as tape:
        total = layer([tf.constant(value) for value in task_losses])
    gradient = tape.gradient(total, layer.log_variances)
    np.testing.assert_allclose(
        gradient, -task_losses / (2 * np.exp(log_variances)) + 0.5, rtol=1e-5
    )


def test_uncertainty_weighting_learns_log_of_each_task_loss():
    # At the optimum exp(s_i) = L_i: the weight 1 / (2 L_i) balances the tasks.
    task_losses = tf.constant([0.5, 4.0])
    layer = losses.UncertaintyWeighting(2)
    optimizer = tf.keras.optimizers.SGD(0.5)
    for _ in range(200):
        with tf.GradientTape() as tape:
            total = layer(task_losses)
        optimizer.apply_gradients(
            zip(tape.gradient(total, layer.trainable_variables), layer.trainable_variables)
        )
    np.testing.assert_allclose(layer.log_variances.numpy(), np.log([0.5, 4.0]), atol=1e-3)


def test_uncertainty_weighting_rejects_the_wrong_number_of_tasks():
    with pytest.raises(ValueError, match="expected 2 scalar task losses"):
        losses.UncertaintyWeighting(2)([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="num_tasks"):
        losses.UncertaintyWeighting(0)


def _np_dwa(history, temperature):
    """Liu et al. 2019, eq. (7): weights for the epoch after the history."""
    if len(history) < 2:
        return np.ones(len(history[0]))
    ratios = np.array(history[-1]) / np.array(history[-2])
    exponentials = np.exp(ratios / temperature)
    return len(ratios) * exponentials / exponentials.sum()


def test_dynamic_weight_average_follows_the_formula():
    callback = losses.DynamicWeightAverage(
        ["seg_loss", "depth_loss", "normal_loss"], temperature=2.0
    )
    history = []
    for epoch, epoch_losses in enumerate(
        [[1.0, 3.0, 2.0], [0.5, 2.9, 2.1], [0.45, 1.0, 2.0], [0.4, 0.9, 1.0]]
    ):
        logs = dict(zip(callback.loss_names, epoch_losses), loss=sum(epoch_losses))
        callback.on_epoch_end(epoch, logs)
        history.append(epoch_losses)
        weights = [variable.numpy() for variable in callback.loss_weights]
        np.testing.assert_allclose(weights, _np_dwa(history, 2.0), rtol=1e-6)
        assert np.sum(weights) == pytest.approx(3.0)
    with pytest.raises(KeyError, match="seg_loss"):
        callback.on_epoch_end(4, {"loss": 1.0})


def test_dynamic_weight_average_steers_a_compiled_model_without_recompiling():
    tf.keras.utils.set_random_seed(5)
    features = tf.keras.Input((3,))
    model = tf.keras.Model(
        features,
        {
            "a": tf.keras.layers.Dense(1, name="a")(features),
            "b": tf.keras.layers.Dense(1, name="b")(features),
        },
    )
    dwa = losses.DynamicWeightAverage(["a_loss", "b_loss"])
    model.compile(
        tf.keras.optimizers.SGD(0.05),
        loss={"a": losses.Huber(), "b": losses.WeightedMSE()},
        loss_weights={"a": dwa.loss_weights[0], "b": dwa.loss_weights[1]},
    )
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 3)).astype("float32")
    targets = {
        "a": rng.normal(size=(32, 1)).astype("float32"),
        "b": 2 * rng.normal(size=(32, 1)).astype("float32"),
    }
    history = model.fit(x, targets, batch_size=32, epochs=3, verbose=0, callbacks=[dwa]).history
    per_task = [[history["a_loss"][e], history["b_loss"][e]] for e in range(3)]
    weights_in_epoch_2 = _np_dwa(per_task[:2], 2.0)
    assert not np.allclose(weights_in_epoch_2, 1.0)
    # Epoch 2 (one step) was trained with the weights set after epoch 1.
    np.testing.assert_allclose(history["loss"][2], weights_in_epoch_2 @ per_task[2], rtol=1e-5)


def test_dynamic_weight_average_temperature_changes_the_weights():
    # The same loss history under T = 0.5 and T = 5: each matches eq. (7), and a lower
    # temperature spreads the weights further apart.
    history = [[1.0, 2.0], [0.5, 1.9]]
    found = {}
    for temperature in (0.5, 5.0):
        callback = losses.DynamicWeightAverage(["a", "b"], temperature=temperature)
        for epoch, epoch_losses in enumerate(history):
            callback.on_epoch_end(epoch, dict(zip(["a", "b"], epoch_losses)))
        found[temperature] = np.array([v.numpy() for v in callback.loss_weights])
        np.testing.assert_allclose(found[temperature], _np_dwa(history, temperature), rtol=1e-6)
    spread = {t: abs(w[0] - w[1]) for t, w in found.items()}
    assert spread[0.5] > spread[5.0] > 0
