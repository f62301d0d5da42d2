"""Triplet loss with online mining: semi-hard, batch-hard, batch-all.

Batch-level: the triplets are mined inside the batch, so the loss is one number for
the batch. Scope: with several replicas in sync, each replica mines for its own
anchors among the positives and negatives of the *global* batch (one all-gather of
labels and embeddings), and the sums and counts are added across replicas (one
all-reduce): every replica gets the one-device value of the global batch, and the
gradient reaches every embedding exactly as on one device.

Cost: distances `[B, B]` through one matrix product; semi-hard and batch-all sort each
anchor's negative distances and binary-search them, O(B² log B) time and O(B²) memory,
never a `[B, B, B]` tensor, with or without XLA; all in one graph.
"""

import math

from common.losses import _base, _tensors

import tensorflow as tf

MININGS = ("semi_hard", "batch_hard", "batch_all")
DISTANCES = ("squared_l2", "l2", "cosine")


def _distances(rows, columns, distance):
    """Pairwise distances `[R, C]` between rows `[R, D]` and columns `[C, D]`."""
    if distance == "cosine":
        # l2_normalize maps a zero vector to 0 (its gradient stays finite): distance 1.
        rows = tf.math.l2_normalize(rows, axis=-1)
        columns = tf.math.l2_normalize(columns, axis=-1)
        return tf.maximum(1.0 - tf.matmul(rows, columns, transpose_b=True), 0.0)
    squared = (
        tf.reduce_sum(tf.square(rows), axis=-1, keepdims=True)
        + tf.reduce_sum(tf.square(columns), axis=-1)[tf.newaxis, :]
        - 2.0 * tf.matmul(rows, columns, transpose_b=True)
    )
    # Rounding can leave identical points a tiny negative squared distance.
    squared = tf.maximum(squared, 0.0)
    if distance == "squared_l2":
        return squared
    # sqrt has an infinite derivative at 0: identical points get distance 0 and gradient 0.
    nonzero = squared > 0.0
    safe_squared = tf.where(nonzero, squared, tf.ones_like(squared))
    return tf.where(nonzero, tf.sqrt(safe_squared), tf.zeros_like(squared))


def _count_sorted(sorted_rows, values, strict):
    """Per row, how many entries of `sorted_rows` are ≤ each value (< when `strict`).

    `tf.searchsorted` does this, but XLA lowers it to a comparison of every value with
    every entry, `[R, V, C]` (4 GB at batch 1024); this binary lifting takes ⌈log2(C+1)⌉
    gathers over `[R, V]` with any compiler.

    Args:
      sorted_rows: `[R, C]`, ascending along each row.
      values: `[R, V]`.

    Returns:
      int32 `[R, V]`.
    """
    sorted_rows, values = tf.stop_gradient(sorted_rows), tf.stop_gradient(values)
    rows, columns = tf.shape(sorted_rows)[0], tf.shape(sorted_rows)[1]
    flat = tf.reshape(sorted_rows, [-1])
    row_start = (tf.range(rows) * columns)[:, tf.newaxis]
    log2_size = tf.math.log(tf.cast(columns, tf.float32) + 1.0) / math.log(2.0)
    bits = tf.cast(tf.math.ceil(log2_size), tf.int32)
    first_step = tf.bitwise.left_shift(1, tf.maximum(bits, 1) - 1)
    count = tf.zeros(tf.shape(values), tf.int32)

    def lift(step, count):
        # Grow the count by `step` where the entry it would newly include still fits.
        candidate = count + step
        entry = tf.gather(flat, row_start + tf.minimum(candidate, columns) - 1)
        fits = entry < values if strict else entry <= values
        return step // 2, tf.where(tf.logical_and(candidate <= columns, fits), candidate, count)

    _, count = tf.while_loop(lambda step, count: step > 0, lift, (first_step, count))
    return count


def _sorted_negatives(distances, negative, above):
    """Each row's negative distances in ascending order, then `above` for the non-negatives."""
    return tf.sort(tf.where(negative, distances, tf.zeros_like(distances) + above), axis=-1)


