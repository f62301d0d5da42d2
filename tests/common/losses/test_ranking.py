"""Ranking losses against brute-force loops over pairs and permutations, and TF-Ranking's
examples."""

from common import losses

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

from ._checks import assert_finite_value_and_gradient, assert_gradient_matches_finite_differences

RNG = np.random.default_rng(60)


def _pairs(labels, scores, valid):
    """s_i − s_j for every (i, j) with label_i > label_j, both valid, by two loops."""
    differences = []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if valid[i] and valid[j] and labels[i] > labels[j]:
                differences.append(scores[i] - scores[j])
    return np.array(differences)


def _np_ranknet(labels, scores, valid):
    differences = _pairs(labels, scores, valid)
    return np.mean(np.logaddexp(0.0, -differences)) if differences.size else 0.0


def _np_hinge(labels, scores, valid, margin):
    differences = _pairs(labels, scores, valid)
    return np.mean(np.maximum(0.0, margin - differences)) if differences.size else 0.0


def _np_tf_ranking_logistic(labels, scores, valid):
    return np.sum(np.logaddexp(0.0, -_pairs(labels, scores, valid))) / len(labels)


def _np_listmle(labels, scores, valid):
    """−log Plackett–Luce probability of the label order; equal labels keep list order."""
    items = sorted((-labels[k], k) for k in range(len(labels)) if valid[k])
    ordered = [scores[k] for _, k in items]
    return sum(logsumexp(ordered[i:]) - ordered[i] for i in range(len(ordered)))


def _np_listwise_mse(labels, scores, valid):
    errors = [(labels[k] - scores[k]) ** 2 for k in range(len(labels)) if valid[k]]
    return np.mean(errors) if errors else 0.0


def _per_list(function, labels, scores, valid, **kwargs):
    return np.array(
        [function(labels[b], scores[b], valid[b], **kwargs) for b in range(len(labels))]
    )


def _lists(batch, size):
    """Labels 0..3 with ties, padding (−1, NaN scores), a list without pairs, an empty list."""
    labels = RNG.integers(0, 4, size=(batch, size)).astype("float64")
    labels[RNG.uniform(size=labels.shape) < 0.2] = -1.0
    scores = RNG.normal(size=(batch, size)) * 2.0
    labels[0] = 2.0  # all equal: no pair
    labels[1] = -1.0  # all padding
    scores[labels < 0] = np.nan  # padding carries garbage
    return labels, scores


@pytest.mark.parametrize("size", [1, 2, 7])
def test_losses_match_brute_force_with_label_padding(size):
    labels, scores = _lists(6, size)
    valid = labels >= 0
    clean_scores = np.where(valid, scores, 0.0)
    cases = [
        (losses.ranknet_loss, _np_ranknet, {}),
        (lambda t, p: losses.pairwise_hinge_loss(t, p, margin=0.5), _np_hinge, {"margin": 0.5}),
        (losses.listmle_loss, _np_listmle, {}),
        (losses.listwise_mse, _np_listwise_mse, {}),
    ]
    for ours, brute_force, kwargs in cases:
        expected = _per_list(brute_force, labels, clean_scores, valid, **kwargs)
        np.testing.assert_allclose(ours(labels, scores), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        losses.RankNetLoss(normalization="tf_ranking")(labels, scores),
        np.mean(_per_list(_np_tf_ranking_logistic, labels, clean_scores, valid)),
        rtol=1e-12,
    )


def test_explicit_mask_replaces_the_label_rule():
    labels, scores = _lists(5, 6)
    labels = np.abs(labels)  # no negative labels: only the mask pads
    scores = np.nan_to_num(scores)
    mask = RNG.uniform(size=labels.shape) < 0.7
    for ours, brute_force in (
        (losses.ranknet_loss, _np_ranknet),
        (losses.listmle_loss, _np_listmle),
        (losses.listwise_mse, _np_listwise_mse),
    ):
        expected = _per_list(brute_force, labels, scores, mask)
        np.testing.assert_allclose(
            ours(labels, scores, mask=mask), expected, rtol=1e-12, atol=1e-15
        )
        np.testing.assert_allclose(
            ours(labels, scores, mask=mask.astype("int32")), expected, rtol=1e-12, atol=1e-15
        )
    np.testing.assert_allclose(
        losses.pairwise_hinge_loss(labels, scores, mask),
        _per_list(_np_hinge, labels, scores, mask, margin=1.0),
        rtol=1e-12,
    )


