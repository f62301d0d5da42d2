"""Private helpers of the loss families: dtypes, shape checks, and the cross-replica batch.

Three rules every loss in this package follows, kept here so they are written once:

* Compute dtype: float64 predictions stay float64 (gradient checks need it); all other
  predictions, float16 and bfloat16 included, are computed in float32, so mixed
  precision never sums thousands of terms in 16 bits. Labels follow the predictions.
* Shapes are aligned, never broadcast: `[B]` against `[B, 1]` is the same thing,
  `[B]` against `[B, D]` is an error that names both arguments.
* Under a `tf.distribute` strategy with more than one replica in sync, the losses
  that need the whole batch see the whole global batch (`all_gather`), and the Loss
  classes reduce over the global batch (`all_reduce` of a sum and a count). With one
  replica none of these collectives is built.

Why the collectives give the one-device gradient (checked in the tests): the gradient
of `all_gather` and of a SUM `all_reduce` is itself a SUM `all_reduce` of the
upstream gradients (then, for the gather, the slice of this replica's rows). A loss
whose value is the global-batch loss on every replica, divided by the number of
replicas N as Keras does inside `fit`, therefore receives the full global-batch
gradient for its own rows, and the SUM of the replicas' weight gradients is the
one-device gradient, however unevenly the global batch was split.
"""

import numpy as np
import tensorflow as tf


def compute_dtype(predictions) -> tf.DType:
    """float64 for float64 predictions, otherwise float32; labels follow the predictions."""
    dtype = getattr(predictions, "dtype", None)
    if dtype is not None and tf.as_dtype(dtype) == tf.float64:
        return tf.float64
    return tf.float32


def to_float(value, dtype: tf.DType, name: str, loss: str) -> tf.Tensor:
    """Converts labels or predictions of any numeric or bool dtype to `dtype`."""
    tensor = tf.convert_to_tensor(value)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer or tensor.dtype.is_bool):
        raise TypeError(f"{loss}: {name} must be numeric or bool, got dtype {tensor.dtype.name}.")
    return tf.cast(tensor, dtype)


def _require_rank(tensor: tf.Tensor, name: str, loss: str) -> int:
    rank = tensor.shape.rank
    if rank is None:
        raise ValueError(f"{loss}: {name} must have a known rank.")
    return rank


def _assert_same_shape(first, second, names, loss):
    """Statically compares shapes; adds a runtime check only for dims unknown at trace time."""
    if not first.shape.is_compatible_with(second.shape):
        raise ValueError(
            f"{loss}: {names[0]} has shape {first.shape} and {names[1]} has shape "
            f"{second.shape}; they must match (only a trailing axis of size 1 may differ). "
            "Broadcasting is refused: it silently turns [B] against [B, 1] into [B, B]."
        )
    if first.shape.is_fully_defined() and second.shape.is_fully_defined():
        return first, second
    check = tf.debugging.assert_equal(
        tf.shape(first),
        tf.shape(second),
        message=f"{loss}: {names[0]} and {names[1]} must have the same shape",
    )
    with tf.control_dependencies([check]):
        return tf.identity(first), tf.identity(second)


def align(first, second, names, loss, min_rank=1):
    """Gives two tensors the same shape without broadcasting.

    Args:
      first, second: tensors whose shapes must match, except that one of them may
        carry an extra trailing axis of size 1 (`[B]` against `[B, 1]`).
      names: the two argument names used in error messages.
      loss: the loss name used in error messages.
      min_rank: both results get at least this rank by adding trailing axes of
        size 1 (`[B]` becomes `[B, 1]` when a loss reduces over the last axis).

    Returns:
      The two tensors, with the larger of the two ranks (at least `min_rank`).
    """
    first_rank = _require_rank(first, names[0], loss)
    second_rank = _require_rank(second, names[1], loss)
    if first_rank == second_rank + 1 and first.shape[-1] == 1:
        second = tf.expand_dims(second, -1)
    elif second_rank == first_rank + 1 and second.shape[-1] == 1:
        first = tf.expand_dims(first, -1)
    elif first_rank != second_rank:
        raise ValueError(
            f"{loss}: {names[0]} has shape {first.shape} and {names[1]} has shape "
            f"{second.shape}; they must match (only a trailing axis of size 1 may differ)."
        )
    while first.shape.rank < min_rank:
        first, second = tf.expand_dims(first, -1), tf.expand_dims(second, -1)
    return _assert_same_shape(first, second, names, loss)


