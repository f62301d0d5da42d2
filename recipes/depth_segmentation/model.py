"""Model: a small U-Net with one shared encoder and one decoder per task, and the
multi-task train step that weights the per-task losses.

  input   image [B, H, W, 3] uint8, H and W multiples of 2**(levels + 1)
  output  {"segmentation": [B, H, W, C] class probabilities (float32),
           "depth": [B, H, W] metres (float32)}
  targets {"labels": [B, H, W] int32, -1 = unlabelled; "depth": [B, H, W], 0 = invalid}

A single-task baseline is the same network with one decoder (`tasks=("segmentation",)`
or `("depth",)`): same encoder, same decoder width, same train step.
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from common import losses

TASKS = ("segmentation", "depth")
WEIGHTINGS = ("static", "uncertainty", "dwa")
DEPTH_LOSSES = {
    "l1": losses.masked_l1,
    "berhu": losses.berhu_loss,
    "silog": losses.scale_invariant_log_loss,
}


@tf.keras.utils.register_keras_serializable("depth_segmentation")
class PositiveDepth(tf.keras.layers.Layer):
    """[B, H, W, 1] log-depth -> [B, H, W] depth = scale * exp(x), in float32.

    Predicting the logarithm keeps depth positive (silog needs it) and makes the output
    layer's steps relative; `scale` (the training set's median depth) is where it starts.
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        log_depth = tf.clip_by_value(tf.cast(inputs[..., 0], tf.float32), -6.0, 6.0)
        return self.scale * tf.exp(log_depth)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _conv_block(x, filters: int, name: str):
    for index in range(2):
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                   kernel_initializer="he_normal", name=f"{name}_conv{index}")(x)
    return x


def build(num_classes: int, tasks=TASKS, *, base_filters: int = 12, levels: int = 3,
          depth_scale: float = 3.0, **train_options) -> "MultiTaskUNet":
    """The U-Net: encoder of `levels` poolings (base_filters · 2^level channels), one
    decoder per task with skip connections from the shared encoder.

    No normalisation layers: BatchNorm statistics would be per replica, and the
    2-replica step would no longer equal the one-device step.
    """
    tasks = tuple(tasks)
    if not tasks or any(task not in TASKS for task in tasks):
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")
    image = tf.keras.Input((None, None, 3), dtype=tf.uint8, name="image")
    x = tf.keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(image)
    # A stride-2 stem: the U-Net works at half resolution, 4x cheaper on a CPU; each
    # head upsamples its last features back to full resolution.
    x = tf.keras.layers.Conv2D(base_filters, 3, strides=2, padding="same", activation="relu",
                               kernel_initializer="he_normal", name="stem")(x)
    skips = []
    for level in range(levels):
        x = _conv_block(x, base_filters * 2**level, f"encoder{level}")
        skips.append(x)
        x = tf.keras.layers.MaxPooling2D(name=f"pool{level}")(x)
    shared = _conv_block(x, base_filters * 2**levels, "bottleneck")
    outputs = {}
    for task in tasks:
        y = shared
        for level in reversed(range(levels)):
            filters = base_filters * 2**level
            y = tf.keras.layers.Conv2DTranspose(filters, 2, strides=2,
                                                name=f"{task}_up{level}")(y)
            y = tf.keras.layers.Concatenate(name=f"{task}_skip{level}")([y, skips[level]])
            y = _conv_block(y, filters, f"{task}_decoder{level}")
        y = tf.keras.layers.UpSampling2D(interpolation="bilinear", name=f"{task}_full")(y)
        if task == "segmentation":
            y = tf.keras.layers.Conv2D(num_classes, 1, name="segmentation_logits")(y)
            outputs[task] = tf.keras.layers.Activation("softmax", dtype="float32",
                                                       name="segmentation")(y)
        else:
            y = tf.keras.layers.Conv2D(1, 1, name="log_depth")(y)
            outputs[task] = PositiveDepth(depth_scale, name="depth")(y)
    return MultiTaskUNet(image, outputs, num_classes=num_classes, tasks=tasks,
                         **train_options)


