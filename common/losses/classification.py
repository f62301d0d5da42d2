"""Binary classification losses for imbalanced data: weighted BCE, focal, soft precision.

Shapes: `y_true` (0/1 labels, any numeric or bool dtype; soft labels in [0, 1] work
too) and `y_pred` are `[B, ..., D]` (`[B]` is read as `[B, 1]`). `y_pred` holds
probabilities, or logits with `from_logits=True`, which is the stable choice: from
probabilities the logs need clipping to [eps, 1 − eps], as Keras does, and saturated
probabilities then get no gradient.
"""

from common.losses import _base, _tensors

import tensorflow as tf

_EPSILON = 1e-7  # Keras' backend.epsilon(), so the probability path matches Keras' BCE.


def _prepare(y_true, y_pred, loss):
    dtype = _tensors.compute_dtype(y_pred)
    y_true = _tensors.to_float(y_true, dtype, "y_true", loss)
    y_pred = _tensors.to_float(y_pred, dtype, "y_pred", loss)
    return _tensors.align(y_true, y_pred, ("y_true", "y_pred"), loss, min_rank=2)


def _crossentropy(y_true, y_pred, pos_weight, from_logits):
    """Per element −[w·y·log p + (1 − y)·log(1 − p)]: exact from logits, else clipped as
    Keras does."""
    if from_logits:
        # w·y·softplus(−x) + (1 − y)·softplus(x), with softplus(−x) = softplus(x) − x: one
        # softplus, as cheap as Keras' sigmoid_cross_entropy_with_logits, finite for any x.
        positive_term = pos_weight * y_true
        return tf.nn.softplus(y_pred) * (1.0 - y_true + positive_term) - positive_term * y_pred
    probability = tf.clip_by_value(y_pred, _EPSILON, 1.0 - _EPSILON)
    return -(
        pos_weight * y_true * tf.math.log(probability + _EPSILON)
        + (1.0 - y_true) * tf.math.log(1.0 - probability + _EPSILON)
    )


def weighted_binary_crossentropy(y_true, y_pred, pos_weight=1.0, from_logits=False):
    """−[w·y·log p + (1 − y)·log(1 − p)], mean over the last axis.

    With `pos_weight` w = 1 it equals `tf.keras.losses.binary_crossentropy`. From
    logits it is computed as w·y·softplus(−x) + (1 − y)·softplus(x): finite for any x.

    Args:
      y_true, y_pred: `[B, ..., D]`.
      pos_weight: weight of the positive class (> 0), e.g. #negatives / #positives.

    Returns:
      `[B, ...]`.
    """
    y_true, y_pred = _prepare(y_true, y_pred, "weighted_binary_crossentropy")
    pos_weight = _tensors.check_positive(pos_weight, "pos_weight", "weighted_binary_crossentropy")
    loss = _crossentropy(y_true, y_pred, tf.cast(pos_weight, y_pred.dtype), from_logits)
    return tf.reduce_mean(loss, axis=-1)


def binary_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False):
    """Focal loss with class balancing, per example (Lin et al. 2017).

    Equals `tf.keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True,
    alpha=alpha, gamma=gamma, from_logits=from_logits)` with no reduction:
    mean over the last axis of w·(1 − p_t)^γ·BCE, p_t = y·p + (1 − y)·(1 − p),
    w = y·α + (1 − y)·(1 − α). From logits the BCE is exact for any logit, and for γ < 1
    the factor's gradient at p_t = 1 is taken as 0 (it is infinite), so loss and
    gradient stay finite for any logit and any γ ≥ 0.

    Args:
      y_true, y_pred: `[B, ..., D]`.
      alpha: weight of the positive class, in [0, 1].
      gamma: focusing parameter, ≥ 0.

    Returns:
      `[B, ...]`.
    """
    loss_name = "binary_focal_crossentropy"
    y_true, y_pred = _prepare(y_true, y_pred, loss_name)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{loss_name}: alpha must be in [0, 1], got {alpha}.")
    if not gamma >= 0.0:
        raise ValueError(f"{loss_name}: gamma must be >= 0, got {gamma}.")
    bce = _crossentropy(y_true, y_pred, 1.0, from_logits)
    probability = tf.sigmoid(y_pred) if from_logits else y_pred
    one_minus_p_t = 1.0 - (y_true * probability + (1.0 - y_true) * (1.0 - probability))
    if gamma >= 1.0:
        focal_factor = tf.pow(one_minus_p_t, gamma)
    else:
        # pow's gradient at a zero base is γ·0^(γ−1), 0·inf for γ < 1: keep the base off 0.
        positive = one_minus_p_t > 0.0
        safe_base = tf.where(positive, one_minus_p_t, tf.ones_like(one_minus_p_t))
        zero_power = 1.0 if gamma == 0 else 0.0
        focal_factor = tf.where(
            positive, tf.pow(safe_base, gamma), tf.zeros_like(safe_base) + zero_power
        )
    balance = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
    return tf.reduce_mean(balance * focal_factor * bce, axis=-1)


def _probabilities(y_pred, from_logits):
    return tf.sigmoid(y_pred) if from_logits else y_pred


