"""Learning-to-rank losses over lists: RankNet (pairwise logistic), pairwise hinge, ListMLE, MSE.

Shapes: `y_true` (relevance labels, any numeric dtype) and `y_pred` (scores) are
`[B, L]`: B lists of L items (`[B, L, 1]` is accepted and squeezed). `mask` `[B, L]`
(bool, or 0/1) marks the valid items; without a mask, items with a label < 0 are
padding (the TF-Ranking / TFRS convention). Padded items take part in nothing, and
their scores may hold anything, NaN included.

Each function returns `[B]`, one loss per list. Pairs are formed inside a list only,
so a list is an example: nothing needs the other replicas under a strategy.
All pairwise terms are computed at once on `[B, L, L]` tensors (no Python loop).
"""

from common.losses import _base, _tensors

import numpy as np
import tensorflow as tf

NORMALIZATIONS = ("list_mean", "tf_ranking")


def _lists(y_true, y_pred, mask, loss):
    """(labels, scores, valid), each `[B, L]`; scores of padded items set to 0."""
    dtype = _tensors.compute_dtype(y_pred)
    labels = _tensors.to_float(y_true, dtype, "y_true", loss)
    scores = _tensors.to_float(y_pred, dtype, "y_pred", loss)
    labels, scores = _tensors.align(labels, scores, ("y_true", "y_pred"), loss)
    if labels.shape.rank == 3 and labels.shape[-1] == 1:
        labels, scores = tf.squeeze(labels, -1), tf.squeeze(scores, -1)
    if labels.shape.rank != 2:
        raise ValueError(f"{loss}: y_true and y_pred must be [B, L] lists, got {labels.shape}.")
    if mask is None:
        valid = labels >= 0
    else:
        mask = tf.convert_to_tensor(mask)
        valid = mask if mask.dtype.is_bool else tf.not_equal(mask, tf.zeros_like(mask))
        valid, _ = _tensors.align(valid, labels, ("mask", "y_true"), loss)
        valid = tf.reshape(valid, tf.shape(labels))
    # Padding may carry NaN or inf scores; zeroing them keeps NaN out of the gradient.
    scores = tf.where(valid, scores, tf.zeros_like(scores))
    return labels, scores, valid


def _pair_sums(y_true, y_pred, mask, pair_loss, loss):
    """Per list, the sum of pair_loss(s_i − s_j) over pairs with label_i > label_j, both valid.

    Returns:
      (sum `[B]`, number of pairs `[B]`, list size L as a scalar tensor).
    """
    labels, scores, valid = _lists(y_true, y_pred, mask, loss)
    is_pair = tf.logical_and(
        tf.logical_and(valid[:, :, tf.newaxis], valid[:, tf.newaxis, :]),
        labels[:, :, tf.newaxis] > labels[:, tf.newaxis, :],
    )
    difference = scores[:, :, tf.newaxis] - scores[:, tf.newaxis, :]
    losses = tf.where(is_pair, pair_loss(difference), tf.zeros_like(difference))
    count = tf.reduce_sum(tf.cast(is_pair, scores.dtype), axis=[1, 2])
    list_size = tf.cast(tf.shape(scores)[1], scores.dtype)
    return tf.reduce_sum(losses, axis=[1, 2]), count, list_size


def _ranknet_pair(difference):
    # log(1 + exp(−d)) = softplus(−d): no overflow for any d.
    return tf.nn.softplus(-difference)


def _hinge_pair(margin):
    return lambda difference: tf.nn.relu(margin - difference)


def ranknet_loss(y_true, y_pred, mask=None):
    """RankNet (pairwise logistic): per list, the mean over pairs of log(1 + exp(−(s_i − s_j))).

    Pairs are (i, j) with label_i > label_j, both valid; equal labels make no pair.
    A list without any pair (one item, all labels equal, all padding) has loss 0.

    Args:
      y_true, y_pred: `[B, L]`.
      mask: optional `[B, L]`, True for valid items; replaces the label < 0 rule.

    Returns:
      `[B]`.
    """
    total, count, _ = _pair_sums(y_true, y_pred, mask, _ranknet_pair, "ranknet_loss")
    return tf.math.divide_no_nan(total, count)


def pairwise_hinge_loss(y_true, y_pred, mask=None, margin=1.0):
    """Pairwise hinge: per list, the mean over its pairs of max(0, margin − (s_i − s_j)).

    Same pairs, shapes and empty-list rule as `ranknet_loss`. Returns `[B]`.
    """
    total, count, _ = _pair_sums(
        y_true, y_pred, mask, _hinge_pair(margin), "pairwise_hinge_loss"
    )
    return tf.math.divide_no_nan(total, count)


