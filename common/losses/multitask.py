"""Weighting of several task losses: uncertainty weighting (learned) and DWA (scheduled).

Both take task losses that are already reduced to scalars, e.g. by the Loss classes
of this package, which give the global-batch value on every replica.
"""

from common.losses import _base

import numpy as np
import tensorflow as tf


@_base.register
class UncertaintyWeighting(tf.keras.layers.Layer):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018).

    Holds learnable s_i = log σ_i², one per task, and returns
    total = Σ_i L_i / (2·exp(s_i)) + s_i / 2, as MTAN and LibMTL implement it.

    call(task_losses): a list of K scalar losses (or a `[K]` tensor) → scalar total.
    The layer must belong to the trained model so that its s_i are trained: in a
    custom `train_step`,

        total = self.weighting([seg_loss(y_seg, p_seg), depth_loss(y_depth, p_depth)])
        scaled = total / tf.distribute.get_strategy().num_replicas_in_sync

    (the Loss classes return the global-batch loss on every replica; dividing by the
    number of replicas, as `fit` does, makes the summed gradients the one-device ones,
    for the s_i too), or as an endpoint, `model.add_loss(weighting([...]))`, which
    `fit` scales itself.

    Args:
      num_tasks: K.
      initial_log_variance: starting s_i (0: every task weighted 1/2).
    """

    def __init__(self, num_tasks, initial_log_variance=0.0, **kwargs):
        # Loss arithmetic in float32 even under a mixed-precision policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_tasks) < 1:
            raise ValueError(f"UncertaintyWeighting: num_tasks must be >= 1, got {num_tasks}.")
        self.num_tasks = int(num_tasks)
        self.initial_log_variance = float(initial_log_variance)
        self.log_variances = self.add_weight(
            name="log_variances",
            shape=(self.num_tasks,),
            initializer=tf.keras.initializers.Constant(self.initial_log_variance),
            trainable=True,
        )

    def call(self, task_losses):
        if isinstance(task_losses, (list, tuple)):
            task_losses = tf.stack([tf.cast(loss, tf.float32) for loss in task_losses])
        task_losses = tf.cast(task_losses, tf.float32)
        if task_losses.shape.rank != 1 or task_losses.shape[0] != self.num_tasks:
            raise ValueError(
                f"UncertaintyWeighting: expected {self.num_tasks} scalar task losses, "
                f"got shape {task_losses.shape}."
            )
        return tf.reduce_sum(
            task_losses / (2.0 * tf.exp(self.log_variances)) + self.log_variances / 2.0
        )

    def get_config(self):
        config = super().get_config()
        config.update(num_tasks=self.num_tasks, initial_log_variance=self.initial_log_variance)
        return config


class DynamicWeightAverage(tf.keras.callbacks.Callback):
    """Dynamic Weight Average (Liu, Johns & Davison 2019) as loss weights set each epoch.

    For epoch t ≥ 2, λ_k = K·exp(w_k / T) / Σ_i exp(w_i / T) with
    w_k = L̄_k(t−1) / L̄_k(t−2), the ratio of task k's last two epoch-mean training
    losses; λ_k = 1 for epochs 0 and 1. The epoch means are read from `fit`'s logs,
    where Keras reports each output's unweighted loss as "<output name>_loss".

    Usage:

        dwa = DynamicWeightAverage(["segmentation_loss", "depth_loss"])
        model.compile(optimizer, loss=[DiceLoss(), MaskedL1()], loss_weights=dwa.loss_weights)
        model.fit(..., callbacks=[dwa])

    `loss_weights` are non-trainable variables read at every step, so changing them
    needs no recompilation. Create the callback inside `strategy.scope()` when the
    model is built there.

    Args:
      loss_names: the log keys of the K task losses, in the order of `loss_weights`.
      temperature: T (2 in the paper); larger T gives more even weights.
    """

    def __init__(self, loss_names, temperature=2.0):
        super().__init__()
        self.loss_names = list(loss_names)
        if not self.loss_names:
            raise ValueError("DynamicWeightAverage: loss_names is empty.")
        if not temperature > 0:
            raise ValueError(f"DynamicWeightAverage: temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.loss_weights = [
            tf.Variable(1.0, trainable=False, dtype=tf.float32, name=f"dwa_weight_{index}")
            for index in range(len(self.loss_names))
        ]
        self.epoch_losses = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        missing = [name for name in self.loss_names if name not in logs]
        if missing:
            raise KeyError(
                f"DynamicWeightAverage: {missing} not in the epoch logs; available: {sorted(logs)}."
            )
        self.epoch_losses.append([float(logs[name]) for name in self.loss_names])
        if len(self.epoch_losses) < 2:
            return
        ratios = np.asarray(self.epoch_losses[-1]) / np.asarray(self.epoch_losses[-2])
        logits = ratios / self.temperature
        weights = np.exp(logits - logits.max())
        weights = len(weights) * weights / weights.sum()
        for variable, weight in zip(self.loss_weights, weights):
            variable.assign(weight)
