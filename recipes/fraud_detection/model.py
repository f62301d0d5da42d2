"""The fraud network, its losses, and the serving function on raw feature columns.

The network takes the raw columns as data.py gives them, {"numeric": float32 [B, F],
<categorical column>: string [B]}, standardises the numeric ones (a Normalization layer
holding the training split's mean and variance) and one-hot encodes the categorical ones
(StringLookup with the training split's levels) inside its graph, and outputs one logit
per row `[B, 1]`: an MLP, or with `kind="linear"` logistic-regression-shaped (one Dense).
Only Keras built-in layers: model.keras loads with `import common` alone.

The constrained objectives (precision at recall, recall at precision) train through
`common.losses.constrained.DualAscentModel`, which wraps the network and holds the
Lagrange multiplier; the network alone is what is saved and served.
"""

from __future__ import annotations

import math

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common.losses import (
    BCEWithSoftPrecision,
    BinaryFocalCrossentropy,
    DualAscentModel,
    PrecisionAtRecall,
    RecallAtPrecision,
    WeightedBinaryCrossentropy,
)

import numpy as np
import tensorflow as tf

LOSSES = ("weighted_bce", "focal", "bce_soft_precision", "precision_at_recall",
          "recall_at_precision", "bce")
CONSTRAINED = ("precision_at_recall", "recall_at_precision")


def build(train_features: dict, kind: str = "mlp", hidden_units=(32,),
                  weight_decay: float = 0.0, initial_bias: float = 0.0) -> tf.keras.Model:
    """Raw features (dict, see the module docstring) → logit `[B, 1]`, float32.

    `train_features` are the training split's raw columns: they set the standardisation
    and the categorical levels. `initial_bias` starts the output at the prior log-odds
    the loss sees, so the first steps do not spend themselves on the class balance.
    `weight_decay` (L2 on the kernels) may be a scalar tf.Variable, changed between fits
    (such a network is not saved: its penalty is a Python function).
    """
    numeric = train_features["numeric"]
    inputs = {"numeric": tf.keras.Input((numeric.shape[1],), name="numeric")}
    normalise = tf.keras.layers.Normalization(
        # float64 sums: float32 ones overflow on many rows of large (≤ 1e18) values.
        mean=numeric.mean(axis=0, dtype=np.float64),
        variance=np.maximum(numeric.var(axis=0, dtype=np.float64), 1e-12),
        name="standardise")
    columns = [normalise(inputs["numeric"])]
    for name, values in train_features.items():
        if name == "numeric":
            continue
        inputs[name] = tf.keras.Input((), dtype=tf.string, name=name)
        lookup = tf.keras.layers.StringLookup(vocabulary=sorted(set(values.tolist())),
                                              output_mode="one_hot", name=f"one_hot_{name}")
        columns.append(lookup(inputs[name]))
    hidden = columns[0] if len(columns) == 1 else tf.keras.layers.Concatenate()(columns)
    if isinstance(weight_decay, tf.Variable):  # the cross-validation's: set without a retrace
        def regularizer(kernel):
            return weight_decay * tf.reduce_sum(tf.square(kernel))
    else:
        regularizer = tf.keras.regularizers.l2(weight_decay) if weight_decay else None
    if kind == "mlp":
        for units in hidden_units:
            hidden = tf.keras.layers.Dense(units, activation="relu",
                                           kernel_regularizer=regularizer)(hidden)
    elif kind != "linear":
        raise ValueError(f"--model={kind}: expected mlp or linear")
    logits = tf.keras.layers.Dense(
        1, kernel_regularizer=regularizer, dtype="float32", name="logit",
        bias_initializer=tf.keras.initializers.Constant(initial_bias))(hidden)
    return tf.keras.Model(inputs, logits, name=f"fraud_{kind}")


def make_loss(name: str, pos_weight: float, *, precision_weight: float = 1.0,
              focal_alpha: float = 0.25, focal_gamma: float = 2.0, target_recall: float = 0.5,
              target_precision: float = 0.2, dual_learning_rate: float = 0.1,
              surrogate: str = "hinge") -> tf.keras.losses.Loss:
    """The Keras loss for `--loss=name`, from logits (common.losses classes).

    Each is exact over the global batch under a strategy. The constrained ones start their
    multiplier at `pos_weight`, where precision at recall's Lagrangian is weighted BCE's
    cost balance (positives weighted λ against negatives 1).
    """
    if name in ("bce", "weighted_bce"):
        return WeightedBinaryCrossentropy(pos_weight=1.0 if name == "bce" else pos_weight,
                                          from_logits=True, name=name)
    if name == "focal":
        return BinaryFocalCrossentropy(alpha=focal_alpha, gamma=focal_gamma, from_logits=True)
    if name == "bce_soft_precision":
        return BCEWithSoftPrecision(pos_weight=pos_weight, precision_weight=precision_weight,
                                    from_logits=True)
    if name == "precision_at_recall":
        return PrecisionAtRecall(target_recall, multiplier=pos_weight,
                                 dual_learning_rate=dual_learning_rate, surrogate=surrogate)
    if name == "recall_at_precision":
        return RecallAtPrecision(target_precision, multiplier=1.0,
                                 dual_learning_rate=dual_learning_rate, surrogate=surrogate)
    raise ValueError(f"--loss={name}: expected one of {', '.join(LOSSES)}")


def prior_logit(loss: str, positives: int, negatives: int, pos_weight: float,
                focal_alpha: float = 0.25) -> float:
    """The constant logit that about minimises `loss` before any feature is used.

    Weighted BCE: log(w·P / N); plain BCE: log(P / N); focal: its class weights α, 1 − α.
    The constrained objectives start at 0, their thresholds' natural origin.
    """
    if loss in CONSTRAINED:
        return 0.0
    weight = {"bce": 1.0, "focal": focal_alpha / (1 - focal_alpha)}.get(loss, pos_weight)
    return math.log(weight * positives / negatives)


def trainable(network: tf.keras.Model, loss: tf.keras.losses.Loss, learning_rate: float,
              jit_compile: bool = False) -> tf.keras.Model:
    """The compiled model `fit` trains: the network, or its DualAscentModel for λ."""
    model = DualAscentModel(network) if isinstance(loss, (PrecisionAtRecall,
                                                          RecallAtPrecision)) else network
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss=loss,
                  jit_compile=jit_compile)
    return model


def predict(network: tf.keras.Model, features: dict, batch_size: int = 4096) -> np.ndarray:
    """Probabilities `[N]` (the logits' sigmoid, computed stably in float64)."""
    logits = network.predict(features, batch_size=batch_size, verbose=0)
    return 0.5 * (1.0 + np.tanh(0.5 * logits.reshape(-1).astype(np.float64)))


def serving(network: tf.keras.Model):
    """The SavedModel signature: raw columns in, {"score": probability [N]} out."""
    specs = [tf.TensorSpec(spec.shape, spec.dtype, name=name)
             for name, spec in network.input.items()]
    names = list(network.input)

    @tf.function(input_signature=specs)
    def serve(*columns):
        logits = network(dict(zip(names, columns)), training=False)
        return {"score": tf.sigmoid(tf.cast(logits, tf.float32))[:, 0]}

    return serve