class MultiTaskUNet(tf.keras.Model):
    """The functional U-Net with a train step that sees each task's loss.

    weighting:
      static       total = Σ w_k L_k with fixed `static_weights`
      uncertainty  common.losses.UncertaintyWeighting: Σ L_k / (2 exp(s_k)) + s_k / 2,
                   s_k learned with the network (Kendall et al. 2018)
      dwa          total = Σ λ_k L_k, λ set after each epoch from the epoch-mean task
                   losses by `self.dwa`, common.losses.DynamicWeightAverage (Liu et al.
                   2019), a callback that `fit` must be given
    Per-task losses are means over this replica's pixels/examples. Each replica holds an
    equal share of the global batch (drop_remainder, batch divisible by the replicas) and
    the optimizer sums gradients over replicas, so the replica's total is divided by the
    replica count: the step then follows the gradient of the weighted total of the
    *global* batch means, also for the uncertainty term s_k / 2, which is not linear in
    the batch.
    """

    def __init__(self, *args, num_classes: int, tasks=TASKS, weighting: str = "static",
                 static_weights=(1.0, 1.0), depth_loss: str = "l1",
                 cross_entropy_weight: float = 0.0, dwa_temperature: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"--weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if depth_loss not in DEPTH_LOSSES:
            raise ValueError(f"--depth_loss must be one of {tuple(DEPTH_LOSSES)}, "
                             f"got {depth_loss!r}")
        self.num_classes, self.tasks = num_classes, tuple(tasks)
        self.multi_task = len(self.tasks) > 1
        self.weighting = weighting if self.multi_task else "static"
        self.depth_loss_fn = DEPTH_LOSSES[depth_loss]
        self.cross_entropy_weight = float(cross_entropy_weight)
        weights = [float(dict(zip(TASKS, static_weights))[task]) for task in self.tasks]
        if not self.multi_task:
            weights = [1.0]  # one loss: its weight would only rescale the learning rate
        self.static_weights = [tf.Variable(weight, trainable=False, dtype=tf.float32,
                                           name=f"weight_{task}")
                               for weight, task in zip(weights, self.tasks)]
        if self.weighting == "dwa":
            # A callback, not a layer: its λ variables are not part of the model's
            # checkpoint (a backup is written before the callback updates them); a
            # resumed run rebuilds them from the logged epochs (see train.py).
            self.dwa = losses.DynamicWeightAverage([f"{task}_loss" for task in self.tasks],
                                                   temperature=dwa_temperature)
        if self.weighting == "uncertainty":
            self.uncertainty = losses.UncertaintyWeighting(num_tasks=len(self.tasks),
                                                           name="uncertainty_weighting")
        self.trackers = {name: tf.keras.metrics.Mean(name=name)
                         for name in ["loss", *(f"{task}_loss" for task in self.tasks)]}

    @property
    def metrics(self):
        return list(self.trackers.values())  # reset by fit at the start of each epoch

    def task_losses(self, targets: dict, outputs: dict) -> dict:
        """{task: scalar}: each task's per-example loss averaged over the batch."""
        result = {}
        if "segmentation" in self.tasks:
            labels = tf.cast(targets["labels"], tf.int32)
            probabilities = outputs["segmentation"]
            per_example = losses.dice_loss(labels, probabilities)  # [B]; -1 pixels left out
            if self.cross_entropy_weight:
                one_hot = tf.one_hot(labels, self.num_classes)  # -1 -> all zeros
                log_p = tf.math.log(tf.clip_by_value(probabilities, 1e-7, 1.0))
                pixel_ce = -tf.reduce_sum(one_hot * log_p, axis=[1, 2, 3])
                labelled = tf.reduce_sum(tf.cast(labels >= 0, tf.float32), axis=[1, 2])
                per_example += self.cross_entropy_weight * tf.math.divide_no_nan(pixel_ce,
                                                                                 labelled)
            result["segmentation"] = tf.reduce_mean(per_example)
        if "depth" in self.tasks:
            true_depth = tf.cast(targets["depth"], tf.float32)
            result["depth"] = tf.reduce_mean(self.depth_loss_fn(true_depth, outputs["depth"]))
        return result

    def current_weights(self) -> dict:
        """{"weight_<task>": effective weight of the task's loss} (and log-variances)."""
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # fit sums what the replicas return: read the weights once, cross-replica.
            return context.merge_call(lambda strategy: self._weights_now())
        return self._weights_now()

    def _weights_now(self) -> dict:
        if self.weighting == "uncertainty":
            log_variance = tf.reshape(tf.identity(self.uncertainty.log_variances), [-1])
            shown = {f"log_variance_{t}": log_variance[k] for k, t in enumerate(self.tasks)}
            weights = 0.5 * tf.exp(-log_variance)
            return {**{f"weight_{t}": weights[k] for k, t in enumerate(self.tasks)}, **shown}
        weights = self.dwa.loss_weights if self.weighting == "dwa" else self.static_weights
        return {f"weight_{t}": tf.identity(weights[k]) for k, t in enumerate(self.tasks)}

    def total_loss(self, task_losses: dict):
        values = [task_losses[task] for task in self.tasks]
        if self.weighting == "uncertainty":
            return self.uncertainty(tf.stack(values))
        weights = self.dwa.loss_weights if self.weighting == "dwa" else self.static_weights
        return tf.reduce_sum(tf.stack(weights) * tf.stack(values))

    def train_step(self, data):
        images, targets = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            task_losses = self.task_losses(targets, outputs)
            total = self.total_loss(task_losses)
            replica_share = total / replicas
        self.optimizer.minimize(replica_share, self.trainable_variables, tape=tape)
        # Keras metrics aggregate over replicas when read: the logs (and DWA, which
        # reads them) see the global batch.
        self.trackers["loss"].update_state(total)
        for task in self.tasks:
            self.trackers[f"{task}_loss"].update_state(task_losses[task])
        return {**{name: tracker.result() for name, tracker in self.trackers.items()},
                **self.current_weights()}
