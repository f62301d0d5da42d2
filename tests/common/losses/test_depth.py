"""Depth losses against brute-force NumPy loops, with invalid pixels; gradients; stability."""

import math

from common import losses

import numpy as np
import pytest
import tensorflow as tf

from ._checks import assert_finite_value_and_gradient, assert_gradient_matches_finite_differences

RNG = np.random.default_rng(50)


def _valid_pixels(y_true, sample):
    """(index, target) of the pixels of one sample that have a depth measurement."""
    flat = y_true[sample].reshape(-1)
    return [(k, flat[k]) for k in range(flat.size) if flat[k] > 0]  # NaN > 0 is False


def _np_masked_l1(y_true, y_pred):
    result = []
    for sample in range(len(y_true)):
        predicted = y_pred[sample].reshape(-1)
        errors = [abs(predicted[k] - target) for k, target in _valid_pixels(y_true, sample)]
        result.append(np.mean(errors) if errors else 0.0)
    return np.array(result)


def _np_berhu(y_true, y_pred, threshold=None):
    """threshold None: c = 0.2·max |e| over the valid pixels of the whole batch."""
    if threshold is None:
        largest = 0.0
        for sample in range(len(y_true)):
            predicted = y_pred[sample].reshape(-1)
            for k, target in _valid_pixels(y_true, sample):
                largest = max(largest, abs(predicted[k] - target))
        threshold = 0.2 * largest
    result = []
    for sample in range(len(y_true)):
        predicted = y_pred[sample].reshape(-1)
        values = []
        for k, target in _valid_pixels(y_true, sample):
            error = abs(predicted[k] - target)
            values.append(
                error if error <= threshold else (error**2 + threshold**2) / (2 * threshold)
            )
        result.append(np.mean(values) if values else 0.0)
    return np.array(result)


def _np_silog(y_true, y_pred, lam):
    result = []
    for sample in range(len(y_true)):
        predicted = y_pred[sample].reshape(-1)
        d = [
            math.log(max(predicted[k], 1e-6)) - math.log(t)
            for k, t in _valid_pixels(y_true, sample)
        ]
        result.append(np.mean(np.square(d)) - lam * np.mean(d) ** 2 if d else 0.0)
    return np.array(result)


def _case(shape=(3, 4, 5)):
    y_true = RNG.uniform(0.5, 8.0, size=shape)
    y_true[RNG.uniform(size=shape) < 0.3] = 0.0
    y_true[0, 0, :2] = [-1.0, np.nan]  # negative and missing measurements are invalid too
    y_true[-1] = 0.0  # a sample with no valid pixel
    y_pred = y_true * RNG.uniform(0.7, 1.3, size=shape) + RNG.uniform(0.05, 0.5, size=shape)
    y_pred = np.nan_to_num(np.abs(y_pred), nan=1.0) + 0.1
    return y_true, y_pred


def test_losses_match_brute_force_with_invalid_pixels():
    y_true, y_pred = _case()
    for prediction in (y_pred, y_pred[..., None]):  # [B, H, W] against [B, H, W, 1]
        np.testing.assert_allclose(
            losses.masked_l1(y_true, prediction), _np_masked_l1(y_true, y_pred), rtol=1e-12
        )
        np.testing.assert_allclose(
            losses.berhu_loss(y_true, prediction), _np_berhu(y_true, y_pred), rtol=1e-12
        )
        for lam in (0.0, 0.5, 1.0):
            np.testing.assert_allclose(
                losses.scale_invariant_log_loss(y_true, prediction, lam),
                _np_silog(y_true, y_pred, lam),
                rtol=1e-10,
                atol=1e-14,
            )
    assert losses.masked_l1(y_true, y_pred).numpy()[-1] == 0.0


def test_berhu_threshold_comes_from_the_whole_batch():
    y_true, y_pred = _case()
    y_true[0, 3, 3], y_pred[0, 3, 3] = 2.0, 22.0  # the batch's largest residual, in sample 0
    alone = losses.berhu_loss(y_true[1:2], y_pred[1:2]).numpy()
    np.testing.assert_allclose(alone, _np_berhu(y_true[1:2], y_pred[1:2]), rtol=1e-12)
    together = losses.berhu_loss(y_true, y_pred).numpy()[1]
    assert together != pytest.approx(alone[0])


def test_scale_invariance_at_lambda_one():
    y_true, y_pred = _case()
    np.testing.assert_allclose(
        losses.scale_invariant_log_loss(y_true, 3.0 * y_pred, lam=1.0),
        losses.scale_invariant_log_loss(y_true, y_pred, lam=1.0),
        rtol=1e-9,
        atol=1e-12,
    )


def test_gradients_match_finite_differences():
    y_true, y_pred = _case((3, 3, 3))
    assert_gradient_matches_finite_differences(lambda p: losses.masked_l1(y_true, p), y_pred)
    assert_gradient_matches_finite_differences(
        lambda p: losses.scale_invariant_log_loss(y_true, p), y_pred
    )
    # berHu's threshold c is read off the batch without gradient: differentiate with c held.
    threshold = 0.2 * np.nanmax(np.where(y_true > 0, np.abs(y_pred - y_true), 0.0))
    with tf.GradientTape() as tape:
        point = tf.constant(y_pred)
        tape.watch(point)
        total = tf.reduce_sum(losses.berhu_loss(y_true, point))
    autodiff = tape.gradient(total, point).numpy()
    numerical = np.zeros_like(y_pred)
    for index in np.ndindex(y_pred.shape):
        step = np.zeros_like(y_pred)
        step[index] = 1e-6
        numerical[index] = (
            _np_berhu(y_true, y_pred + step, threshold).sum()
            - _np_berhu(y_true, y_pred - step, threshold).sum()
        ) / 2e-6
    np.testing.assert_allclose(autodiff, numerical, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32])
def test_finite_for_empty_masks_exact_and_degenerate_predictions(dtype):
    y_true, y_pred = _case()
    all_invalid = np.zeros_like(y_true)
    for function in (losses.masked_l1, losses.berhu_loss, losses.scale_invariant_log_loss):
        for targets, predictions in (
            (all_invalid, y_pred),  # no valid pixel in the batch
            (np.nan_to_num(y_true), np.nan_to_num(y_true)),  # exact: berHu's c = 0
            (y_true, np.zeros_like(y_pred)),  # zero depth predicted: log floored
        ):
            value, _ = assert_finite_value_and_gradient(
                lambda p: function(targets, p), predictions, dtype
            )
            assert value.dtype == tf.float32
        assert np.all(function(all_invalid, y_pred).numpy() == 0.0)


def test_shape_mismatch_and_bad_lambda_are_rejected():
    with pytest.raises(ValueError, match="y_true has shape"):
        losses.masked_l1(np.ones((2, 4, 4)), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match="lam must be in"):
        losses.scale_invariant_log_loss(np.ones((2, 4, 4)), np.ones((2, 4, 4)), lam=2.0)
