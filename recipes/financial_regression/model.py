"""The regression network (`build`: an MLP with a linear skip, or the linear AR model), its
training model and loss (`regressor`), the served model (`serving`), its predictions
(`predict`), and the closed-form least-squares baseline.

Shapes: raw features `[B, F]` (float32, as `data` gives them); the network standardizes
them itself (a `Normalization` layer holding the training rows' mean and variance) and
predicts the standardized target `[B, 1]`; the served model rescales that to the target's
own units `[B, 1]`. Every layer is a Keras built-in, so `model.keras` loads with plain
`tf.keras.models.load_model` and no custom objects.
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common.losses import AdaptiveHuber, Huber

import numpy as np
import tensorflow as tf

LOSSES = ("mse", "huber", "adaptive_huber")
MODELS = ("mlp", "linear")


def whitening(features: np.ndarray) -> np.ndarray:
    """PCA whitening `[F, F]` of standardized training features `[N, F]`: z @ W has the
    identity covariance. Directions of (near) zero variance, e.g. a one-hot column that
    is the sum of others, are dropped (their columns of W are 0)."""
    values, vectors = np.linalg.eigh(np.cov(features, rowvar=False))
    kept = values > 1e-8 * values.max()
    return vectors * np.where(kept, 1.0 / np.sqrt(np.where(kept, values, 1.0)), 0.0)


def build(kind: str, train_features: np.ndarray, hidden_units=(32,),
                  dropout: float = 0.2, weight_decay: float = 1e-4,
                  name: str = "") -> tf.keras.Model:
    """Raw features `[B, F]` → standardized prediction `[B, 1]`, standardized with the
    statistics of `train_features` `[N, F]` (the training rows only).

    `linear`: the AR model, one Dense unit on the whitened features. `mlp`: the same
    linear unit plus ReLU layers of `hidden_units` on the standardized features, with
    dropout and an L2 penalty (`weight_decay`) on their kernels. The linear skip keeps the
    linear model inside the MLP's reach: the hidden layers only have to learn what is not
    linear, and the penalty pulls them towards it rather than towards a constant.

    Why whiten the linear unit's input: lags of one series are strongly correlated, and
    gradient descent on correlated inputs crawls along the ill-conditioned directions (the
    linear AR model stopped 0.003 R² short of least squares on NYSE); on whitened inputs
    the loss surface is round and the same loop reaches the least-squares fit.
    """
    if kind not in MODELS:
        raise ValueError(f"--model={kind!r}: choose one of {MODELS}")
    mean, variance = train_features.mean(axis=0), train_features.var(axis=0)
    standardize = tf.keras.layers.Normalization(mean=mean, variance=variance)
    inputs = tf.keras.Input(shape=(len(mean),), name="features")
    standardized = standardize(inputs)
    rotation = tf.keras.layers.Dense(len(mean), use_bias=False, trainable=False,
                                     name="whitening")
    outputs = tf.keras.layers.Dense(1, name="linear")(rotation(standardized))
    std = np.sqrt(np.where(variance > 0, variance, 1.0))
    rotation.set_weights([whitening((train_features - mean) / std).astype(np.float32)])
    if kind == "mlp":
        penalty = tf.keras.regularizers.L2(weight_decay) if weight_decay else None
        hidden = standardized
        for units in hidden_units:
            hidden = tf.keras.layers.Dense(units, activation="relu",
                                           kernel_regularizer=penalty)(hidden)
            hidden = tf.keras.layers.Dropout(dropout)(hidden)
        nonlinear = tf.keras.layers.Dense(1, kernel_regularizer=penalty)(hidden)
        outputs = tf.keras.layers.Add(name="prediction")([outputs, nonlinear])
    return tf.keras.Model(inputs, outputs, name=name or kind)


class Regressor(tf.keras.Model):
    """The training model: `network` (features `[B, F]` → `[B, 1]`), and with the adaptive
    Huber loss the `AdaptiveHuber` layer, so that δ and scale are trainable variables of
    the model and are learned through the Huber density's negative log-likelihood."""

    def __init__(self, network: tf.keras.Model, adaptive_huber: AdaptiveHuber | None = None,
                 delta_learning_rate: float = 0.05):
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


def regressor(network: tf.keras.Model, loss: str, huber_delta: float, learning_rate: float,
              delta_learning_rate: float = 0.05, jit_compile: bool = False) -> Regressor:
    """A compiled `Regressor` around `network`. Call inside `strategy.scope()`.

    mse: Keras' mean squared error; huber: `common.losses.Huber(huber_delta)`;
    adaptive_huber: δ and scale learned (Adam at `delta_learning_rate`), starting from
    δ = `huber_delta`, scale 1. δ is in standardized target units.
    """
    if loss not in LOSSES:
        raise ValueError(f"--loss={loss!r}: choose one of {LOSSES}")
    adaptive = AdaptiveHuber(initial_delta=huber_delta) if loss == "adaptive_huber" else None
    model = Regressor(network, adaptive, delta_learning_rate)
    loss_fn = {"mse": tf.keras.losses.MeanSquaredError(), "huber": Huber(delta=huber_delta),
               "adaptive_huber": model.adaptive_huber_loss}[loss]
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss=loss_fn,
                  jit_compile=jit_compile)
    model(tf.zeros((1, network.input_shape[-1])))  # build the weights inside the scope
    return model


