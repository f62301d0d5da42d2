"""Constrained objectives of Eban et al. 2017 ("Scalable Learning of Non-Decomposable
Objectives", AISTATS): precision at a recall, recall at a precision, precision at a share
of flagged rows, each as a Lagrangian of hinge (or logistic) bounds on the counts.

Counts at the threshold 0 of the logit f (the output layer's bias is the learned
threshold b of the paper: f(x) = g(x) − b), with surrogates that bound the 0-1 losses:

    missed positive  1[f < 0]  ≤ ℓ⁺(f) = max(0, 1 − f)     (logistic: softplus(−f) / log 2)
    flagged row      1[f ≥ 0]  ≤ ℓ⁻(f) = max(0, 1 + f)     (logistic: softplus(f) / log 2)
    TP ≥ TPₗ = Σ₊ (1 − ℓ⁺),   FP ≤ FPᵤ = Σ₋ ℓ⁻,   flagged ≤ Σ ℓ⁻

The objectives and their Lagrangians (λ ≥ 0, N rows, |Y⁺| positives):

    precision at recall α:  min FPᵤ s.t. TPₗ ≥ α|Y⁺|
        L = FPᵤ + λ(α|Y⁺| − TPₗ);  per row: y·λ·(ℓ⁺ − (1 − α)) + (1 − y)·ℓ⁻
    recall at precision β:  max TPₗ s.t. (1 − β)TPₗ ≥ β·FPᵤ
        L = −TPₗ + λ(β·FPᵤ − (1 − β)TPₗ);  per row: y·(1 + λ(1 − β))(ℓ⁺ − 1) + (1 − y)·λβℓ⁻
    precision at share κ (k = κN flagged rows):  max TPₗ s.t. Σ ℓ⁻ ≤ κN
        L = −TPₗ + λ(Σ ℓ⁻ − κN);  per row: y·(ℓ⁺ − 1) + λ(ℓ⁻ − κ)

Each Loss class returns the per-row Lagrangian at its fixed `multiplier` (a weighted
surrogate loss), so it fits `compile` like any loss. To train λ, wrap the network in
`DualAscentModel`: its `train_step` takes a descent step on the weights and, on the same
batch, a projected ascent step on λ,

    λ ← max(0, λ + dual_learning_rate · violation),   violation = (∂L̄/∂λ) / π̂,

where L̄ is the batch mean of the Lagrangian and π̂ the batch's share of positives: the
constraint's shortfall counted in the batch's positives (for precision at recall it is
α − TPₗ/|Y⁺|). λ is a non-trainable weight of the model: it is saved in `.keras` files and
checkpoints (BackupAndRestore) and restored with them.

Scope: the Lagrangian is per row, reduced over the global batch like the other Loss classes;
the violation comes from sums all-reduced over the replicas, so every replica takes the
same step on λ, and a 2-replica step equals the one-device step (tested).
"""

from __future__ import annotations

import math

from common.losses import _base, _tensors

import tensorflow as tf

SURROGATES = ("hinge", "logistic")
_LOG2 = math.log(2.0)


def surrogate_bounds(logits, surrogate: str = "hinge"):
    """(ℓ⁺(f), ℓ⁻(f)): upper bounds of 1[f < 0] and 1[f ≥ 0], elementwise, shape of f."""
    if surrogate == "hinge":
        return tf.nn.relu(1.0 - logits), tf.nn.relu(1.0 + logits)
    if surrogate == "logistic":  # divided by log 2 so that the bound is 1 at f = 0
        return tf.nn.softplus(-logits) / _LOG2, tf.nn.softplus(logits) / _LOG2
    raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}.")


def _prepare(y_true, y_pred, loss):
    """Labels and logits `[B]` (from `[B]` or `[B, 1]`) in the compute dtype."""
    dtype = _tensors.compute_dtype(y_pred)
    y_true = _tensors.to_float(y_true, dtype, "y_true", loss)
    y_pred = _tensors.to_float(y_pred, dtype, "y_pred", loss)
    y_true, y_pred = _tensors.align(y_true, y_pred, ("y_true", "y_pred"), loss, min_rank=2)
    if y_pred.shape.rank != 2 or y_pred.shape[-1] != 1:
        raise ValueError(f"{loss}: expected one logit per row, [B] or [B, 1]; got y_pred "
                         f"of shape {y_pred.shape}.")
    return y_true[:, 0], y_pred[:, 0]


def _as_dtype(value, dtype):
    """`value` in `dtype`; a Python number converted directly (tf.cast rounds it to float32)."""
    if hasattr(value, "dtype"):
        return tf.cast(value, dtype)
    return tf.constant(value, dtype)


def _check_fraction(value, name, loss):
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{loss}: {name} must be in (0, 1], got {value}.")
    return float(value)