def _soft_counts(y_true, probability, sample_weight, loss):
    """Local (Σ w·y·p, Σ w·p) over all elements; w is per example, `[B]` or `[B, 1]`."""
    if sample_weight is not None:
        weights = _tensors.weights_like(sample_weight, probability[..., 0], loss)
        probability = probability * tf.expand_dims(weights, -1)
    return tf.reduce_sum(y_true * probability), tf.reduce_sum(probability)


def soft_precision(y_true, y_pred, from_logits=False, sample_weight=None):
    """Differentiable precision of the batch: Σ y·p / (Σ p + ε), ε = 1e-7.

    Soft counts: true positives Σ y·p, predicted positives Σ p = soft TP + soft FP.
    Batch-level: one number for the whole batch. Scope: with several replicas in sync,
    the sums run over the global batch (one all-reduce), so the value is the one-device
    value on every replica. Alone it can be gamed by predicting few positives: pair it
    with a BCE term (`BCEWithSoftPrecision`). Report true precision as a metric.

    Args:
      y_true, y_pred: `[B, ..., D]`; all elements count.
      sample_weight: optional `[B]` weights of the examples in the counts.

    Returns:
      A scalar in [0, 1].
    """
    y_true, y_pred = _prepare(y_true, y_pred, "soft_precision")
    true_positive, predicted_positive = _soft_counts(
        y_true, _probabilities(y_pred, from_logits), sample_weight, "soft_precision"
    )
    counts = _tensors.sum_over_replicas(tf.stack([true_positive, predicted_positive]))
    return counts[0] / (counts[1] + _EPSILON)


@_base.register
class WeightedBinaryCrossentropy(_base.PerExampleLoss):
    """Loss class of `weighted_binary_crossentropy`."""

    def __init__(
        self,
        pos_weight=1.0,
        from_logits=False,
        reduction=_base.Reduction.AUTO,
        name="weighted_binary_crossentropy",
    ):
        super().__init__(reduction=reduction, name=name)
        self.pos_weight = float(
            _tensors.check_positive(float(pos_weight), "pos_weight", "WeightedBinaryCrossentropy")
        )
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        return weighted_binary_crossentropy(y_true, y_pred, self.pos_weight, self.from_logits)

    def get_config(self):
        return {
            **super().get_config(),
            "pos_weight": self.pos_weight,
            "from_logits": self.from_logits,
        }


@_base.register
class BinaryFocalCrossentropy(_base.PerExampleLoss):
    """Loss class of `binary_focal_crossentropy` (class balancing always on)."""

    def __init__(
        self,
        alpha=0.25,
        gamma=2.0,
        from_logits=False,
        reduction=_base.Reduction.AUTO,
        name="binary_focal_crossentropy",
    ):
        super().__init__(reduction=reduction, name=name)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        return binary_focal_crossentropy(y_true, y_pred, self.alpha, self.gamma, self.from_logits)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "gamma": self.gamma,
            "from_logits": self.from_logits,
        }


@_base.register
class BCEWithSoftPrecision(_base.BatchLoss):
    """Weighted BCE + precision_weight·(1 − soft precision): the fraud recipe's loss.

    Batch-level (the precision term is one number for the batch). Both terms are taken
    over the global batch: the BCE as the sample-weighted sum over the number of
    examples, the precision from sample-weighted soft counts, with one all-reduce of
    the four sums when several replicas are in sync.

    Args:
      pos_weight: weight of the positive class in the BCE (> 0).
      precision_weight: weight of the (1 − soft precision) term (≥ 0).
      from_logits: whether `y_pred` holds logits.
    """

    def __init__(
        self,
        pos_weight=1.0,
        precision_weight=1.0,
        from_logits=False,
        name="bce_with_soft_precision",
    ):
        super().__init__(name=name)
        self.pos_weight = float(
            _tensors.check_positive(float(pos_weight), "pos_weight", "BCEWithSoftPrecision")
        )
        if not precision_weight >= 0:
            raise ValueError(
                f"BCEWithSoftPrecision: precision_weight must be >= 0, got {precision_weight}."
            )
        self.precision_weight = float(precision_weight)
        self.from_logits = bool(from_logits)

    def batch_loss(self, y_true, y_pred, sample_weight):
        y_true, y_pred = _prepare(y_true, y_pred, self.name)
        bce = weighted_binary_crossentropy(y_true, y_pred, self.pos_weight, self.from_logits)
        if sample_weight is not None:
            bce = bce * _tensors.weights_like(sample_weight, bce, self.name)
        true_positive, predicted_positive = _soft_counts(
            y_true, _probabilities(y_pred, self.from_logits), sample_weight, self.name
        )
        sums = _tensors.sum_over_replicas(
            tf.stack(
                [
                    tf.reduce_sum(bce),
                    tf.cast(tf.size(bce), bce.dtype),
                    true_positive,
                    predicted_positive,
                ]
            )
        )
        mean_bce = tf.math.divide_no_nan(sums[0], sums[1])
        precision = sums[2] / (sums[3] + _EPSILON)
        return mean_bce + self.precision_weight * (1.0 - precision)

    def get_config(self):
        return {
            **super().get_config(),
            "pos_weight": self.pos_weight,
            "precision_weight": self.precision_weight,
            "from_logits": self.from_logits,
        }
