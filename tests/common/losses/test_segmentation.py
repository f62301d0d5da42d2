"""Soft Dice against a brute-force NumPy loop: one-hot and index labels, ignored pixels,
empty classes."""

from common import losses

import numpy as np
import pytest
import tensorflow as tf

from ._checks import assert_finite_value_and_gradient, assert_gradient_matches_finite_differences

RNG = np.random.default_rng(40)


def _np_dice(one_hot, probabilities, smooth, valid=None):
    """Per sample: 1 − mean over classes of (2Σpy + s)/(Σp + Σy + s), looping over pixels."""
    batch, height, width, classes = probabilities.shape
    result = []
    for sample in range(batch):
        scores = []
        for c in range(classes):
            intersection = predicted = labelled = 0.0
            for i in range(height):
                for j in range(width):
                    if valid is not None and not valid[sample, i, j]:
                        continue
                    p, y = probabilities[sample, i, j, c], one_hot[sample, i, j, c]
                    intersection += p * y
                    predicted += p
                    labelled += y
            denominator = predicted + labelled + smooth
            scores.append(1.0 if denominator == 0 else (2 * intersection + smooth) / denominator)
        result.append(1.0 - np.mean(scores))
    return np.array(result)


def _softmax(logits):
    exponentials = np.exp(logits - logits.max(-1, keepdims=True))
    return exponentials / exponentials.sum(-1, keepdims=True)


def _case(batch=3, side=5, classes=4):
    indices = RNG.integers(0, classes, size=(batch, side, side))
    indices[0][indices[0] == classes - 1] = 0  # class C−1 absent from sample 0's label
    probabilities = _softmax(RNG.normal(size=(batch, side, side, classes)) * 2)
    return indices, probabilities


@pytest.mark.parametrize("smooth", [1.0, 1e-5, 0.0])
def test_dice_matches_brute_force_for_one_hot_labels_of_any_dtype(smooth):
    indices, probabilities = _case()
    one_hot = np.eye(4)[indices]
    expected = _np_dice(one_hot, probabilities, smooth)
    for labels in (one_hot, one_hot.astype("int32"), one_hot.astype("uint8"), one_hot.astype(bool)):
        np.testing.assert_allclose(
            losses.dice_loss(labels, probabilities, smooth), expected, rtol=1e-10
        )


def test_dice_accepts_class_indices_and_ignores_out_of_range_pixels():
    indices, probabilities = _case()
    ignored = RNG.uniform(size=indices.shape) < 0.2
    labelled = np.where(ignored, 255, indices)
    labelled[1, 0, 0] = -1  # another "unlabelled" marker
    valid = (labelled >= 0) & (labelled < 4)
    expected = _np_dice(
        np.eye(4)[np.where(valid, labelled, 0)] * valid[..., None], probabilities, 1.0, valid
    )
    for labels in (labelled, labelled[..., None], labelled.astype("int64")):
        np.testing.assert_allclose(losses.dice_loss(labels, probabilities), expected, rtol=1e-10)
    np.testing.assert_allclose(
        losses.DiceLoss(reduction="none")(labelled, probabilities), expected, rtol=1e-10
    )


def test_dice_empty_class_and_perfect_prediction():
    indices, _ = _case()
    one_hot = np.eye(4)[indices]
    # A perfect prediction scores 1 on every class, including the one absent from sample 0.
    np.testing.assert_allclose(
        losses.dice_loss(one_hot, one_hot, smooth=0.0), np.zeros(3), atol=1e-12
    )
    np.testing.assert_allclose(
        losses.dice_loss(one_hot, one_hot, smooth=1.0), np.zeros(3), atol=1e-12
    )


def test_binary_segmentation_with_one_channel():
    mask = (RNG.uniform(size=(2, 4, 4)) < 0.4).astype("int32")
    probabilities = RNG.uniform(size=(2, 4, 4, 1))
    expected = _np_dice(mask[..., None], probabilities, 1.0)
    # With one class, [B, H, W] labels are the mask itself (not class indices).
    np.testing.assert_allclose(losses.dice_loss(mask, probabilities), expected, rtol=1e-10)
    np.testing.assert_allclose(
        losses.dice_loss(mask[..., None], probabilities), expected, rtol=1e-10
    )


def test_integer_masks_are_cast_not_multiplied_into_an_error():
    """The trap: float predictions times an int32 mask raise InvalidArgumentError."""
    labels = tf.random.uniform((2, 4, 4, 3), maxval=2, dtype=tf.int32, seed=1)
    probabilities = tf.random.uniform((2, 4, 4, 3), seed=2)
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError)):
        _ = probabilities * labels
    assert np.all(np.isfinite(losses.dice_loss(labels, probabilities).numpy()))


def test_dice_gradient_matches_finite_differences():
    indices, probabilities = _case(batch=2, side=3, classes=3)
    assert_gradient_matches_finite_differences(
        lambda p: losses.dice_loss(np.eye(3)[indices], p, smooth=0.5), probabilities
    )


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32])
def test_dice_is_finite_for_saturated_probabilities_and_half_precision(dtype):
    one_hot = np.eye(3)[RNG.integers(0, 3, size=(2, 4, 4))]
    saturated = np.eye(3)[RNG.integers(0, 3, size=(2, 4, 4))]  # probabilities exactly 0 and 1
    for smooth in (1.0, 0.0):
        value, _ = assert_finite_value_and_gradient(
            lambda p: losses.dice_loss(one_hot, p, smooth), saturated, dtype
        )
        assert value.dtype == tf.float32
    empty = np.zeros((1, 4, 4, 3))
    assert_finite_value_and_gradient(lambda p: losses.dice_loss(empty, p, 0.0), empty, dtype)


def test_dice_shape_errors_name_the_arguments():
    probabilities = np.full((2, 4, 4, 3), 1 / 3)
    with pytest.raises(ValueError, match="y_true has shape"):
        losses.dice_loss(np.zeros((2, 4, 4, 2)), probabilities)
    with pytest.raises(ValueError, match="class indices"):
        losses.dice_loss(np.zeros((2, 4, 5), "int32"), probabilities)
    with pytest.raises(ValueError, match="spatial axis"):
        losses.dice_loss(np.zeros((2, 3)), np.zeros((2, 3)))
