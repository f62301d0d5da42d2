"""Regression losses: weighted MSE, MSE plus relative error, Huber, and Huber with learned delta.

Shapes: `y_true` and `y_pred` are `[B, ..., D]` (`[B]` is read as `[B, 1]`; `[B]`
against `[B, 1]` is aligned, any other mismatch is an error). Every function returns
the per-example loss `[B, ...]`, the mean over the last axis, in float32 (float64
for float64 predictions).
"""

import math

from common.losses import _base, _tensors

import numpy as np
import tensorflow as tf


def _error(y_true, y_pred, loss):
    """y_true and y_pred aligned and cast to the compute dtype."""
    dtype = _tensors.compute_dtype(y_pred)
    y_true = _tensors.to_float(y_true, dtype, "y_true", loss)
    y_pred = _tensors.to_float(y_pred, dtype, "y_pred", loss)
    return _tensors.align(y_true, y_pred, ("y_true", "y_pred"), loss, min_rank=2)


def weighted_mse(y_true, y_pred):
    """Mean over the last axis of e²·(1 + e²), e = y_true − y_pred.

    The quartic term weighs large errors more than MSE does. `[B, ..., D]` → `[B, ...]`.
    """
    y_true, y_pred = _error(y_true, y_pred, "weighted_mse")
    squared = tf.square(y_true - y_pred)
    return tf.reduce_mean(squared * (1.0 + squared), axis=-1)


def mse_plus_relative_error(y_true, y_pred, weight=0.5, eps=1e-7):
    """MSE + weight·mean(|e| / (|y_true| + eps)), both means over the last axis.

    `[B, ..., D]` → `[B, ...]`. `eps` keeps targets of 0 finite (their relative term
    is then |e| / eps: keep such targets out, or use a larger eps).
    """
    y_true, y_pred = _error(y_true, y_pred, "mse_plus_relative_error")
    error = y_true - y_pred
    relative = tf.abs(error) / (tf.abs(y_true) + eps)
    return tf.reduce_mean(tf.square(error), axis=-1) + weight * tf.reduce_mean(relative, axis=-1)


def _huber_rho(error, delta):
    """Huber's ρ_δ(e): e²/2 for |e| ≤ δ, δ·|e| − δ²/2 beyond."""
    abs_error = tf.abs(error)
    return tf.where(
        abs_error <= delta, 0.5 * tf.square(error), delta * abs_error - 0.5 * tf.square(delta)
    )


def huber(y_true, y_pred, delta=1.0):
    """Huber loss, the same values as `tf.keras.losses.huber`: mean over the last axis of ρ_δ(e).

    Args:
      y_true, y_pred: `[B, ..., D]`.
      delta: > 0, a float or a tensor (scalar or `[D]`); checked when traced if its
        value is known then, otherwise by a run-time assert.

    Returns:
      `[B, ...]`.
    """
    y_true, y_pred = _error(y_true, y_pred, "huber")
    delta = _tensors.check_positive(delta, "delta", "huber")
    return tf.reduce_mean(_huber_rho(y_pred - y_true, tf.cast(delta, y_pred.dtype)), axis=-1)


def huber_log_normalizer(delta):
    """log Z(δ) with Z(δ) = √(2π)·erf(δ/√2) + 2·exp(−δ²/2)/δ, finite for every δ > 0.

    Z is the integral of exp(−ρ_δ(u)) over the real line. Below δ = 1 the form
    log(2/δ) − δ²/2 + log1p(√(π/2)·δ·erf(δ/√2)·exp(δ²/2)) avoids the overflow of 2/δ for
    tiny δ; above 1 the direct form avoids the overflow of exp(δ²/2).
    """
    small = delta < 1.0
    # Each branch only ever sees arguments where it is finite, so tf.where's unused
    # branch cannot inject NaN into the gradient.
    small_delta = tf.where(small, delta, tf.ones_like(delta))
    large_delta = tf.where(small, tf.ones_like(delta), delta)
    small_value = (
        math.log(2.0)
        - tf.math.log(small_delta)
        - 0.5 * tf.square(small_delta)
        + tf.math.log1p(
            math.sqrt(math.pi / 2.0)
            * small_delta
            * tf.math.erf(small_delta / math.sqrt(2.0))
            * tf.exp(0.5 * tf.square(small_delta))
        )
    )
    large_value = tf.math.log(
        math.sqrt(2.0 * math.pi) * tf.math.erf(large_delta / math.sqrt(2.0))
        + 2.0 * tf.exp(-0.5 * tf.square(large_delta)) / large_delta
    )
    return tf.where(small, small_value, large_value)


def huber_nll(y_true, y_pred, delta, scale):
    """Negative log-likelihood of the Huber density: ρ_δ(e/scale) + log(scale) + log Z(δ).

    The density is exp(−ρ_δ(e/scale)) / (scale·Z(δ)). Unlike the Huber loss itself,
    whose value falls as δ falls (a trainable δ minimising it runs to 0 and below),
    the normaliser log Z(δ) grows without bound as δ → 0, so δ and the scale can be
    learned by minimising this NLL: at its optimum, Student-t(3) noise of unit scale
    gives δ ≈ 0.97, Laplace ≈ 1.08, Gaussian δ → ∞ (the MSE limit).

    Args:
      y_true, y_pred: `[B, ..., D]`.
      delta, scale: > 0, floats or tensors (scalar or `[D]`).

    Returns:
      `[B, ...]`: the mean over the last axis.
    """
    y_true, y_pred = _error(y_true, y_pred, "huber_nll")
    dtype = y_pred.dtype
    delta = tf.cast(_tensors.check_positive(delta, "delta", "huber_nll"), dtype)
    scale = tf.cast(_tensors.check_positive(scale, "scale", "huber_nll"), dtype)
    nll = (
        _huber_rho((y_pred - y_true) / scale, delta)
        + tf.math.log(scale)
        + huber_log_normalizer(delta)
    )
    return tf.reduce_mean(nll, axis=-1)


