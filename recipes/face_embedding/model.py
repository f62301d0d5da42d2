"""A small CNN that maps a face image to a unit-norm embedding (FaceNet's output layer).

    images [B, S, S, C] in [0, 1]  ->  embeddings [B, embedding_dim], ||e|| = 1

Stages of 3×3 convolution, synchronized batch normalisation, ReLU and 2×2 max pooling
halve the image until it is 4×4 (3 stages at 32×32); then a dense projection and L2
normalisation. Batch normalisation is synchronized across replicas, so a 2-replica step
normalises with the statistics of the whole global batch, as one device does.
"""

from __future__ import annotations

import math

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf


def build(image_size: int, channels: int, embedding_dim: int, width: int = 32) -> tf.keras.Model:
    """The embedding network; `width` filters in the first stage, doubling (max 256)."""
    if image_size < 8:
        raise ValueError(f"--image_size={image_size}: need at least 8 pixels")
    stages = max(1, int(math.log2(image_size / 4)))
    inputs = tf.keras.Input([image_size, image_size, channels], name="image")
    x = tf.keras.layers.Rescaling(2.0, offset=-1.0)(inputs)  # [0, 1] -> [-1, 1]
    for stage in range(stages):
        filters = min(width * 2 ** stage, 256)
        x = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization(synchronized=True)(x)
        x = tf.keras.layers.ReLU()(x)
        x = tf.keras.layers.MaxPool2D()(x)
    x = tf.keras.layers.Conv2D(min(width * 2 ** stages, 256), 3, padding="same",
                               use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization(synchronized=True)(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.Flatten()(x)
    # The embedding in float32 even under mixed precision: the triplet distances need it.
    x = tf.keras.layers.Dense(embedding_dim, dtype="float32", name="projection")(x)
    outputs = tf.keras.layers.UnitNormalization(dtype="float32", name="embedding")(x)
    return tf.keras.Model(inputs, outputs, name="face_embedding")


def embed(model: tf.keras.Model, images, batch_size: int = 256):
    """Embeddings [N, embedding_dim] (NumPy) of images [N, S, S, C]."""
    return model.predict(images, batch_size=batch_size, verbose=0)
