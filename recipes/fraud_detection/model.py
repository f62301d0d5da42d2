"""The fraud network, its losses, and how its scores become an operating point.

The network is a small MLP on standardised tabular features that outputs one logit per
row (`[B, 1]`); every loss works from logits. `choose_threshold` picks the operating
point on the validation split for a target recall, and `operating_point` reads a split
at that threshold: precision, recall and the confusion counts, next to PR-AUC and ROC-AUC
(scikit-learn).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from common.losses import (
    BCEWithSoftPrecision,
    BinaryFocalCrossentropy,
    WeightedBinaryCrossentropy,
)

LOSSES = ("bce", "weighted_bce", "focal", "bce_soft_precision")


def build_model(num_features: int, hidden_units=(64, 32), dropout: float = 0.0,
                initial_bias: float = 0.0) -> tf.keras.Model:
    """MLP: features `[B, F]` → logit `[B, 1]` (float32 even under mixed precision).

    `initial_bias` starts the output at the prior log-odds the loss sees, so the first
    steps do not spend themselves learning the class balance (as keras.io does).
    `dropout` is 0 by default: each replica draws its own dropout masks, so with it a
    2-replica run cannot reproduce the one-device run, which the recipe's test checks.
    """
    inputs = tf.keras.Input((num_features,), name="features")
    hidden = inputs
    for units in hidden_units:
        hidden = tf.keras.layers.Dense(units, activation="relu")(hidden)
        if dropout:
            hidden = tf.keras.layers.Dropout(dropout)(hidden)
    logits = tf.keras.layers.Dense(
        1, bias_initializer=tf.keras.initializers.Constant(initial_bias), dtype="float32",
        name="logit")(hidden)
    return tf.keras.Model(inputs, logits, name="fraud_mlp")


def make_loss(name: str, pos_weight: float, precision_weight: float = 1.0,
              focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> tf.keras.losses.Loss:
    """The Keras loss for `--loss=name`, from logits (common.losses classes).

    Each takes its mean over the global batch, so it is exact under a strategy.

    bce: plain binary cross-entropy (pos_weight 1). weighted_bce: positives weighted by
    `pos_weight`. focal: class-balanced focal loss. bce_soft_precision: weighted BCE +
    precision_weight · (1 − soft precision), the soft precision taken over the global
    batch (common.losses gathers it across replicas).
    """
    if name in ("bce", "weighted_bce"):
        return WeightedBinaryCrossentropy(pos_weight=1.0 if name == "bce" else pos_weight,
                                          from_logits=True, name=name)
    if name == "focal":
        return BinaryFocalCrossentropy(alpha=focal_alpha, gamma=focal_gamma, from_logits=True)
    if name == "bce_soft_precision":
        return BCEWithSoftPrecision(pos_weight=pos_weight, precision_weight=precision_weight,
                                    from_logits=True)
    raise ValueError(f"--loss={name}: expected one of {', '.join(LOSSES)}")


def prior_logit(loss: str, positives: int, negatives: int, pos_weight: float,
                focal_alpha: float = 0.25) -> float:
    """The constant logit that minimises `loss` before any feature is used (approximately).

    Weighted BCE's constant optimum is log(w·P / N); plain BCE's is log(P / N); focal is
    started with its class-balancing weights, alpha for positives and 1 − alpha for negatives.
    """
    weight = {"bce": 1.0, "focal": focal_alpha / (1 - focal_alpha)}.get(loss, pos_weight)
    return math.log(weight * positives / negatives)


def probabilities(model: tf.keras.Model, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Scores in [0, 1] `[N]` (the sigmoid of the logits, computed stably in float64)."""
    logits = model.predict(x, batch_size=batch_size, verbose=0).reshape(-1).astype(np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """The largest threshold t such that flagging scores ≥ t reaches `target_recall`.

    With P positives that is the k-th highest positive score, k = ceil(target · P): the
    fewest flagged rows (so the best precision) among thresholds that reach the recall.
    """
    positive_scores = np.sort(np.asarray(scores)[np.asarray(y_true) == 1])[::-1]
    if positive_scores.size == 0:
        raise ValueError("cannot choose a threshold: the validation split has no positives")
    needed = max(1, math.ceil(target_recall * positive_scores.size - 1e-9))
    return float(positive_scores[needed - 1])


def operating_point(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """PR-AUC, ROC-AUC, and precision, recall and confusion counts at `threshold`."""
    y_true = np.asarray(y_true).astype(int)
    flagged = (np.asarray(scores) >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y_true, flagged, labels=[0, 1]).ravel())
    return {
        "pr_auc": float(average_precision_score(y_true, scores)),
        "roc_auc": float(roc_auc_score(y_true, scores)),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "threshold": float(threshold),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }
