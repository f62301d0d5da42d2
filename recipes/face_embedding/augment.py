"""Augmentation suited to faces, drawn from a stateless key (a batch's augmentation is a
function of (seed, step), so a resumed run sees what an uninterrupted one would)."""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)

import tensorflow as tf

AUGMENT = {"crop": 0.15, "flip": 0.5, "brightness": 0.1, "contrast": 0.2, "lighting": 0.8}


def faces(images: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
    """Random faces [B, H, W, C] -> [B, H, W, C]: a crop inside each image (up to
    AUGMENT["crop"] smaller: a shift and a zoom) resized back, a horizontal flip, then
    contrast, brightness and a light gradient from left to right (side lighting: the
    network standardises each image, so only the gradient survives of the three).
    `key`: int64 [2], a stateless seed."""
    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    keys = tf.random.experimental.stateless_split(key, 7)

    def uniform(number, low=0.0, high=1.0, shape=(1, 1, 1)):
        return tf.random.stateless_uniform([n, *shape], keys[number], low, high)

    side = 1.0 - AUGMENT["crop"] * uniform(0, shape=())
    top, left = (1.0 - side) * uniform(1, shape=()), (1.0 - side) * uniform(2, shape=())
    flip = uniform(3, shape=()) < AUGMENT["flip"]
    # crop_and_resize mirrors a box whose x1 > x2: the flip costs nothing.
    x1, x2 = tf.where(flip, left + side, left), tf.where(flip, left, left + side)
    boxes = tf.stack([top, x1, top + side, x2], axis=1)
    out = tf.image.crop_and_resize(images, boxes, tf.range(n), [height, width])
    mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
    out = (out - mean) * (1.0 + AUGMENT["contrast"] * uniform(4, -1.0, 1.0)) + mean
    out += AUGMENT["brightness"] * uniform(5, -1.0, 1.0)
    ramp = tf.reshape(tf.linspace(-1.0, 1.0, width), [1, 1, width, 1])
    out *= 1.0 + AUGMENT["lighting"] * uniform(6, -1.0, 1.0) * ramp
    return tf.clip_by_value(out, 0.0, 1.0)