def _inverse_softplus(value: float) -> float:
    return float(value + np.log(-np.expm1(-value)))


@_base.register
class AdaptiveHuber(tf.keras.layers.Layer):
    """Huber loss whose δ (and scale) are learned, by minimising `huber_nll`.

    Keras 2 trains only variables that belong to the model's layers, so this loss is a
    layer: put it in the model that trains. δ = softplus(raw_delta) and
    scale = softplus(raw_scale) stay positive; the NLL's normaliser keeps δ from
    collapsing to 0.

    call((y_true, y_pred)) or call((y_true, y_pred, sample_weight)), with y_true and
    y_pred `[B, ..., D]`, returns the scalar mean NLL of the global batch (the same
    value on every replica; see `common.losses` on replicas). Typical use, a training
    model with the target as an input (the inference model is the same network
    without this layer):

        target = tf.keras.Input(shape=(1,), name="target")
        prediction = network(features)
        train_model = tf.keras.Model([features, target], prediction)
        train_model.add_loss(AdaptiveHuber()((target, prediction)))
        train_model.compile(optimizer)   # no `loss`: the layer is the loss

    or, in a custom `train_step`, `loss = self.adaptive_huber((y, y_pred))` divided by
    `num_replicas_in_sync` before taking gradients.

    Args:
      initial_delta, initial_scale: starting values (> 0).
      learn_delta, learn_scale: whether each is trained; a fixed one stays at its
        initial value.
    """

    def __init__(
        self, initial_delta=1.0, initial_scale=1.0, learn_delta=True, learn_scale=True, **kwargs
    ):
        # The loss is computed in float32 even under a mixed-precision policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        for name, value in (("initial_delta", initial_delta), ("initial_scale", initial_scale)):
            if not value > 0:
                raise ValueError(f"AdaptiveHuber: {name} must be > 0, got {value}.")
        self.initial_delta = float(initial_delta)
        self.initial_scale = float(initial_scale)
        self.learn_delta = bool(learn_delta)
        self.learn_scale = bool(learn_scale)
        self.raw_delta = self.add_weight(
            name="raw_delta",
            shape=(),
            initializer=tf.keras.initializers.Constant(_inverse_softplus(self.initial_delta)),
            trainable=self.learn_delta,
        )
        self.raw_scale = self.add_weight(
            name="raw_scale",
            shape=(),
            initializer=tf.keras.initializers.Constant(_inverse_softplus(self.initial_scale)),
            trainable=self.learn_scale,
        )

    @property
    def delta(self):
        return tf.nn.softplus(self.raw_delta)

    @property
    def scale(self):
        return tf.nn.softplus(self.raw_scale)

    def call(self, inputs):
        y_true, y_pred, *sample_weight = inputs
        losses = huber_nll(y_true, y_pred, self.delta, self.scale)
        return _tensors.global_mean(losses, sample_weight[0] if sample_weight else None, self.name)

    def get_config(self):
        config = super().get_config()
        config.update(
            initial_delta=self.initial_delta,
            initial_scale=self.initial_scale,
            learn_delta=self.learn_delta,
            learn_scale=self.learn_scale,
        )
        return config


@_base.register
class WeightedMSE(_base.PerExampleLoss):
    """Loss class of `weighted_mse`."""

    def __init__(self, reduction=_base.Reduction.AUTO, name="weighted_mse"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        return weighted_mse(y_true, y_pred)


@_base.register
class MSEPlusRelativeError(_base.PerExampleLoss):
    """Loss class of `mse_plus_relative_error`."""

    def __init__(
        self, weight=0.5, eps=1e-7, reduction=_base.Reduction.AUTO, name="mse_plus_relative_error"
    ):
        super().__init__(reduction=reduction, name=name)
        self.weight = float(weight)
        self.eps = float(eps)

    def call(self, y_true, y_pred):
        return mse_plus_relative_error(y_true, y_pred, self.weight, self.eps)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "eps": self.eps}


@_base.register
class Huber(_base.PerExampleLoss):
    """Loss class of `huber`; `delta` stays in the config (Keras 3's Huber dropped it)."""

    def __init__(self, delta=1.0, reduction=_base.Reduction.AUTO, name="huber"):
        super().__init__(reduction=reduction, name=name)
        self.delta = float(_tensors.check_positive(float(delta), "delta", "Huber"))

    def call(self, y_true, y_pred):
        return huber(y_true, y_pred, self.delta)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


@_base.register
class HuberNLL(_base.PerExampleLoss):
    """Loss class of `huber_nll` with fixed δ and scale (for learned ones, `AdaptiveHuber`)."""

    def __init__(self, delta=1.0, scale=1.0, reduction=_base.Reduction.AUTO, name="huber_nll"):
        super().__init__(reduction=reduction, name=name)
        self.delta = float(_tensors.check_positive(float(delta), "delta", "HuberNLL"))
        self.scale = float(_tensors.check_positive(float(scale), "scale", "HuberNLL"))

    def call(self, y_true, y_pred):
        return huber_nll(y_true, y_pred, self.delta, self.scale)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta, "scale": self.scale}
