"""A small CNN that maps a face image to a unit-norm embedding, its loss and its export.

    images [B, H, W, C] float32 in [0, 1]  ->  embeddings [B, embedding_dim], ||e|| = 1

Each image is first standardised on its own (zero mean, unit variance over its pixels:
a layer normalisation without scale or offset), so brightness and contrast, which vary
with the lighting far more than with the person, do not reach the convolutions. Then
stages of 3x3 convolution, synchronized batch normalisation, ReLU and 2x2 max pooling
until the shorter side is 4 or less, one more convolution, global average pooling (so
the same weights fit any input size: `--init_from` can start a 92x112 network from one
trained at 32x32), dropout, a dense projection and L2 normalisation. Only Keras
built-in layers: model.keras loads with `common.models.load_model` (Keras' safe mode).
"""

from __future__ import annotations

import math
from pathlib import Path

from common import models
from common.losses import TripletLoss

import tensorflow as tf


def build(size: tuple[int, int], channels: int, embedding_dim: int, width: int,
          dropout: float, weight_decay: float) -> tf.keras.Model:
    """The embedding network for images of `size` (width, height); `width` filters in
    the first stage, doubling each stage (at most 256)."""
    image_width, image_height = size
    if min(size) < 8:
        raise ValueError(f"--image_size={image_width}x{image_height}: need at least 8 pixels")
    stages = max(1, math.ceil(math.log2(min(size) / 4)))
    regulariser = tf.keras.regularizers.l2(weight_decay) if weight_decay else None
    inputs = tf.keras.Input([image_height, image_width, channels], name="image")
    x = tf.keras.layers.LayerNormalization(axis=[1, 2, 3], center=False, scale=False,
                                           epsilon=1e-3, name="standardise")(inputs)
    # Every layer is named: Keras' automatic names count the layers built so far in the
    # process, and `init_from` matches layers by name (fold 2 of kfold, a test process).
    for stage in range(stages + 1):
        x = tf.keras.layers.Conv2D(min(width * 2 ** stage, 256), 3, padding="same",
                                   use_bias=False, kernel_regularizer=regulariser,
                                   name=f"conv{stage}")(x)
        x = tf.keras.layers.BatchNormalization(synchronized=True, name=f"norm{stage}")(x)
        x = tf.keras.layers.ReLU(name=f"relu{stage}")(x)
        if stage < stages:
            x = tf.keras.layers.MaxPool2D(padding="same", name=f"pool{stage}")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="average")(x)
    x = tf.keras.layers.Dropout(dropout, name="dropout")(x)
    # The embedding in float32 even under mixed precision: the triplet distances need it.
    x = tf.keras.layers.Dense(embedding_dim, dtype="float32", kernel_regularizer=regulariser,
                              name="projection")(x)
    outputs = tf.keras.layers.UnitNormalization(dtype="float32", name="embedding")(x)
    return tf.keras.Model(inputs, outputs, name="face_embedding")


def compile_triplet(network: tf.keras.Model, margin: float, mining: str, distance: str,
                    learning_rate: float, total_steps: int, jit_compile: bool) -> None:
    """Adam with a cosine decay of the learning rate to 0 over the run's steps, and
    `common.losses.TripletLoss` (online mining inside each global batch)."""
    schedule = tf.keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps))
    network.compile(optimizer=tf.keras.optimizers.Adam(schedule),
                    loss=TripletLoss(margin, mining, distance), jit_compile=jit_compile)


def load_init(run_dir: str) -> tf.keras.Model:
    """RUN_DIR/model.keras of a finished run, for `init_from`. Only the zip format, in
    Keras' safe mode: an HDF5 (legacy) file, whatever its name, would run the Python
    bytecode of any `Lambda` in it. ValueError naming --init_from otherwise."""
    return models.load_model(Path(run_dir) / "model.keras", flag="--init_from")


def init_from(network: tf.keras.Model, source: tf.keras.Model, run_dir: str) -> int:
    """Starts `network` from the weights of `source` (`load_init(run_dir)`): every
    layer whose name and weight shapes match. Returns how many did."""
    copied = 0
    for layer in network.layers:
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        weights = other.get_weights()
        if weights and [w.shape for w in weights] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(weights)
            copied += 1
    if not copied:
        raise ValueError(f"--init_from={run_dir}: no layer of its model.keras fits this network "
                         "(another --width or --embedding_dim?)")
    return copied


def serving(network: tf.keras.Model) -> tf.types.experimental.GenericFunction:
    """The SavedModel signature: raw images [B, H, W, C] float32 in [0, 1] as the
    loader gives them -> {"embedding": [B, embedding_dim]}; standardisation is inside."""
    spec = tf.TensorSpec([None, *network.input_shape[1:]], tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(image):
        return {"embedding": network(image, training=False)}

    return serve


def predict(network: tf.keras.Model, images, batch_size: int = 256):
    """Embeddings [N, embedding_dim] (NumPy) of images [N, H, W, C]."""
    return network.predict(images, batch_size=batch_size, verbose=0)
