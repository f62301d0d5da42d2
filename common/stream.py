"""The training stream: endless global batches whose order depends only on (seed, epoch)."""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf


def training_stream(examples: tf.data.Dataset, *, global_batch_size: int, seed: int,
                    first_epoch: int = 0,
                    shuffle_buffer: int | None = None) -> tuple[tf.data.Dataset, int]:
    """Endless global batches of `examples`, reshuffled each epoch; and steps per epoch.

    Epoch e's order depends only on (seed, e), so a run resumed at `first_epoch` sees the
    same batches as an uninterrupted one. The remainder that does not fill a global
    batch is dropped each epoch: every step has the full global batch and splits evenly
    over replicas (an uneven split would skew the mean).
    """
    size = int(examples.cardinality())
    if size < 0:
        raise ValueError("training_stream needs a dataset of known size (not repeated)")
    steps = size // global_batch_size
    if steps == 0:
        raise ValueError(f"--global_batch_size={global_batch_size} is larger than the "
                         f"{size} training examples")
    buffer = shuffle_buffer or size

    def one_epoch(epoch):
        return examples.shuffle(buffer, seed=seed * 100_003 + epoch).batch(
            global_batch_size, drop_remainder=True)

    stream = tf.data.Dataset.range(first_epoch, 1 << 30).flat_map(one_epoch)
    return stream.prefetch(tf.data.AUTOTUNE), steps