def listmle_loss(y_true, y_pred, mask=None):
    """ListMLE (Xia et al. 2008): per list, −log P(order by label | scores) under Plackett-Luce.

    With the valid items sorted by label, most relevant first (equal labels keep their
    order in the list: a deterministic tie-break), π(1..n):
    loss = Σ_i [log Σ_{k ≥ i} exp(s_π(k)) − s_π(i)]. One valid item gives 0, as does an
    empty list. The log-sum-exps are taken on a masked `[B, L, L]` tensor, stable for
    scores of any size.

    Args:
      y_true, y_pred: `[B, L]`.
      mask: optional `[B, L]`, True for valid items.

    Returns:
      `[B]`.
    """
    labels, scores, valid = _lists(y_true, y_pred, mask, "listmle_loss")
    padding_last = tf.fill(tf.shape(labels), tf.constant(-np.inf, labels.dtype))
    sort_key = tf.where(valid, labels, padding_last)
    order = tf.argsort(sort_key, axis=-1, direction="DESCENDING", stable=True)
    sorted_scores = tf.gather(scores, order, batch_dims=1)
    sorted_valid = tf.gather(valid, order, batch_dims=1)
    positions = tf.range(tf.shape(scores)[1])
    # tail[b, i, k]: item k enters the denominator of position i. Position i itself is
    # always in, so every row has a finite entry, also for padded positions.
    later = positions[tf.newaxis, :] >= positions[:, tf.newaxis]
    itself = tf.equal(positions[tf.newaxis, :], positions[:, tf.newaxis])
    tail = tf.logical_and(
        later[tf.newaxis], tf.logical_or(sorted_valid[:, tf.newaxis, :], itself[tf.newaxis])
    )
    tail_scores = tf.broadcast_to(sorted_scores[:, tf.newaxis, :], tf.shape(tail))
    minus_infinity = tf.fill(tf.shape(tail), tf.constant(-np.inf, scores.dtype))
    log_denominator = tf.reduce_logsumexp(tf.where(tail, tail_scores, minus_infinity), axis=-1)
    per_position = tf.where(
        sorted_valid, log_denominator - sorted_scores, tf.zeros_like(sorted_scores)
    )
    return tf.reduce_sum(per_position, axis=-1)


def listwise_mse(y_true, y_pred, mask=None):
    """Per list, the mean over its valid items of (label − score)²; 0 for an empty list.

    The pointwise baseline of the TFRS listwise tutorial, with padding masked. Returns `[B]`.
    """
    labels, scores, valid = _lists(y_true, y_pred, mask, "listwise_mse")
    squared = tf.where(valid, tf.square(labels - scores), tf.zeros_like(scores))
    return tf.math.divide_no_nan(
        tf.reduce_sum(squared, axis=-1), tf.reduce_sum(tf.cast(valid, scores.dtype), axis=-1)
    )


class _PairwiseLoss(_base.PerExampleLoss):
    """Pairwise Loss classes: masks from labels < 0, and a choice of normalisation.

    normalization:
      "list_mean": per list the mean over its pairs, then the mean over lists (the
        functions' definition).
      "tf_ranking": per list the sum over its pairs divided by the list size L (padding
        included), then the mean over lists: Σ pairs / (B·L), TF-Ranking's
        PairwiseLogisticLoss / PairwiseHingeLoss numbers (its example: labels
        [[1, 0]], scores [[0.6, 0.8]] → 0.39906943).
    """

    def __init__(self, normalization, reduction, name):
        super().__init__(reduction=reduction, name=name)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"{name}: normalization must be one of {NORMALIZATIONS}, got {normalization!r}."
            )
        self.normalization = normalization

    def _pair_loss(self):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        total, count, list_size = _pair_sums(y_true, y_pred, None, self._pair_loss(), self.name)
        if self.normalization == "tf_ranking":
            return total / list_size
        return tf.math.divide_no_nan(total, count)

    def get_config(self):
        return {**super().get_config(), "normalization": self.normalization}


@_base.register
class RankNetLoss(_PairwiseLoss):
    """Loss class of `ranknet_loss`; y_true, y_pred `[B, L]`, padding where label < 0."""

    def __init__(self, normalization="list_mean", reduction=_base.Reduction.AUTO, name="ranknet"):
        super().__init__(normalization, reduction, name)

    def _pair_loss(self):
        return _ranknet_pair


@_base.register
class PairwiseHingeLoss(_PairwiseLoss):
    """Loss class of `pairwise_hinge_loss`; y_true, y_pred `[B, L]`, padding where label < 0."""

    def __init__(
        self,
        margin=1.0,
        normalization="list_mean",
        reduction=_base.Reduction.AUTO,
        name="pairwise_hinge",
    ):
        super().__init__(normalization, reduction, name)
        self.margin = float(margin)

    def _pair_loss(self):
        return _hinge_pair(self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@_base.register
class ListMLELoss(_base.PerExampleLoss):
    """Loss class of `listmle_loss`; y_true, y_pred `[B, L]`, padding where label < 0."""

    def __init__(self, reduction=_base.Reduction.AUTO, name="listmle"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        return listmle_loss(y_true, y_pred)


@_base.register
class ListwiseMSE(_base.PerExampleLoss):
    """Loss class of `listwise_mse`; y_true, y_pred `[B, L]`, padding where label < 0."""

    def __init__(self, reduction=_base.Reduction.AUTO, name="listwise_mse"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        return listwise_mse(y_true, y_pred)
