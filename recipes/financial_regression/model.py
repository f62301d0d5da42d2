"""The regression network (MLP or linear AR), its loss, and the closed-form baselines.

Shapes: features `[B, F]` (standardized), target and prediction `[B, 1]` (standardized).
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from common.losses import AdaptiveHuber, Huber

LOSSES = ("mse", "huber", "adaptive_huber")
MODELS = ("mlp", "linear")


class Regressor(tf.keras.Model):
    """`network`: features `[B, F]` → prediction `[B, 1]`.

    With the adaptive Huber loss the model also holds the `AdaptiveHuber` layer, so its
    δ and scale are among the model's trainable variables and `fit` learns them with the
    network, through the Huber density's negative log-likelihood.
    """

    def __init__(
        self, network: tf.keras.Model, adaptive_huber: AdaptiveHuber | None = None,
        delta_learning_rate: float = 0.05,
    ):
        super().__init__()
        self.network = network
        self.adaptive_huber = adaptive_huber
        if adaptive_huber is not None:
            # δ and scale get their own, faster optimizer: at the network's rate Adam moves
            # them ~lr per step, far from the NLL optimum after a few hundred steps.
            self.delta_optimizer = tf.keras.optimizers.Adam(delta_learning_rate)

    def call(self, features, training=False):
        return self.network(features, training=training)

    def train_step(self, data):
        """Keras' step; with the adaptive Huber loss, δ and scale step with their own
        optimizer. Under a strategy both optimizers sum the replicas' gradients."""
        if self.adaptive_huber is None:
            return super().train_step(data)
        features, target = data
        with tf.GradientTape() as tape:
            prediction = self(features, training=True)
            loss = self.compute_loss(features, target, prediction)
        network_variables = self.network.trainable_variables
        loss_variables = self.adaptive_huber.trainable_variables
        gradients = tape.gradient(loss, network_variables + loss_variables)
        split = len(network_variables)
        self.optimizer.apply_gradients(zip(gradients[:split], network_variables))
        self.delta_optimizer.apply_gradients(zip(gradients[split:], loss_variables))
        return self.compute_metrics(features, target, prediction, None)

    def adaptive_huber_loss(self, y_true, y_pred):
        """Mean NLL of the global batch (the layer gathers across replicas); `fit`
        divides it by the number of replicas like any AUTO-reduced loss."""
        return self.adaptive_huber((y_true, y_pred))

    def delta_and_scale(self) -> tuple[float, float] | None:
        if self.adaptive_huber is None:
            return None
        return float(self.adaptive_huber.delta), float(self.adaptive_huber.scale)


def build_network(kind: str, num_features: int, hidden_units=(64, 64)) -> tf.keras.Model:
    """`mlp`: ReLU layers of `hidden_units` then a linear output; `linear`: the AR model."""
    if kind not in MODELS:
        raise ValueError(f"--model={kind!r}: choose one of {MODELS}")
    inputs = tf.keras.Input(shape=(num_features,), name="features")
    hidden = inputs
    if kind == "mlp":
        for units in hidden_units:
            hidden = tf.keras.layers.Dense(units, activation="relu")(hidden)
    outputs = tf.keras.layers.Dense(1, name="prediction")(hidden)
    return tf.keras.Model(inputs, outputs, name=kind)


def build(
    kind: str, num_features: int, loss: str, huber_delta: float, learning_rate: float,
    delta_learning_rate: float = 0.05, jit_compile: bool = False,
) -> Regressor:
    """A compiled `Regressor`. Call inside `strategy.scope()`.

    mse: Keras' mean squared error; huber: `common.losses.Huber(huber_delta)`;
    adaptive_huber: δ and scale learned (Adam at `delta_learning_rate`), starting from
    δ = `huber_delta`, scale 1.
    """
    if loss not in LOSSES:
        raise ValueError(f"--loss={loss!r}: choose one of {LOSSES}")
    adaptive = AdaptiveHuber(initial_delta=huber_delta) if loss == "adaptive_huber" else None
    model = Regressor(build_network(kind, num_features), adaptive, delta_learning_rate)
    loss_fn = {
        "mse": tf.keras.losses.MeanSquaredError(),
        "huber": Huber(delta=huber_delta),
        "adaptive_huber": model.adaptive_huber_loss,
    }[loss]
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=loss_fn,
        jit_compile=jit_compile,
    )
    model(tf.zeros((1, num_features)))  # build the weights inside the scope
    return model


class DeltaLog(tf.keras.callbacks.Callback):
    """Records the adaptive Huber δ and scale at the start and after every epoch."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[float]] = []

    def on_train_begin(self, logs=None):
        if self.model.delta_and_scale() is not None and not self.rows:
            self.rows.append([0, *self.model.delta_and_scale()])

    def on_epoch_end(self, epoch, logs=None):
        values = self.model.delta_and_scale()
        if values is not None:
            self.rows.append([epoch + 1, *values])


def least_squares(features: np.ndarray, target: np.ndarray):
    """Closed-form least squares with an intercept (NumPy lstsq): returns predict(x)."""
    design = np.column_stack([np.ones(len(features)), features])
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(x)), x]) @ coefficients

    predict.coefficients = coefficients
    return predict
