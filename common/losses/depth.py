"""Depth regression losses with invalid pixels masked: L1, berHu, scale-invariant log.

Shapes: `y_true` (depth, pixels with y_true ≤ 0 or NaN are invalid: no measurement)
and `y_pred` are `[B, H, W]` or `[B, H, W, 1]` (aligned with each other; any number
of axes after the batch axis works). Each function returns `[B]`: per sample, the
mean over its valid pixels, 0 for a sample without any.
"""

from common.losses import _base, _tensors

import tensorflow as tf

# Predicted depths are floored here before the log of the scale-invariant loss.
_MIN_DEPTH = 1e-6


def _prepare(y_true, y_pred, loss):
    """(y_true, y_pred, valid): aligned, in the compute dtype, valid = y_true > 0."""
    dtype = _tensors.compute_dtype(y_pred)
    y_true = _tensors.to_float(y_true, dtype, "y_true", loss)
    y_pred = _tensors.to_float(y_pred, dtype, "y_pred", loss)
    y_true, y_pred = _tensors.align(y_true, y_pred, ("y_true", "y_pred"), loss, min_rank=2)
    return y_true, y_pred, y_true > 0


def _valid_error(y_true, y_pred, valid):
    """y_pred − y_true on valid pixels, 0 elsewhere (also where y_true is NaN)."""
    return tf.where(valid, y_pred - y_true, tf.zeros_like(y_pred))


def _sample_mean(values, valid):
    axes = list(range(1, values.shape.rank))
    count = tf.reduce_sum(tf.cast(valid, values.dtype), axis=axes)
    return tf.math.divide_no_nan(tf.reduce_sum(values, axis=axes), count)


def masked_l1(y_true, y_pred):
    """Mean absolute error over the valid pixels of each sample. `[B, H, W(, 1)]` → `[B]`."""
    y_true, y_pred, valid = _prepare(y_true, y_pred, "masked_l1")
    return _sample_mean(tf.abs(_valid_error(y_true, y_pred, valid)), valid)


def berhu_loss(y_true, y_pred):
    """Reverse Huber (berHu, Laina et al. 2016) over the valid pixels of each sample.

    berHu(e) = |e| for |e| ≤ c, (e² + c²) / (2c) beyond, with c = 0.2·max |e| over the
    valid pixels of the whole batch. c is a threshold read off the batch and gets no
    gradient. Scope of c: with several replicas in sync, the max runs over the global
    batch (one all-gather of a scalar), so every pixel is scored as on one device.
    `[B, H, W(, 1)]` → `[B]`.
    """
    y_true, y_pred, valid = _prepare(y_true, y_pred, "berhu_loss")
    abs_error = tf.abs(_valid_error(y_true, y_pred, valid))
    threshold = 0.2 * _tensors.max_over_replicas(tf.reduce_max(abs_error))
    # A batch of exact predictions has c = 0; the quadratic branch then never applies,
    # but tf.where evaluates it, so divide by a positive stand-in.
    safe_threshold = tf.maximum(threshold, tf.keras.backend.epsilon())
    berhu = tf.where(
        abs_error <= threshold,
        abs_error,
        (tf.square(abs_error) + tf.square(threshold)) / (2.0 * safe_threshold),
    )
    return _sample_mean(berhu, valid)


def scale_invariant_log_loss(y_true, y_pred, lam=0.5):
    """Scale-invariant log loss of Eigen et al. 2014 over the valid pixels of each sample.

    With d = log(y_pred) − log(y_true) and n valid pixels: (1/n)·Σd² − (λ/n²)·(Σd)².
    λ = 0 is the MSE of log depth, λ = 1 fully scale-invariant, 0.5 the paper's
    choice. `y_pred` is depth (end the network with a positive activation); it is
    floored at 1e-6 before the log so the loss stays finite. `[B, H, W(, 1)]` → `[B]`.
    """
    loss = "scale_invariant_log_loss"
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{loss}: lam must be in [0, 1], got {lam}.")
    y_true, y_pred, valid = _prepare(y_true, y_pred, loss)
    log_true = tf.math.log(tf.where(valid, y_true, tf.ones_like(y_true)))
    log_pred = tf.math.log(tf.maximum(y_pred, _MIN_DEPTH))
    difference = tf.where(valid, log_pred - log_true, tf.zeros_like(log_pred))
    mean_difference = _sample_mean(difference, valid)
    return _sample_mean(tf.square(difference), valid) - lam * tf.square(mean_difference)


@_base.register
class MaskedL1(_base.PerExampleLoss):
    """Loss class of `masked_l1`."""

    def __init__(self, reduction=_base.Reduction.AUTO, name="masked_l1"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        return masked_l1(y_true, y_pred)


@_base.register
class BerHu(_base.PerExampleLoss):
    """Loss class of `berhu_loss` (c from the global batch under several replicas)."""

    def __init__(self, reduction=_base.Reduction.AUTO, name="berhu"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        return berhu_loss(y_true, y_pred)


@_base.register
class ScaleInvariantLogLoss(_base.PerExampleLoss):
    """Loss class of `scale_invariant_log_loss`."""

    def __init__(self, lam=0.5, reduction=_base.Reduction.AUTO, name="scale_invariant_log_loss"):
        super().__init__(reduction=reduction, name=name)
        self.lam = float(lam)

    def call(self, y_true, y_pred):
        return scale_invariant_log_loss(y_true, y_pred, self.lam)

    def get_config(self):
        return {**super().get_config(), "lam": self.lam}
