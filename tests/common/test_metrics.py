"""Evaluation metrics against scikit-learn, SciPy and brute-force loops."""

from common import metrics

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error, ndcg_score

LISTS, ITEMS = 40, 7


@pytest.fixture
def ranking_data():
    """Ratings 0..4 and continuous scores (no ties); a few lists are all zeros."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=(LISTS, ITEMS)).astype(float)
    labels[:3] = 0.0
    scores = rng.normal(size=(LISTS, ITEMS))
    return labels, scores


def _sklearn_ndcg(gains, scores, k):
    return np.array([ndcg_score(gains[[i]], scores[[i]], k=k) for i in range(len(gains))])


@pytest.mark.parametrize("k", [None, 1, 3, 20])
def test_ndcg_linear_gain_equals_sklearn(ranking_data, k):
    labels, scores = ranking_data
    np.testing.assert_allclose(
        metrics.ndcg(labels, scores, k=k, gain="linear"), _sklearn_ndcg(labels, scores, k),
        rtol=1e-12, atol=1e-12,
    )


@pytest.mark.parametrize("k", [None, 3])
def test_ndcg_exponential_gain_equals_sklearn_on_exponential_gains(ranking_data, k):
    labels, scores = ranking_data
    expected = _sklearn_ndcg(2.0**labels - 1.0, scores, k)
    np.testing.assert_allclose(metrics.ndcg(labels, scores, k=k), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        metrics.ndcg(labels, scores, k=k, gain="exponential"), expected, rtol=1e-12, atol=1e-12
    )


def test_ndcg_hand_computed():
    # Scores put labels [1, 3, 0] in that order; ideal order is [3, 1, 0].
    labels, scores = [[3.0, 1.0, 0.0]], [[0.5, 0.9, 0.1]]
    dcg = 1 / np.log2(2) + 7 / np.log2(3)
    ideal = 7 / np.log2(2) + 1 / np.log2(3)
    assert metrics.ndcg(labels, scores)[0] == pytest.approx(dcg / ideal, abs=1e-12)
    assert metrics.ndcg(labels, scores, k=1)[0] == pytest.approx(1 / 7, abs=1e-12)


def _pad(labels, scores, extra, rng, padded_label):
    """Inserts `extra` padded items per list at random places, with the highest scores."""
    n, length = labels.shape
    width = length + extra
    out_labels = np.empty((n, width))
    out_scores = np.empty((n, width))
    mask = np.zeros((n, width), bool)
    for i in range(n):
        keep = np.sort(rng.choice(width, size=length, replace=False))
        mask[i, keep] = True
        out_labels[i, keep], out_scores[i, keep] = labels[i], scores[i]
        out_labels[i, ~mask[i]] = padded_label
        out_scores[i, ~mask[i]] = 10.0 + rng.random(extra)  # would rank first if counted
    return out_labels, out_scores, mask


@pytest.mark.parametrize("k", [None, 2, 5, 12])
def test_ndcg_ignores_padding(ranking_data, k):
    labels, scores = ranking_data
    rng = np.random.default_rng(2)
    expected = metrics.ndcg(labels, scores, k=k)
    np.testing.assert_allclose(expected, _sklearn_ndcg(2.0**labels - 1.0, scores, k), atol=1e-12)
    # Padding by label -1 (the TFRS / TF-Ranking convention, mask inferred) ...
    padded_labels, padded_scores, _ = _pad(labels, scores, 3, rng, padded_label=-1.0)
    np.testing.assert_allclose(metrics.ndcg(padded_labels, padded_scores, k=k), expected,
                               atol=1e-12)
    # ... and by an explicit mask, with padded labels that would score high if counted.
    padded_labels, padded_scores, mask = _pad(labels, scores, 3, rng, padded_label=4.0)
    np.testing.assert_allclose(
        metrics.ndcg(padded_labels, padded_scores, k=k, mask=mask), expected, atol=1e-12
    )
    assert not np.allclose(metrics.ndcg(padded_labels, padded_scores, k=k), expected)


def test_ndcg_without_positive_gain_is_zero():
    labels = np.array([[0.0, 0.0, 0.0], [0.0, -1.0, -1.0], [2.0, -1.0, 0.0]])
    scores = np.array([[0.3, 0.2, 0.1], [0.1, 0.9, 0.8], [0.1, 0.9, 0.8]])
    result = metrics.ndcg(labels, scores)
    assert result[0] == 0.0 and result[1] == 0.0
    assert result[2] == pytest.approx(1 / np.log2(3))  # the control: label 2 ranked 2nd


@pytest.mark.parametrize("gain", ["exp", "Linear"])
def test_ndcg_unknown_gain_raises(ranking_data, gain):
    labels, scores = ranking_data
    with pytest.raises(ValueError, match="gain"):
        metrics.ndcg(labels, scores, gain=gain)


def _brute_force_reciprocal_rank(labels, scores, mask, threshold):
    result = []
    for row_labels, row_scores, row_mask in zip(labels, scores, mask):
        valid = [i for i in range(len(row_labels)) if row_mask[i]]
        ranked = sorted(valid, key=lambda i: -row_scores[i])
        rank = next((r for r, i in enumerate(ranked, 1) if row_labels[i] >= threshold), None)
        result.append(0.0 if rank is None else 1.0 / rank)
    return np.array(result)


@pytest.mark.parametrize("threshold", [1.0, 4.0])
def test_reciprocal_rank_equals_brute_force(ranking_data, threshold):
    labels, scores = ranking_data
    rng = np.random.default_rng(3)
    mask = np.ones_like(labels, bool)
    np.testing.assert_allclose(
        metrics.reciprocal_rank(labels, scores, threshold=threshold),
        _brute_force_reciprocal_rank(labels, scores, mask, threshold),
    )
    padded_labels, padded_scores, mask = _pad(labels, scores, 2, rng, padded_label=4.0)
    expected = _brute_force_reciprocal_rank(padded_labels, padded_scores, mask, threshold)
    np.testing.assert_allclose(
        metrics.reciprocal_rank(padded_labels, padded_scores, threshold=threshold, mask=mask),
        expected,
    )
    # The data has lists with no relevant item, with it first, and with it lower.
    assert (expected == 0).any() and (expected == 1).any()
    assert ((expected > 0) & (expected < 1)).any()


def test_rmse_equals_sklearn():
    rng = np.random.default_rng(4)
    labels, predictions = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    assert metrics.rmse(labels, predictions) == pytest.approx(
        np.sqrt(mean_squared_error(labels.ravel(), predictions.ravel())), rel=1e-12
    )
    mask = rng.random((30, 5)) < 0.6
    assert metrics.rmse(labels, predictions, mask=mask) == pytest.approx(
        np.sqrt(mean_squared_error(labels[mask], predictions[mask])), rel=1e-12
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.ndcg([1.0, 0.0], [0.2, 0.1]),  # 1-D, not [lists, items]
        lambda: metrics.ndcg([[1.0, 0.0]], [[0.2, 0.1, 0.0]]),
        lambda: metrics.ndcg([[1.0, 0.0]], [[0.2, 0.1]], mask=[[True, True, False]]),
        lambda: metrics.reciprocal_rank([[1.0, 0.0]], [[0.2], [0.1]]),
        lambda: metrics.rmse(np.zeros(4), np.zeros((4, 1))),  # would broadcast to [4, 4]
    ],
    ids=["ndcg_1d", "ndcg_shapes", "ndcg_mask", "rr_shapes", "rmse_broadcast"],
)
def test_bad_shapes_raise(call):
    with pytest.raises(ValueError):
        call()
