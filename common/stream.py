"""The training stream: endless global batches whose order depends only on (seed, epoch).

`training.fit` takes `stream(first_epoch) -> (endless dataset, steps per epoch)`. Every
recipe builds it here, whatever its batching:

    epoch_stream(lambda epoch: <rows of epoch's batches, [steps, B]>, steps, gather)

`epoch_rows` gives epoch e's batches as row indices from (seed, e) alone, so a run resumed
at epoch e sees the batches an uninterrupted one would; `gather` turns a batch of row
indices into tensors (a whole batch at once: far cheaper than batching single examples).
`training_stream` is the plain case: examples shuffled each epoch.
"""

from __future__ import annotations

from typing import Callable

import common  # noqa: F401  (Keras 2 before TensorFlow)

import tensorflow as tf


def steps_per_epoch(size: int, global_batch_size: int, what: str = "training examples") -> int:
    """Full global batches in `size` examples; ValueError naming --global_batch_size if
    there is not one. The remainder is dropped each epoch: every step has the whole
    global batch and splits evenly over replicas (an uneven split would skew the mean)."""
    steps = size // global_batch_size
    if steps == 0:
        raise ValueError(f"--global_batch_size={global_batch_size} is larger than the "
                         f"{size} {what}")
    return steps


def epoch_rows(size: int, global_batch_size: int, seed: int):
    """fn(epoch) -> int32 [steps, global_batch_size]: a permutation of range(size) drawn
    from (seed, epoch) alone, cut into the epoch's full batches."""
    steps = steps_per_epoch(size, global_batch_size)

    def rows(epoch):
        keys = tf.random.stateless_uniform([size], seed=tf.stack(
            [tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]))
        return tf.reshape(tf.argsort(keys)[:steps * global_batch_size],
                          [steps, global_batch_size])

    return rows


def epoch_stream(batches: Callable, steps: int, gather: Callable | None = None):
    """fn(first_epoch) -> (endless dataset, steps): epoch e's batches are the rows of
    `batches(e)` ([steps, ...], from (seed, e) alone), each mapped through `gather`."""
    def stream(first_epoch: int):
        epochs = tf.data.Dataset.range(first_epoch, 1 << 30)
        data = epochs.flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices(
            batches(epoch)))
        if gather is not None:
            data = data.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return data.prefetch(tf.data.AUTOTUNE), steps

    return stream


def array_stream(tensors, size: int, global_batch_size: int, seed: int,
                 what: str = "training examples"):
    """`epoch_stream` over in-memory arrays: `tensors` (a nest of arrays or tensors whose
    first dimension is `size`) gathered a whole batch of rows at a time."""
    tensors = tf.nest.map_structure(tf.constant, tensors)

    def gather(batch):
        return tf.nest.map_structure(lambda tensor: tf.gather(tensor, batch), tensors)

    return epoch_stream(epoch_rows(size, global_batch_size, seed),
                        steps_per_epoch(size, global_batch_size, what), gather)


def training_stream(examples: tf.data.Dataset, *, global_batch_size: int, seed: int,
                    first_epoch: int = 0,
                    shuffle_buffer: int | None = None) -> tuple[tf.data.Dataset, int]:
    """Endless global batches of `examples`, reshuffled each epoch; and steps per epoch
    (epoch e's order from (seed, e) alone; the remainder dropped each epoch)."""
    size = int(examples.cardinality())
    if size < 0:
        raise ValueError("training_stream needs a dataset of known size (not repeated)")
    steps = steps_per_epoch(size, global_batch_size)
    buffer = shuffle_buffer or size

    def one_epoch(epoch):
        return examples.shuffle(buffer, seed=seed * 100_003 + epoch).batch(
            global_batch_size, drop_remainder=True)

    stream = tf.data.Dataset.range(first_epoch, 1 << 30).flat_map(one_epoch)
    return stream.prefetch(tf.data.AUTOTUNE), steps