def _semi_hard(distances, positive, negative, margin):
    """TF Addons' TripletSemiHardLoss, summed and counted over (anchor, positive) pairs.

    For each pair the negative is the nearest one strictly farther than d(a, p), or,
    if there is none, the farthest negative. A pair whose anchor has no negative at
    all forms no triplet and is not counted (TF Addons scores it against a distance of
    0, an artefact of its masked maximum).
    """
    above = tf.stop_gradient(tf.reduce_max(distances)) + 1.0
    negatives = _sorted_negatives(distances, negative, above)
    negative_count = tf.reduce_sum(tf.cast(negative, tf.int32), axis=-1, keepdims=True)
    # Number of negatives at distance ≤ d(a, p): the index of the first farther one.
    first_farther = _count_sorted(negatives, distances, strict=False)
    index = tf.maximum(tf.minimum(first_farther, negative_count - 1), 0)
    chosen = tf.gather(negatives, index, batch_dims=1)
    counted = tf.logical_and(positive, negative_count > 0)
    losses = tf.nn.relu(margin + distances - chosen)
    return (
        tf.reduce_sum(tf.where(counted, losses, tf.zeros_like(losses))),
        tf.reduce_sum(tf.cast(counted, distances.dtype)),
    )


def _batch_hard(distances, positive, negative, margin):
    """Per anchor, farthest positive against nearest negative; anchors lacking either skipped."""
    hardest_positive = tf.reduce_max(
        tf.where(positive, distances, tf.zeros_like(distances) - 1.0), axis=-1
    )
    above = tf.stop_gradient(tf.reduce_max(distances)) + 1.0
    hardest_negative = tf.reduce_min(
        tf.where(negative, distances, tf.zeros_like(distances) + above), axis=-1
    )
    counted = tf.logical_and(tf.reduce_any(positive, axis=-1), tf.reduce_any(negative, axis=-1))
    losses = tf.nn.relu(margin + hardest_positive - hardest_negative)
    return (
        tf.reduce_sum(tf.where(counted, losses, tf.zeros_like(losses))),
        tf.reduce_sum(tf.cast(counted, distances.dtype)),
    )


def _batch_all(distances, positive, negative, margin):
    """Sum of max(0, margin + d(a,p) − d(a,n)) over all triplets, and the number of nonzero ones.

    For a pair (a, p), the c negatives with d(a, n) < margin + d(a, p) are the ones with
    a positive loss, which sums to c·(margin + d(a, p)) − (sum of those c distances): a
    binary search and a prefix sum over the anchor's sorted negative distances.
    """
    above = tf.stop_gradient(tf.reduce_max(distances)) + abs(margin) + 1.0
    negatives = _sorted_negatives(distances, negative, above)
    thresholds = distances + margin
    active = _count_sorted(negatives, thresholds, strict=True)
    prefix_sums = tf.concat(
        [tf.zeros_like(negatives[:, :1]), tf.cumsum(negatives, axis=-1)], axis=-1
    )
    active_sum = tf.gather(prefix_sums, active, batch_dims=1)
    active_count = tf.cast(active, distances.dtype)
    losses = active_count * thresholds - active_sum
    return (
        tf.reduce_sum(tf.where(positive, losses, tf.zeros_like(losses))),
        tf.reduce_sum(tf.where(positive, active_count, tf.zeros_like(active_count))),
    )


_MINERS = {"semi_hard": _semi_hard, "batch_hard": _batch_hard, "batch_all": _batch_all}


def _labels_and_embeddings(labels, embeddings, loss):
    embeddings = tf.convert_to_tensor(embeddings)
    dtype = _tensors.compute_dtype(embeddings)
    embeddings = _tensors.to_float(embeddings, dtype, "embeddings", loss)
    if embeddings.shape.rank != 2:
        raise ValueError(f"{loss}: embeddings must be [B, D], got shape {embeddings.shape}.")
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if labels.shape.rank != 1:
        raise ValueError(f"{loss}: labels must be [B] or [B, 1], got shape {labels.shape}.")
    if not (labels.dtype.is_integer or labels.dtype.is_floating or labels.dtype.is_bool):
        raise TypeError(f"{loss}: labels must be integer, got dtype {labels.dtype.name}.")
    if not labels.dtype.is_floating:
        labels = tf.cast(labels, tf.int64)
    labels, _ = _tensors.align(labels, embeddings[:, 0], ("labels", "embeddings' batch axis"), loss)
    return labels, embeddings


