"""Losses of the recipes: plain functions of tensors, and Keras-serializable Loss classes.

Each function returns one loss per example (`[B]`), except the batch-level ones
(`soft_precision`, `triplet_loss`, `BCEWithSoftPrecision`), whose docstrings give
their scope. The constrained objectives (precision at recall, recall at precision,
precision at a share of flagged rows; Eban et al. 2017) train their Lagrange multiplier
through `DualAscentModel` (see `common.losses.constrained`). Each Loss class is
registered as "common>ClassName", so a model
compiled with it saves to `.keras` and loads without `custom_objects` once
`common.losses` is imported.

Inputs: labels of any numeric or bool dtype; predictions computed in float32
(float64 kept). `[B]` against `[B, 1]` is aligned, other shape mismatches raise an
error naming the arguments, nothing is broadcast.

Under `tf.distribute` (MirroredStrategy, MultiWorkerMirroredStrategy, TPUs) inside
`fit`, the Loss classes give exactly the one-device loss and gradient of the global
batch, also when its last batch splits unevenly over the replicas: the batch-level
losses gather the whole batch, and the default reduction averages over the global
batch instead of each replica's slice. With one replica no collective op is built.
Passing a plain function to `compile` gets Keras' own reduction, which is exact only
for evenly split batches (use `drop_remainder=True` then). In a custom training loop
under a strategy, divide a Loss class's value by `num_replicas_in_sync` before
taking gradients, as `fit` does.
"""

from common.losses.classification import (
    BCEWithSoftPrecision,
    BinaryFocalCrossentropy,
    WeightedBinaryCrossentropy,
    binary_focal_crossentropy,
    soft_precision,
    weighted_binary_crossentropy,
)
from common.losses.constrained import (
    DualAscentModel,
    PrecisionAtRecall,
    PrecisionAtShare,
    RecallAtPrecision,
    precision_at_recall,
    precision_at_share,
    recall_at_precision,
)
from common.losses.depth import (
    BerHu,
    MaskedL1,
    ScaleInvariantLogLoss,
    berhu_loss,
    masked_l1,
    scale_invariant_log_loss,
)
from common.losses.metric_learning import TripletLoss, triplet_loss
from common.losses.multitask import DynamicWeightAverage, UncertaintyWeighting
from common.losses.ranking import (
    ListMLELoss,
    ListwiseMSE,
    PairwiseHingeLoss,
    RankNetLoss,
    listmle_loss,
    listwise_mse,
    pairwise_hinge_loss,
    ranknet_loss,
)
from common.losses.regression import (
    AdaptiveHuber,
    Huber,
    HuberNLL,
    MSEPlusRelativeError,
    WeightedMSE,
    huber,
    huber_log_normalizer,
    huber_nll,
    mse_plus_relative_error,
    weighted_mse,
)
from common.losses.segmentation import DiceLoss, dice_loss

__all__ = [
    "AdaptiveHuber",
    "BCEWithSoftPrecision",
    "BerHu",
    "BinaryFocalCrossentropy",
    "DiceLoss",
    "DualAscentModel",
    "DynamicWeightAverage",
    "Huber",
    "HuberNLL",
    "ListMLELoss",
    "ListwiseMSE",
    "MSEPlusRelativeError",
    "MaskedL1",
    "PairwiseHingeLoss",
    "PrecisionAtRecall",
    "PrecisionAtShare",
    "RecallAtPrecision",
    "RankNetLoss",
    "ScaleInvariantLogLoss",
    "TripletLoss",
    "UncertaintyWeighting",
    "WeightedBinaryCrossentropy",
    "WeightedMSE",
    "berhu_loss",
    "binary_focal_crossentropy",
    "dice_loss",
    "huber",
    "huber_log_normalizer",
    "huber_nll",
    "listmle_loss",
    "listwise_mse",
    "mse_plus_relative_error",
    "masked_l1",
    "pairwise_hinge_loss",
    "precision_at_recall",
    "precision_at_share",
    "recall_at_precision",
    "ranknet_loss",
    "scale_invariant_log_loss",
    "soft_precision",
    "triplet_loss",
    "weighted_binary_crossentropy",
    "weighted_mse",
]