def test_tf_ranking_documented_examples():
    # TF-Ranking's docstring examples for its Keras pairwise and ListMLE losses.
    y_true, y_pred = [[1.0, 0.0]], [[0.6, 0.8]]
    assert (
        losses.RankNetLoss(normalization="tf_ranking")(y_true, y_pred).numpy()
        == pytest.approx(0.39906943, abs=1e-7)
    )
    assert (
        losses.PairwiseHingeLoss(normalization="tf_ranking")(y_true, y_pred).numpy()
        == pytest.approx(0.6, abs=1e-7)
    )
    assert losses.ListMLELoss()(y_true, y_pred).numpy() == pytest.approx(0.7981389, abs=1e-7)
    # Its ragged example, [[1, 0], [0, 1, 0]], is a padded batch here (L = 3 counts padding).
    ragged_labels = [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    ragged_scores = [[0.6, 0.8, 0.0], [0.5, 0.8, 0.4]]
    loss = losses.RankNetLoss(normalization="tf_ranking")
    assert loss(ragged_labels, ragged_scores).numpy() == pytest.approx(0.3109182, abs=1e-7)
    # The default normalisation: the mean over lists of each list's mean over pairs.
    expected = np.mean(
        [np.log1p(np.exp(0.2)), np.mean([np.log1p(np.exp(-0.3)), np.log1p(np.exp(-0.4))])]
    )
    assert (
        losses.RankNetLoss()(ragged_labels, ragged_scores).numpy()
        == pytest.approx(expected, abs=1e-7)
    )


def test_gradients_match_finite_differences():
    labels = np.array([[3, 1, 2, 0, -1], [1, 1, 0, 2, 2]], "float64")
    scores = RNG.normal(size=(2, 5))
    for function in (
        lambda s: losses.ranknet_loss(labels, s),
        lambda s: losses.pairwise_hinge_loss(labels, s, margin=4.0),
        lambda s: losses.listmle_loss(labels, s),
        lambda s: losses.listwise_mse(labels, s),
    ):
        assert_gradient_matches_finite_differences(function, scores)


def test_one_gradient_per_input_unlike_the_custom_gradient_snippet():
    """The trap: a @tf.custom_gradient pair loss returning one gradient for two inputs."""

    @tf.custom_gradient
    def snippet(score_i, score_j):
        difference = score_i - score_j

        def gradient(upstream):
            return -upstream * tf.sigmoid(-difference)

        return tf.nn.softplus(-difference), gradient

    score_i, score_j = tf.constant(0.3), tf.constant(0.9)
    with tf.GradientTape() as tape:
        tape.watch([score_i, score_j])
        value = snippet(score_i, score_j)
    with pytest.raises(ValueError, match="2"):
        tape.gradient(value, [score_i, score_j])
    scores = tf.constant([[0.3, 0.9]])
    with tf.GradientTape() as tape:
        tape.watch(scores)
        value = losses.ranknet_loss([[1.0, 0.0]], scores)
    expected = np.array([[-1.0, 1.0]]) * (1 / (1 + np.exp(0.3 - 0.9)))
    np.testing.assert_allclose(tape.gradient(value, scores), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32])
def test_finite_for_extreme_scores_padding_and_empty_lists(dtype):
    labels = np.array([[2, 0, 1, -1], [-1, -1, -1, -1], [1, -1, -1, -1]], "int32")
    scores = np.array([[6e4, -6e4, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0], [5.0, 0.0, 0.0, 0.0]])
    if dtype == tf.float32:
        scores[0, :2] = [1e4, -1e4]
    for function in (
        losses.ranknet_loss,
        losses.pairwise_hinge_loss,
        losses.listmle_loss,
        losses.listwise_mse,
    ):
        value, _ = assert_finite_value_and_gradient(lambda s: function(labels, s), scores, dtype)
        assert value.dtype == tf.float32
        assert value.numpy()[1] == 0.0  # an empty list
        if function is not losses.listwise_mse:
            assert value.numpy()[2] == 0.0  # one item: no pair, a certain order


def test_shapes_and_label_dtypes():
    labels = np.array([[2, 0, 1]], "int64")
    scores = np.array([[0.1, 0.4, -0.3]], "float32")
    reference = losses.ranknet_loss(labels.astype("float32"), scores)
    np.testing.assert_allclose(losses.ranknet_loss(labels, scores), reference)
    np.testing.assert_allclose(losses.ranknet_loss(labels[..., None], scores[..., None]), reference)
    np.testing.assert_allclose(losses.ranknet_loss(labels, scores[..., None]), reference)
    with pytest.raises(ValueError, match="y_true has shape"):
        losses.ranknet_loss(labels, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="mask has shape"):
        losses.listmle_loss(labels, scores, mask=np.ones((1, 2), bool))
    with pytest.raises(ValueError, match=r"\[B, L\] lists"):
        losses.listmle_loss(labels[0], scores[0])
    with pytest.raises(ValueError, match="normalization"):
        losses.RankNetLoss(normalization="mean")


def test_pairs_are_vectorised_not_looped():
    """Tracing lists of 50 instead of 5 items adds no ops per pair (a pair loop would add 2,475)."""

    def op_count(size):
        function = tf.function(losses.ranknet_loss).get_concrete_function(
            tf.TensorSpec([8, size]), tf.TensorSpec([8, size])
        )
        return len(function.graph.get_operations())

    assert abs(op_count(50) - op_count(5)) < 5