def triplet_loss(labels, embeddings, margin=0.2, mining="semi_hard", distance="squared_l2"):
    """Triplet loss max(0, margin + d(a, p) − d(a, n)) with online mining; batch-level.

    mining:
      "semi_hard": TF Addons' TripletSemiHardLoss: for every positive pair (a, p), the
        nearest negative farther than d(a, p), else the farthest negative; the mean over
        positive pairs (FaceNet).
      "batch_hard": per anchor, its farthest positive and nearest negative; the mean over
        anchors that have both (Hermans et al. 2017).
      "batch_all": every valid triplet; the mean over the triplets with a positive loss.
    distance: "squared_l2" (FaceNet: margin 0.2 on unit-norm embeddings), "l2", or
      "cosine" (1 − cosine similarity).

    A batch without any positive pair (or triplet) gives 0 with a zero gradient, not NaN;
    so do identical embeddings (distance 0) for "l2". Use class-balanced P×K batches.

    Args:
      labels: `[B]` or `[B, 1]` integer class ids.
      embeddings: `[B, D]`, any float dtype (computed in float32, float64 kept).
      margin: the margin, in the distance's units.

    Returns:
      A scalar. With several replicas in sync: the loss of the global batch (see module).
    """
    loss = "triplet_loss"
    if mining not in MININGS:
        raise ValueError(f"{loss}: mining must be one of {MININGS}, got {mining!r}.")
    if distance not in DISTANCES:
        raise ValueError(f"{loss}: distance must be one of {DISTANCES}, got {distance!r}.")
    labels, embeddings = _labels_and_embeddings(labels, embeddings, loss)
    (all_labels, all_embeddings), offset = _tensors.gather_batch(labels, embeddings)
    distances = _distances(embeddings, all_embeddings, distance)
    anchor_index = tf.range(tf.shape(embeddings)[0]) + offset
    column_index = tf.range(tf.shape(all_embeddings)[0])
    is_self = tf.equal(anchor_index[:, tf.newaxis], column_index[tf.newaxis, :])
    same_label = tf.equal(labels[:, tf.newaxis], all_labels[tf.newaxis, :])
    positive = tf.logical_and(same_label, tf.logical_not(is_self))
    negative = tf.logical_not(same_label)
    total, count = _MINERS[mining](distances, positive, negative, float(margin))
    total, count = tf.unstack(_tensors.sum_over_replicas(tf.stack([total, count])))
    return tf.math.divide_no_nan(total, count)


@_base.register
class TripletLoss(_base.BatchLoss):
    """Loss class of `triplet_loss`: y_true = labels `[B]`, y_pred = embeddings `[B, D]`.

    Batch-level, so it takes no sample weights.
    """

    def __init__(self, margin=0.2, mining="semi_hard", distance="squared_l2", name="triplet"):
        super().__init__(name=name)
        if mining not in MININGS:
            raise ValueError(f"TripletLoss: mining must be one of {MININGS}, got {mining!r}.")
        if distance not in DISTANCES:
            raise ValueError(f"TripletLoss: distance must be one of {DISTANCES}, got {distance!r}.")
        self.margin = float(margin)
        self.mining = mining
        self.distance = distance

    def batch_loss(self, y_true, y_pred, sample_weight):
        if sample_weight is not None:
            raise ValueError(
                "TripletLoss is one number for the batch and takes no sample_weight "
                "(nor class_weight); balance the batches instead (P×K sampling)."
            )
        return triplet_loss(y_true, y_pred, self.margin, self.mining, self.distance)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "mining": self.mining,
            "distance": self.distance,
        }
