"""Segmentation loss: soft Dice, per sample."""

from common.losses import _base, _tensors

import tensorflow as tf


def _one_hot_labels(y_true, y_pred, loss):
    """One-hot labels shaped like `y_pred`, and the mask of pixels that count.

    Returns:
      (labels `[B, ..., C]` in y_pred's dtype, valid `[B, ..., 1]` in y_pred's dtype).
    """
    y_true = tf.convert_to_tensor(y_true)
    pred_rank = y_pred.shape.rank
    true_rank = y_true.shape.rank
    if pred_rank is None or true_rank is None or pred_rank < 3:
        raise ValueError(
            f"{loss}: y_pred must be [B, ..., C] with at least one spatial axis, "
            f"got {y_pred.shape}."
        )
    classes = y_pred.shape[-1]
    # With a single class, [B, H, W] labels are the binary mask itself, not indices.
    sparse = classes != 1 and (
        true_rank == pred_rank - 1 or (true_rank == pred_rank and y_true.shape[-1] == 1)
    )
    if not sparse:
        labels = _tensors.to_float(y_true, y_pred.dtype, "y_true", loss)
        labels, _ = _tensors.align(labels, y_pred, ("y_true", "y_pred"), loss)
        return labels, tf.ones_like(labels[..., :1])
    if true_rank == pred_rank:
        y_true = tf.squeeze(y_true, -1)
    y_true, _ = _tensors.align(
        y_true, y_pred[..., 0], ("y_true (class indices)", "y_pred without its class axis"), loss
    )
    depth = classes if classes is not None else tf.shape(y_pred)[-1]
    indices = tf.cast(y_true, tf.int32)
    valid = tf.logical_and(indices >= 0, indices < depth)
    # one_hot gives an all-zero row for an index outside [0, C): the pixel has no label.
    labels = tf.one_hot(indices, depth, dtype=y_pred.dtype)
    return labels, tf.cast(valid, y_pred.dtype)[..., tf.newaxis]


def dice_loss(y_true, y_pred, smooth=1.0):
    """Soft Dice loss of each sample: 1 − mean over classes of (2Σp·y + s) / (Σp + Σy + s).

    The sums run over the spatial axes of one sample, per class: the loss is per
    sample (no batch-level term), so it needs nothing from other replicas. A class
    absent from both the label and the prediction of a sample scores (0 + s)/(0 + s)
    = 1, i.e. no loss (also for s = 0, where 0/0 is read as a perfect score).

    Args:
      y_true: one-hot labels `[B, H, W, C]` of any numeric or bool dtype, or class
        indices `[B, H, W]` / `[B, H, W, 1]` (for C > 1). An index outside [0, C) (e.g.
        255 or −1 for "unlabelled") removes the pixel from both sums.
      y_pred: probabilities `[B, H, W, C]` (softmax, or per-class sigmoid). Any number
        of spatial axes works the same way.
      smooth: s ≥ 0.

    Returns:
      `[B]`.
    """
    loss = "dice_loss"
    if not smooth >= 0:
        raise ValueError(f"{loss}: smooth must be >= 0, got {smooth}.")
    dtype = _tensors.compute_dtype(y_pred)
    y_pred = _tensors.to_float(y_pred, dtype, "y_pred", loss)
    labels, valid = _one_hot_labels(y_true, y_pred, loss)
    probabilities = y_pred * valid
    spatial_axes = list(range(1, y_pred.shape.rank - 1))
    intersection = tf.reduce_sum(probabilities * labels, axis=spatial_axes)
    denominator = tf.reduce_sum(probabilities, axis=spatial_axes) + tf.reduce_sum(
        labels, axis=spatial_axes
    )
    denominator = denominator + smooth
    has_mass = denominator > 0
    safe_denominator = tf.where(has_mass, denominator, tf.ones_like(denominator))
    ratio = (2.0 * intersection + smooth) / safe_denominator
    score = tf.where(has_mass, ratio, tf.ones_like(denominator))
    return 1.0 - tf.reduce_mean(score, axis=-1)


@_base.register
class DiceLoss(_base.PerExampleLoss):
    """Loss class of `dice_loss`."""

    def __init__(self, smooth=1.0, reduction=_base.Reduction.AUTO, name="dice_loss"):
        super().__init__(reduction=reduction, name=name)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        return dice_loss(y_true, y_pred, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}
