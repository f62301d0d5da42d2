"""Model: a small U-Net with one shared encoder and one decoder per task, and the
multi-task train step that combines the task losses or the task gradients.

  input   image [B, H, W, 3] uint8, H and W multiples of 2**(levels + 1)
  output  {"segmentation": [B, H, W, C] class probabilities (float32),
           "depth": [B, H, W] metres (float32)}
  targets {"labels": [B, H, W] int32, -1 = unlabelled; "depth": [B, H, W], 0 = invalid}

`build` is a functional model of Keras built-in layers only (it is what is
saved: it loads anywhere without custom objects); `MultiTask` wraps it for training.
A single-task baseline is the same network with one decoder.
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import balancing, losses

import numpy as np
import tensorflow as tf

TASKS = ("segmentation", "depth")
LOSS_WEIGHTINGS = ("static", "uncertainty", "dwa", "famo")  # one backward pass per step
GRADIENT_WEIGHTINGS = tuple(balancing.METHODS)  # one backward pass per task
WEIGHTINGS = LOSS_WEIGHTINGS + GRADIENT_WEIGHTINGS
DEPTH_LOSSES = {
    "l1": losses.masked_l1,
    "berhu": losses.berhu_loss,
    "silog": losses.scale_invariant_log_loss,
}


def _conv_block(x, filters: int, name: str):
    for index in range(2):
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                   kernel_initializer="he_normal", name=f"{name}_conv{index}")(x)
    return x


def _attend(x, name: str):
    """x times a per-channel, per-pixel mask in (0, 1) computed from x."""
    mask = tf.keras.layers.Conv2D(x.shape[-1], 1, activation="sigmoid", name=name)(x)
    return tf.keras.layers.Multiply(name=f"{name}_applied")([x, mask])


def build(num_classes: int, tasks=TASKS, *, image_shape=(64, 64), base_filters=12,
                  levels: int = 3, depth_scale: float = 3.0, exchange: bool = False,
                  shared_levels: int | None = None, attention: bool = True,
                  shared_width: float = 1.0) -> tf.keras.Model:
    """The U-Net: a stride-2 stem, an encoder of `levels` poolings (base_filters · 2^level
    channels), one decoder per task with skip connections from the shared encoder.

    shared_levels: encoder levels shared by the tasks (default all, and the bottleneck);
    deeper levels are task-specific, so each task keeps the capacity of its single-task
    network there while the early, high-resolution features learn from both losses.
    exchange: with both tasks, each head reads both decoders' last features (a 3x3
    convolution over their concatenation), so depth cues (edges, surface orientation)
    reach the class scores and class boundaries reach the depth map; the single-task
    networks have nothing to exchange. Off by default: each loss then trains the other
    task's decoder too, and on validation that did worse than none (README).
    attention: with both tasks, each decoder reads the shared features (skips and
    bottleneck) through its own soft mask, sigmoid(1x1 conv) of those features: MTAN's
    task attention (Liu, Johns & Davison 2019) without its chaining across levels. Each
    task picks the channels it uses, so one set of features need not serve both.
    shared_width: with both tasks, the shared layers have this many times the filters.
    No normalisation layers: BatchNorm statistics would be per replica, and the
    2-replica step would no longer equal the one-device step.
    """
    tasks = tuple(tasks)
    if not tasks or any(task not in TASKS for task in tasks):
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")
    height, width = image_shape
    image = tf.keras.Input((height, width, 3), dtype=tf.uint8, name="image")
    x = tf.keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(image)
    # Half resolution inside: 4x cheaper on a CPU; each head upsamples at the end.
    multi = len(tasks) > 1
    widen = shared_width if multi else 1.0

    def filters_at(level, shared=True):
        return max(1, round(base_filters * 2**level * (widen if shared else 1.0)))

    x = tf.keras.layers.Conv2D(filters_at(0), 3, strides=2, padding="same", activation="relu",
                               kernel_initializer="he_normal", name="stem")(x)
    shared_levels = levels if shared_levels is None or len(tasks) == 1 else shared_levels
    if not 0 <= shared_levels <= levels:
        raise ValueError(f"--shared_levels must be in 0..{levels}, got {shared_levels}")
    skips = []
    for level in range(shared_levels):
        x = _conv_block(x, filters_at(level), f"encoder{level}")
        skips.append(x)
        x = tf.keras.layers.MaxPooling2D(name=f"pool{level}")(x)
    features = {}
    for task in tasks:
        y, task_skips = x, list(skips)
        prefix = "" if shared_levels == levels else f"{task}_"
        for level in range(shared_levels, levels):
            y = _conv_block(y, filters_at(level, False), f"{prefix}encoder{level}")
            task_skips.append(y)
            y = tf.keras.layers.MaxPooling2D(name=f"{prefix}pool{level}")(y)
        if task == tasks[0] or prefix:
            bottleneck = _conv_block(y, filters_at(levels, not prefix), f"{prefix}bottleneck")
        y = _attend(bottleneck, f"{task}_attention{levels}") if attention and multi else bottleneck
        for level in reversed(range(levels)):
            filters = base_filters * 2**level
            y = tf.keras.layers.Conv2DTranspose(filters, 2, strides=2,
                                                name=f"{task}_up{level}")(y)
            skip = task_skips[level]
            if attention and multi and level < shared_levels:
                skip = _attend(skip, f"{task}_attention{level}")
            y = tf.keras.layers.Concatenate(name=f"{task}_skip{level}")([y, skip])
            y = _conv_block(y, filters, f"{task}_decoder{level}")
        features[task] = y
    outputs = {}
    for task in tasks:
        y = features[task]
        if exchange and len(tasks) > 1:
            y = tf.keras.layers.Concatenate(name=f"{task}_exchange")(
                [features[task], *(features[other] for other in tasks if other != task)])
            y = tf.keras.layers.Conv2D(base_filters, 3, padding="same", activation="relu",
                                       kernel_initializer="he_normal", name=f"{task}_fuse")(y)
        y = tf.keras.layers.UpSampling2D(interpolation="bilinear", name=f"{task}_full")(y)
        if task == "segmentation":
            y = tf.keras.layers.Conv2D(num_classes, 1, name="segmentation_logits")(y)
            outputs[task] = tf.keras.layers.Activation("softmax", dtype="float32",
                                                       name="segmentation")(y)
        else:
            # depth = scale · exp(clip(x, -6, 6)): positive (silog needs it), relative steps,
            # starting at the training set's median depth; built-in layers only.
            y = tf.keras.layers.Conv2D(1, 1, name="log_depth")(y)
            y = tf.keras.layers.Rescaling(1.0, offset=6.0, dtype="float32", name="shift")(y)
            y = tf.keras.layers.ReLU(max_value=12.0, dtype="float32", name="clip")(y)
            y = tf.keras.layers.Rescaling(1.0, offset=-6.0, dtype="float32", name="unshift")(y)
            y = tf.keras.layers.Activation("exponential", dtype="float32", name="exp")(y)
            y = tf.keras.layers.Reshape((height, width), dtype="float32", name="squeeze")(y)
            outputs[task] = tf.keras.layers.Rescaling(depth_scale, dtype="float32",
                                                      name="depth")(y)
    return tf.keras.Model(image, outputs, name="unet")


class MultiTask(tf.keras.Model):
    """Trains `network` on its tasks' losses, combined by `weighting`:

      static       Σ w_k L_k, fixed `static_weights`
      uncertainty  Σ L_k / (2 exp(s_k)) + s_k / 2, s_k learned (Kendall et al. 2018)
      dwa          Σ λ_k L_k, λ from the epoch-mean losses by `self.dwa`, a callback
                   `fit` must be given (Liu et al. 2019); `dwa_temperature` is its T
      famo         Σ c z_k / L_k · L_k's gradient, z = softmax(ξ), ξ stepped by Adam every
                   step from the observed log-loss decrease (Liu et al. 2023)
      pcgrad, aligned_mtl, nash_mtl, cagrad   the per-task gradients of the shared
                   weights, combined by common.balancing (Yu et al. 2020; Senushkin et
                   al. 2023; Navon et al. 2022; Liu et al. 2021)

    Each L_k is the mean over the replica's examples. Replicas hold equal shares of the
    global batch, so the global-batch loss is the mean of the replicas' losses: the loss
    weightings divide the replica's total by the replica count (the optimizer sums),
    and common.balancing all-reduces per-task gradients before combining them.
    """

    def __init__(self, network: tf.keras.Model, *, num_classes: int,
                 weighting: str = "static", static_weights=(1.0, 1.0),
                 depth_loss: str = "l1", cross_entropy_weight: float = 1.0,
                 dwa_temperature: float = 2.0, famo_learning_rate: float = 0.025, **kwargs):
        super().__init__(**kwargs)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"--weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if depth_loss not in DEPTH_LOSSES:
            raise ValueError(f"--depth_loss must be one of {tuple(DEPTH_LOSSES)}, "
                             f"got {depth_loss!r}")
        self.network = network
        self.tasks = tuple(task for task in TASKS if task in network.output_names)
        self.num_classes = num_classes
        self.weighting = weighting if len(self.tasks) > 1 else "static"
        self.depth_loss_fn = DEPTH_LOSSES[depth_loss]
        self.cross_entropy_weight = float(cross_entropy_weight)
        weights = dict(zip(TASKS, static_weights))
        self.static_weights = [float(weights[task]) if len(self.tasks) > 1 else 1.0
                               for task in self.tasks]
        if self.weighting == "dwa":
            self.dwa = losses.DynamicWeightAverage([f"{task}_loss" for task in self.tasks],
                                                   temperature=dwa_temperature)
        if self.weighting == "uncertainty":
            self.uncertainty = losses.UncertaintyWeighting(len(self.tasks))
        if self.weighting == "famo":
            self.famo = balancing.FAMO(len(self.tasks), learning_rate=famo_learning_rate)
        # Epoch means, aggregated over replicas like Keras metrics are: the logs (and
        # DWA, which reads them) see the global batch.
        self.trackers = {name: tf.keras.metrics.Mean(name=name)
                         for name in ["loss", *(f"{task}_loss" for task in self.tasks),
                                      *(f"weight_{task}" for task in self.tasks)]}

    def call(self, images, training=False):
        return self.network(images, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())  # reset by fit at the start of each epoch

    def task_losses(self, targets: dict, outputs: dict) -> list:
        """[K] scalars: each task's per-example loss averaged over the replica's batch."""
        found = []
        for task in self.tasks:
            if task == "segmentation":
                labels = tf.cast(targets["labels"], tf.int32)
                probabilities = outputs["segmentation"]
                per_example = losses.dice_loss(labels, probabilities)  # [B]; -1 left out
                if self.cross_entropy_weight:
                    one_hot = tf.one_hot(labels, self.num_classes)  # -1 -> all zeros
                    log_p = tf.math.log(tf.clip_by_value(probabilities, 1e-7, 1.0))
                    pixel_ce = -tf.reduce_sum(one_hot * log_p, axis=[1, 2, 3])
                    labelled = tf.reduce_sum(tf.cast(labels >= 0, tf.float32), axis=[1, 2])
                    per_example += self.cross_entropy_weight * tf.math.divide_no_nan(
                        pixel_ce, labelled)
            else:
                per_example = self.depth_loss_fn(tf.cast(targets["depth"], tf.float32),
                                                 outputs["depth"])
            found.append(tf.reduce_mean(per_example))
        return found

    def loss_weights(self, task_losses) -> tf.Tensor:
        """[K] weights of the task losses in this step (not differentiated)."""
        if self.weighting == "dwa":
            return tf.stack([tf.identity(weight) for weight in self.dwa.loss_weights])
        if self.weighting == "uncertainty":
            return 0.5 * tf.exp(-tf.identity(self.uncertainty.log_variances))
        if self.weighting == "famo":
            return self.famo.loss_weights(balancing.global_mean(task_losses))
        if self.weighting in GRADIENT_WEIGHTINGS:  # they combine the unweighted gradients
            return tf.ones([len(self.tasks)], tf.float32)
        return tf.constant(self.static_weights, tf.float32)

    def train_step(self, data):
        images, targets = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        gradient_method = self.weighting in GRADIENT_WEIGHTINGS
        with tf.GradientTape(persistent=gradient_method) as tape:
            task_losses = self.task_losses(targets, self(images, training=True))
            weights = self.loss_weights(task_losses)
            if self.weighting == "uncertainty":
                total = self.uncertainty(tf.stack(task_losses))
            else:
                total = tf.reduce_sum(weights * tf.stack(task_losses))
            replica_share = total / replicas
        balancing.step(self.optimizer, tape, task_losses, replica_share, variables,
                       self.weighting)
        del tape
        if self.weighting == "famo":  # the losses after the step, on the same batch
            after = self.task_losses(targets, self(images, training=True))
            self.famo.update(balancing.global_mean(task_losses), balancing.global_mean(after))
        self.trackers["loss"].update_state(total)
        for k, task in enumerate(self.tasks):
            self.trackers[f"{task}_loss"].update_state(task_losses[k])
            self.trackers[f"weight_{task}"].update_state(weights[k])
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def build_trainer(config, num_classes: int, tasks, images, depths) -> MultiTask:
    """The compiled `MultiTask` trainer of the network `config` (the recipe's Config)
    asks for, with heads for `tasks`, sized for images [N, H, W, 3] and depths [N, H, W]
    (its depth scale the median of the valid depths). Build it inside the strategy's
    scope; the network is `trainer.network`."""
    network = build(
        num_classes, tasks, image_shape=images.shape[1:3], base_filters=config.base_filters,
        levels=config.levels, depth_scale=float(np.median(depths[depths > 0])),
        exchange=config.exchange, shared_levels=config.shared_levels,
        attention=config.attention, shared_width=config.shared_width)
    trainer = MultiTask(
        network, num_classes=num_classes, weighting=config.weighting,
        static_weights=(config.seg_weight, config.depth_weight), depth_loss=config.depth_loss,
        cross_entropy_weight=config.cross_entropy_weight,
        dwa_temperature=config.dwa_temperature)
    trainer.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate),
                    jit_compile=config.jit_compile)
    return trainer


def serving(network: tf.keras.Model):
    """The SavedModel signature: raw uint8 images [B, H, W, 3] -> {"depth": [B, H, W]
    metres, "class_scores": [B, H, W, C] probabilities} (heads the network has)."""
    height, width = network.input_shape[1:3]

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8,
                                                name="images")])
    def serve(images):
        outputs = network(images, training=False)
        names = {"segmentation": "class_scores", "depth": "depth"}
        return {names[task]: value for task, value in outputs.items()}

    return serve


def predict(network: tf.keras.Model, images, batch_size: int = 64) -> dict:
    """{task: array [N, H, W(, C)]}: `network` on all `images`, in chunks."""
    chunks = [network(images[i:i + batch_size], training=False)
              for i in range(0, len(images), batch_size)]
    return {task: tf.concat([chunk[task] for chunk in chunks], 0).numpy()
            for task in chunks[0]}
