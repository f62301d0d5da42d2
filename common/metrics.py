"""Ranking metrics computed in NumPy on whole test splits, per list (intervals: common.intervals).

Ranking inputs are `[N, L]` arrays (N lists of L items); `mask` `[N, L]` marks the valid
items (default: labels >= 0, the TFRS / TF-Ranking padding convention). Ties in the
scores are broken by position in the list, so shuffle items within lists when scores
can tie (a constant-score baseline would otherwise inherit the list's order).
"""

from __future__ import annotations

import numpy as np


def _ranking_inputs(labels, scores, mask):
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(
            f"labels and scores must both be [lists, items]; got {labels.shape} and "
            f"{scores.shape}"
        )
    mask = labels >= 0 if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape:
        raise ValueError(f"mask shape {mask.shape} differs from labels {labels.shape}")
    return np.where(mask, labels, 0.0), scores, mask


def ndcg(labels, scores, k: int | None = None, mask=None, gain: str = "exponential"):
    """NDCG@k of each list, `[N]`.

    gain "exponential": 2^label − 1 (Burges et al.; TF-Ranking), "linear": label
    (scikit-learn's `ndcg_score`). Discount 1 / log2(rank + 1). A list without any
    positive gain scores 0. Padded items never count.
    """
    if gain not in ("exponential", "linear"):
        raise ValueError(f"gain must be 'exponential' or 'linear', not {gain!r}")
    labels, scores, mask = _ranking_inputs(labels, scores, mask)
    gains = np.exp2(labels) - 1.0 if gain == "exponential" else labels
    gains = np.where(mask, gains, 0.0)
    length = labels.shape[1] if k is None else min(k, labels.shape[1])
    discounts = 1.0 / np.log2(np.arange(2, length + 2))
    # Padded items sort last whatever their score.
    order = np.argsort(np.where(mask, -scores, np.inf), axis=1, kind="stable")[:, :length]
    dcg = (np.take_along_axis(gains, order, axis=1) * discounts).sum(axis=1)
    ideal = (-np.sort(-gains, axis=1)[:, :length] * discounts).sum(axis=1)
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def reciprocal_rank(labels, scores, threshold: float = 1.0, mask=None):
    """1 / rank of the first item with label >= threshold, per list `[N]` (0 if none)."""
    labels, scores, mask = _ranking_inputs(labels, scores, mask)
    order = np.argsort(np.where(mask, -scores, np.inf), axis=1, kind="stable")
    relevant = np.take_along_axis((labels >= threshold) & mask, order, axis=1)
    first = relevant.argmax(axis=1)
    return np.where(relevant.any(axis=1), 1.0 / (first + 1), 0.0)


def rmse(labels, predictions, mask=None) -> float:
    """Root mean squared error over the valid entries."""
    labels = np.asarray(labels, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ")
    mask = np.ones(labels.shape, bool) if mask is None else np.asarray(mask, bool)
    return float(np.sqrt(np.mean((labels[mask] - predictions[mask]) ** 2)))