def plateau(val_losses: list[float], patience: int, tolerance: float) -> dict:
    """Replays validation losses (oldest first) through the stopping rule: the best epoch
    (a gain of more than `tolerance` over the best so far), the epochs since it (`wait`),
    the learning-rate cuts (one every `patience // 4` epochs of `wait`), and whether
    training has stopped (`converged`: `wait` reached `patience`, the loss no longer falls)."""
    best, best_epoch, wait, cuts = float("inf"), 0, 0, 0
    for epoch, loss in enumerate(val_losses, start=1):
        if loss < best - tolerance:
            best, best_epoch, wait = loss, epoch, 0
        else:
            wait += 1
            cuts += wait % max(1, patience // 4) == 0
    return {"best_epoch": best_epoch, "best_val_loss": best, "epochs": len(val_losses),
            "wait": wait, "learning_rate_cuts": cuts, "converged": wait >= patience}


class ValidationStopping(tf.keras.callbacks.Callback):
    """Stops on the validation loss (`plateau`), resumably: its state is a function of the
    epochs' validation losses, those logged before a restart (`earlier`) included, and
    the best weights are kept in a file, so a resumed network stops where an
    uninterrupted one would. The learning rate is `learning_rate`·0.3^cuts.

    `keep_best`: restore the best validation epoch's weights at the end (early stopping,
    for networks that can overfit); otherwise keep the last weights, which the falling
    learning rate has settled at the training optimum (a linear model with many more
    days than features: there the best validation epoch reflects how the validation
    years differ from the training years, not overfitting, and least squares is the
    optimum to reach).
    """

    def __init__(self, best_weights_path: str, earlier: list[float], patience: int,
                 tolerance: float, learning_rate: float, keep_best: bool = True):
        super().__init__()
        self.path, self.losses, self.keep_best = best_weights_path, list(earlier), keep_best
        self.patience, self.tolerance, self.base_rate = patience, tolerance, learning_rate

    def _state(self) -> dict:
        state = plateau(self.losses, self.patience, self.tolerance)
        self.model.optimizer.learning_rate.assign(
            self.base_rate * 0.3 ** state["learning_rate_cuts"])
        return state

    def on_train_begin(self, logs=None):
        self._state()

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float(logs["val_loss"]))
        state = self._state()
        if state["best_epoch"] == len(self.losses):
            self.model.save_weights(self.path)
        self.model.stop_training = state["converged"]

    def on_train_end(self, logs=None):
        if self.losses and self.keep_best:
            self.model.load_weights(self.path)


def serving(networks: list[tf.keras.Model], target_mean: float, target_std: float,
            offsets: list[float]):
    """(served, signature): the Keras model from raw features `[B, F]` to the prediction
    in target units `[B, 1]`, and the SavedModel's signature (raw features `[B, F]`
    float32 → {"prediction": [B]}).

    The prediction is the mean of `networks` (an ensemble over seeds), each shifted by its
    `offsets` entry (standardized units) and rescaled with the training rows' target mean
    and standard deviation.
    """
    inputs = tf.keras.Input(shape=(networks[0].input_shape[-1],), name="features")
    outputs = [tf.keras.layers.Rescaling(target_std, target_mean + target_std * offset,
                                         name=f"to_target_units_{index}")(network(inputs))
               for index, (network, offset) in enumerate(zip(networks, offsets))]
    if len(outputs) > 1:
        outputs = [tf.keras.layers.Average(name="ensemble_mean")(outputs)]
    served = tf.keras.Model(inputs, outputs[0], name="volatility_regressor")

    @tf.function(input_signature=[tf.TensorSpec([None, served.input_shape[-1]], tf.float32,
                                                name="features")])
    def serve(features):
        return {"prediction": served(features, training=False)[:, 0]}

    return served, serve


def predict(served: tf.keras.Model, features: np.ndarray) -> np.ndarray:
    """Predictions `[N]` float64 of a model from `serving` for raw features `[N, F]`."""
    return served(features.astype(np.float32)).numpy()[:, 0].astype(np.float64)


def least_squares(features: np.ndarray, target: np.ndarray):
    """Closed-form least squares with an intercept (NumPy lstsq): returns predict(x)."""
    design = np.column_stack([np.ones(len(features)), features])
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(x)), x]) @ coefficients

    predict.coefficients = coefficients
    return predict