def precision_at_recall(y_true, y_pred, multiplier, target_recall, surrogate="hinge"):
    """Per-row Lagrangian of precision at recall ≥ `target_recall` (α), logits `[B]`/`[B, 1]`.

    y·λ·(ℓ⁺(f) − (1 − α)) + (1 − y)·ℓ⁻(f); its sum is FPᵤ + λ(α|Y⁺| − TPₗ). Returns `[B]`.
    """
    y, f = _prepare(y_true, y_pred, "precision_at_recall")
    missed, flagged = surrogate_bounds(f, surrogate)
    multiplier = _as_dtype(multiplier, f.dtype)
    return y * multiplier * (missed - (1.0 - target_recall)) + (1.0 - y) * flagged


def recall_at_precision(y_true, y_pred, multiplier, target_precision, surrogate="hinge"):
    """Per-row Lagrangian of recall at precision ≥ `target_precision` (β). Returns `[B]`.

    y·(1 + λ(1 − β))·(ℓ⁺(f) − 1) + (1 − y)·λβ·ℓ⁻(f); its sum is −TPₗ + λ(βFPᵤ − (1 − β)TPₗ).
    """
    y, f = _prepare(y_true, y_pred, "recall_at_precision")
    missed, flagged = surrogate_bounds(f, surrogate)
    multiplier = _as_dtype(multiplier, f.dtype)
    beta = target_precision
    return (y * (1.0 + multiplier * (1.0 - beta)) * (missed - 1.0)
            + (1.0 - y) * multiplier * beta * flagged)


def precision_at_share(y_true, y_pred, multiplier, flagged_share, surrogate="hinge"):
    """Per-row Lagrangian of precision when a share κ of the rows is flagged. Returns `[B]`.

    y·(ℓ⁺(f) − 1) + λ·(ℓ⁻(f) − κ); its sum is −TPₗ + λ(Σ ℓ⁻ − κN). With N scored rows,
    κ = k / N is precision at the top k (e.g. k = 33 of ISLR's 1,000 Caravan test rows).
    """
    y, f = _prepare(y_true, y_pred, "precision_at_share")
    missed, flagged = surrogate_bounds(f, surrogate)
    multiplier = _as_dtype(multiplier, f.dtype)
    return y * (missed - 1.0) + multiplier * (flagged - flagged_share)


class ConstrainedLoss(_base.PerExampleLoss):
    """Base of the constrained objectives: the Lagrangian at a multiplier, and its slack.

    `multiplier` is λ for a plain `compile` (fixed) and the starting λ of a
    `DualAscentModel` (trained). `dual_learning_rate` is the step of the ascent on λ.
    """

    _function = None  # the per-row Lagrangian of the subclass

    def __init__(self, target, multiplier, dual_learning_rate, surrogate, reduction, name):
        super().__init__(reduction=reduction, name=name)
        if surrogate not in SURROGATES:
            raise ValueError(f"{type(self).__name__}: surrogate must be one of {SURROGATES}, "
                             f"got {surrogate!r}.")
        if not multiplier >= 0:
            raise ValueError(f"{type(self).__name__}: multiplier must be >= 0, got {multiplier}.")
        if not dual_learning_rate >= 0:
            raise ValueError(f"{type(self).__name__}: dual_learning_rate must be >= 0, got "
                             f"{dual_learning_rate}.")
        self.target = target
        self.multiplier = float(multiplier)
        self.dual_learning_rate = float(dual_learning_rate)
        self.surrogate = surrogate

    def call(self, y_true, y_pred):
        return self.lagrangian(y_true, y_pred, self.multiplier)

    def lagrangian(self, y_true, y_pred, multiplier):
        """Per-row Lagrangian `[B]` at `multiplier`."""
        return type(self)._function(y_true, y_pred, multiplier, self.target, self.surrogate)

    def violation(self, y_true, y_pred, sample_weight=None):
        """(∂L̄/∂λ) / π̂ over the global batch: > 0 while the constraint's bound is not met.

        L̄ is linear in λ, so ∂L̄/∂λ is L̄(1) − L̄(0), taken from the same global sums
        (all-reduced across replicas) as the loss. 0 for a batch without positives.
        """
        y, _ = _prepare(y_true, y_pred, self.name)
        slope = self.lagrangian(y_true, y_pred, 1.0) - self.lagrangian(y_true, y_pred, 0.0)
        weights = tf.ones_like(y) if sample_weight is None else (
            _tensors.weights_like(sample_weight, y, self.name))
        sums = _tensors.sum_over_replicas(tf.stack(
            [tf.reduce_sum(weights * slope), tf.reduce_sum(weights * y)]))
        return tf.stop_gradient(tf.math.divide_no_nan(sums[0], sums[1]))

    def get_config(self):
        return {**super().get_config(), "multiplier": self.multiplier,
                "dual_learning_rate": self.dual_learning_rate, "surrogate": self.surrogate}


