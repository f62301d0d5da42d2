"""Private base classes of the Loss classes: how a loss is reduced on one replica and on many."""

from common.losses import _tensors

import tensorflow as tf

Reduction = tf.keras.losses.Reduction


def register(cls):
    """Registers a Loss or Layer so `.keras` files load it without `custom_objects`."""
    return tf.keras.utils.register_keras_serializable(package="common")(cls)


class PerExampleLoss(tf.keras.losses.Loss):
    """Base of the Loss classes whose function returns one loss per example.

    Subclasses implement `call(y_true, y_pred)` returning the per-example losses `[B]`
    and extend `get_config`.

    `reduction`:
      AUTO / SUM_OVER_BATCH_SIZE (default): the sample-weighted sum divided by the number
        of examples, over the *global* batch. With several replicas that takes one
        all-reduce of (sum, count), and every replica returns the global-batch mean.
        `fit` divides it by the number of replicas and sums the replicas' gradients,
        which gives the one-device gradient also when the global batch is split
        unevenly (5 as 3 + 2), where Keras' own per-replica mean is off. A custom
        training loop under a strategy must divide by `num_replicas_in_sync` the same
        way (Keras raises there for its own losses; these ones are exact once divided).
      SUM: the sample-weighted sum over this replica's examples (Keras' meaning).
      NONE: the sample-weighted per-example losses of this replica's examples, `[B]`.
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self._name_scope):
            losses = self.call(y_true, y_pred)
            if self.reduction in (Reduction.NONE, Reduction.SUM):
                if sample_weight is not None:
                    losses = losses * _tensors.weights_like(sample_weight, losses, self.name)
                return losses if self.reduction == Reduction.NONE else tf.reduce_sum(losses)
            return _tensors.global_mean(losses, sample_weight, self.name)


class BatchLoss(tf.keras.losses.Loss):
    """Base of the Loss classes that are one number for the whole batch.

    There is nothing left to reduce, so these classes take no `reduction`. With several
    replicas the value is the loss of the global batch, the same on every replica;
    `fit` divides it by the number of replicas (as for AUTO reduction), which gives
    the one-device gradient. A custom training loop must divide by
    `num_replicas_in_sync` too.

    Subclasses implement `batch_loss(y_true, y_pred, sample_weight)` and extend
    `get_config`.
    """

    def __init__(self, name):
        super().__init__(reduction=Reduction.AUTO, name=name)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self._name_scope):
            return self.batch_loss(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        return self.batch_loss(y_true, y_pred, None)

    def batch_loss(self, y_true, y_pred, sample_weight):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}