def weights_like(sample_weight, losses: tf.Tensor, loss: str) -> tf.Tensor:
    """Casts `sample_weight` (scalar, or shaped like `losses` up to a trailing 1) to `losses`."""
    weights = to_float(sample_weight, losses.dtype, "sample_weight", loss)
    if weights.shape.rank == 0:
        return weights
    weights_rank = _require_rank(weights, "sample_weight", loss)
    if weights_rank == losses.shape.rank + 1 and weights.shape[-1] == 1:
        weights = tf.squeeze(weights, -1)
    elif weights_rank != losses.shape.rank:
        raise ValueError(
            f"{loss}: sample_weight has shape {weights.shape} but the loss has one value per "
            f"example, shape {losses.shape}."
        )
    names = ("sample_weight", "the per-example loss")
    weights, _ = _assert_same_shape(weights, losses, names, loss)
    return weights


def check_positive(value, name: str, loss: str):
    """Rejects a non-positive hyper-parameter: at trace time when known, else at run time.

    The run-time check is an assert op, which `jit_compile=True` drops.
    """
    static = tf.get_static_value(value) if tf.is_tensor(value) else value
    if static is not None:
        if not np.all(np.asarray(static) > 0):
            raise ValueError(f"{loss}: {name} must be > 0, got {static}.")
        return value
    check = tf.debugging.assert_positive(value, message=f"{loss}: {name} must be > 0")
    with tf.control_dependencies([check]):
        return tf.identity(value)


def distributed_context():
    """The replica context when a step runs on several replicas in sync, else None.

    None in the cross-replica context too: there the tensors already hold the whole batch.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def gather_batch(*tensors):
    """Concatenates each tensor over the replicas along axis 0, in replica order.

    Args:
      *tensors: tensors sharing the local batch axis 0 (bool tensors are gathered as int32).

    Returns:
      (gathered tensors as a tuple, offset): `offset` is the row of the gathered batch
      where this replica's rows start (0 with one replica, where nothing is gathered).
    """
    context = distributed_context()
    if context is None:
        return tensors, 0
    gathered = []
    for tensor in tensors:
        if tensor.dtype.is_bool:
            gathered.append(tf.cast(context.all_gather(tf.cast(tensor, tf.int32), axis=0), tf.bool))
        else:
            gathered.append(context.all_gather(tensor, axis=0))
    sizes = context.all_gather(tf.shape(tensors[0])[:1], axis=0)
    offset = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
    return tuple(gathered), offset


def sum_over_replicas(value: tf.Tensor) -> tf.Tensor:
    """SUM all-reduce of `value` across replicas; identity with one replica."""
    context = distributed_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def max_over_replicas(value: tf.Tensor) -> tf.Tensor:
    """Max of a scalar across replicas, without gradient (ReduceOp has no MAX)."""
    value = tf.stop_gradient(value)
    context = distributed_context()
    if context is None:
        return value
    return tf.reduce_max(context.all_gather(tf.reshape(value, [1]), axis=0))


def global_mean(losses: tf.Tensor, sample_weight=None, loss: str = "loss") -> tf.Tensor:
    """Sample-weighted sum of `losses` over the global batch, divided by its element count.

    This is Keras' SUM_OVER_BATCH_SIZE reduction taken over all replicas together: each
    replica returns the same value, the mean of the global batch (0 for an empty batch).
    """
    if sample_weight is not None:
        losses = losses * weights_like(sample_weight, losses, loss)
    total_and_count = tf.stack([tf.reduce_sum(losses), tf.cast(tf.size(losses), losses.dtype)])
    total, count = tf.unstack(sum_over_replicas(total_and_count))
    return tf.math.divide_no_nan(total, count)