@_base.register
class PrecisionAtRecall(ConstrainedLoss):
    """Maximise precision subject to recall ≥ `target_recall` (Eban et al. 2017, §3)."""

    _function = staticmethod(precision_at_recall)

    def __init__(self, target_recall=0.8, multiplier=1.0, dual_learning_rate=0.1,
                 surrogate="hinge", reduction=_base.Reduction.AUTO,
                 name="precision_at_recall"):
        target = _check_fraction(target_recall, "target_recall", "PrecisionAtRecall")
        super().__init__(target, multiplier, dual_learning_rate, surrogate, reduction, name)

    def get_config(self):
        return {**super().get_config(), "target_recall": self.target}


@_base.register
class RecallAtPrecision(ConstrainedLoss):
    """Maximise recall subject to precision ≥ `target_precision` (Eban et al. 2017, §3)."""

    _function = staticmethod(recall_at_precision)

    def __init__(self, target_precision=0.5, multiplier=1.0, dual_learning_rate=0.1,
                 surrogate="hinge", reduction=_base.Reduction.AUTO,
                 name="recall_at_precision"):
        target = _check_fraction(target_precision, "target_precision", "RecallAtPrecision")
        super().__init__(target, multiplier, dual_learning_rate, surrogate, reduction, name)

    def get_config(self):
        return {**super().get_config(), "target_precision": self.target}


@_base.register
class PrecisionAtShare(ConstrainedLoss):
    """Maximise precision when a share `flagged_share` of the rows is flagged (precision@k)."""

    _function = staticmethod(precision_at_share)

    def __init__(self, flagged_share=0.05, multiplier=1.0, dual_learning_rate=0.1,
                 surrogate="hinge", reduction=_base.Reduction.AUTO,
                 name="precision_at_share"):
        target = _check_fraction(flagged_share, "flagged_share", "PrecisionAtShare")
        super().__init__(target, multiplier, dual_learning_rate, surrogate, reduction, name)

    def get_config(self):
        return {**super().get_config(), "flagged_share": self.target}


@_base.register
class DualAscentModel(tf.keras.Model):
    """Trains `network` on a `ConstrainedLoss`: descent on its weights, ascent on λ.

    network: a model mapping inputs to one logit per row `[B, 1]`. Compile with a
    ConstrainedLoss; λ (`self.multiplier`, a non-trainable float32 weight) starts at the
    loss's `multiplier` and after each step moves by the loss's `dual_learning_rate` times
    the constraint's violation on that batch, projected onto λ ≥ 0. `fit` logs the epoch
    means of "loss" (the Lagrangian), "multiplier" and "violation". Serve `network`.

        model = DualAscentModel(network)   # any strategy; exact under several replicas
        model.compile(tf.keras.optimizers.Adam(1e-3), loss=PrecisionAtRecall(0.8))
    """

    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.multiplier = self.add_weight(
            name="lagrange_multiplier", shape=(), dtype=tf.float32, trainable=False,
            initializer="zeros", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        # Logged as epoch means through metrics: a plain tensor returned by the step would
        # be summed over the replicas by `fit`.
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")  # the Lagrangian
        self.multiplier_tracker = tf.keras.metrics.Mean(name="multiplier")
        self.violation_tracker = tf.keras.metrics.Mean(name="violation")

    @property
    def metrics(self):
        compiled = self.compiled_metrics.metrics if self.compiled_metrics is not None else []
        return [self.loss_tracker, self.multiplier_tracker, self.violation_tracker, *compiled]

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        if not isinstance(loss, ConstrainedLoss):
            raise ValueError("DualAscentModel: compile needs a ConstrainedLoss "
                             f"(PrecisionAtRecall, RecallAtPrecision, PrecisionAtShare), got "
                             f"{loss!r}.")
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        self.constrained_loss = loss
        self.multiplier.assign(loss.multiplier)

    def _lagrangian(self, y, logits, sample_weight):
        losses = self.constrained_loss.lagrangian(y, logits, self.multiplier)
        return _tensors.global_mean(losses, sample_weight, self.constrained_loss.name)

    def _logs(self, y, logits, sample_weight, loss, training):
        self.loss_tracker.update_state(loss)
        self.compiled_metrics.update_state(y, logits, sample_weight)
        return {metric.name: metric.result() for metric in self.metrics
                if training or metric not in (self.multiplier_tracker, self.violation_tracker)}

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            loss = self._lagrangian(y, logits, sample_weight)
            total = loss + tf.add_n(self.losses) if self.losses else loss
            # Every replica holds the global-batch loss: divide as `fit` does for losses.
            scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        violation = self.constrained_loss.violation(y, logits, sample_weight)
        rate = self.constrained_loss.dual_learning_rate
        self.multiplier.assign(tf.maximum(0.0, self.multiplier + rate * violation))
        self.multiplier_tracker.update_state(self.multiplier)
        self.violation_tracker.update_state(violation)
        return self._logs(y, logits, sample_weight, loss, training=True)

    def test_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        logits = self(x, training=False)
        return self._logs(y, logits, sample_weight, self._lagrangian(y, logits, sample_weight),
                          training=False)

    def get_config(self):
        return {"network": tf.keras.utils.serialize_keras_object(self.network),
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        network = tf.keras.utils.deserialize_keras_object(config.pop("network"))
        return cls(network, **config)
