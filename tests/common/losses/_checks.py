"""Checks shared by the loss tests."""

import numpy as np
import tensorflow as tf


def assert_gradient_matches_finite_differences(function, point, rtol=1e-6, atol=1e-9):
    """Compares the autodiff Jacobian of `function` at `point` with central differences.

    Runs in float64 with a step of 1e-6, where truncation (~1e-12) and rounding
    (~1e-10) errors stay far below the tolerance; random points almost surely avoid
    the kinks of hinge-like losses by more than the step.
    """
    point = tf.constant(np.asarray(point, dtype=np.float64))
    theoretical, numerical = tf.test.compute_gradient(function, [point], delta=1e-6)
    assert np.abs(theoretical[0]).max() > 0, "zero gradient: the check would be empty"
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=rtol, atol=atol)


def assert_finite_value_and_gradient(function, point, dtype=tf.float32):
    """function(point) and its gradient with respect to `point` contain no NaN or inf."""
    point = tf.constant(point, dtype=dtype)
    with tf.GradientTape() as tape:
        tape.watch(point)
        value = function(point)
    gradient = tape.gradient(value, point)
    assert gradient is not None
    assert np.all(np.isfinite(value.numpy())), value
    assert np.all(np.isfinite(tf.cast(gradient, tf.float32).numpy())), gradient
    return value, gradient
