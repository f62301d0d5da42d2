"""Every loss gives the same `fit` step on 2 replicas as on 1 device, also for an uneven batch.

One multi-output model carries one small head per loss; a head's weights receive
gradient from its own loss only, so comparing each head's update checks each loss
separately, at the price of one traced `fit` (tracing ~20 losses and their gradients
twice, once per replica, is the expensive part: ~20 s of CPU). The 2-replica run is the
real graph-mode `fit`; the one-device reference runs eagerly, which costs no tracing.
Two steps are compared: a global batch of 6 split 3 + 3, then one of 5 split 3 + 2.

Two control heads show that the comparison can fail: Keras' own MSE (a per-replica
mean: right on even batches, skewed on the uneven one) and a soft precision computed
per replica (the common snippet: wrong even on even batches).
"""

from common import losses

import numpy as np
import pytest
import tensorflow as tf

FEATURES = 6
LIST_SIZE = 5
SIDE = 4
CLASSES = 3


def _per_replica_precision(y_true, y_pred):
    """The common snippet: soft precision of whatever slice this replica holds."""
    probability = tf.sigmoid(y_pred)
    y_true = tf.cast(y_true, probability.dtype)
    return 1.0 - tf.reduce_sum(y_true * probability) / (tf.reduce_sum(probability) + 1e-7)


# head name → (output layer builder, loss)
def _heads():
    dense = tf.keras.layers.Dense

    def image(channels, activation):
        return lambda name: tf.keras.Sequential(
            [dense(SIDE * SIDE * channels), tf.keras.layers.Reshape((SIDE, SIDE, channels)),
             tf.keras.layers.Activation(activation)],
            name=name,
        )

    def vector(units):
        return lambda name: dense(units, name=name)

    return {
        "weighted_mse": (vector(2), losses.WeightedMSE()),
        "mse_plus_relative_error": (vector(2), losses.MSEPlusRelativeError(weight=0.3)),
        "huber": (vector(2), losses.Huber(delta=0.5)),
        "huber_nll": (vector(2), losses.HuberNLL(delta=0.8, scale=1.5)),
        "weighted_bce": (vector(1), losses.WeightedBinaryCrossentropy(3.0, from_logits=True)),
        "focal": (vector(1), losses.BinaryFocalCrossentropy(0.3, 2.0, from_logits=True)),
        "bce_soft_precision": (
            vector(1),
            losses.BCEWithSoftPrecision(2.0, precision_weight=1.5, from_logits=True),
        ),
        "dice": (image(CLASSES, "softmax"), losses.DiceLoss()),
        "masked_l1": (image(1, "softplus"), losses.MaskedL1()),
        "berhu": (image(1, "softplus"), losses.BerHu()),
        "silog": (image(1, "softplus"), losses.ScaleInvariantLogLoss()),
        "ranknet": (vector(LIST_SIZE), losses.RankNetLoss()),
        "pairwise_hinge": (vector(LIST_SIZE), losses.PairwiseHingeLoss(margin=0.5)),
        "listmle": (vector(LIST_SIZE), losses.ListMLELoss()),
        "listwise_mse": (vector(LIST_SIZE), losses.ListwiseMSE()),
        "triplet_semi_hard": (vector(3), losses.TripletLoss(0.5, "semi_hard", "squared_l2")),
        "triplet_batch_hard": (vector(3), losses.TripletLoss(0.5, "batch_hard", "l2")),
        "triplet_batch_all": (vector(3), losses.TripletLoss(0.5, "batch_all", "cosine")),
        "control_keras_mse": (vector(2), tf.keras.losses.MeanSquaredError()),
        "control_per_replica_precision": (vector(1), _per_replica_precision),
    }


LOSS_HEADS = [name for name in _heads() if not name.startswith("control")]
ENDPOINT_HEADS = ["adaptive_a", "adaptive_b", "uncertainty_weighting"]


def _build_model(run_eagerly):
    features = tf.keras.Input((FEATURES,), name="x")
    target_a = tf.keras.Input((1,), name="target_a")
    target_b = tf.keras.Input((1,), name="target_b")
    outputs = {name: build(name)(features) for name, (build, _) in _heads().items()}
    # Learned-parameter losses as endpoints: an AdaptiveHuber and a fixed Huber NLL,
    # combined by uncertainty weighting, added with add_loss.
    prediction_a = tf.keras.layers.Dense(1, name="adaptive_a")(features)
    prediction_b = tf.keras.layers.Dense(1, name="adaptive_b")(features)
    nll_a = losses.AdaptiveHuber(initial_delta=0.7, name="adaptive_huber")((target_a, prediction_a))
    nll_b = losses.AdaptiveHuber(learn_delta=False, learn_scale=False, name="fixed_nll")(
        (target_b, prediction_b)
    )
    total = losses.UncertaintyWeighting(2, initial_log_variance=0.3, name="uncertainty_weighting")(
        [nll_a, nll_b]
    )
    model = tf.keras.Model({"x": features, "target_a": target_a, "target_b": target_b}, outputs)
    model.add_loss(total)
    model.add_metric(total, name="endpoint_total")
    model.compile(
        optimizer=tf.keras.optimizers.SGD(0.1),
        loss={name: loss for name, (_, loss) in _heads().items()},
        run_eagerly=run_eagerly,
    )
    # Variables created inside the first traced step make tf.function trace it twice;
    # creating the loss metrics' and the optimizer's variables now saves that retrace.
    model.compiled_loss.build(model.output)
    model.optimizer.build(model.trainable_variables)
    return model


def _data(size, seed):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 3.0, size=(size, SIDE, SIDE)).astype("float32")
    depth[rng.uniform(size=depth.shape) < 0.25] = 0.0  # invalid pixels
    segmentation = rng.integers(0, CLASSES, size=(size, SIDE, SIDE)).astype("int32")
    segmentation[rng.uniform(size=segmentation.shape) < 0.1] = 255  # unlabelled pixels
    relevance = rng.integers(0, 4, size=(size, LIST_SIZE)).astype("float32")
    relevance[:, -1] = -1.0  # one padded item per list
    binary = np.array([[1], [0], [0], [1], [1], [0]], "int32")[:size]
    identities = np.array([0, 1, 2, 0, 1, 2], "int32")[:size]  # every pair spans the replicas
    regression = rng.normal(size=(size, 2)).astype("float32")
    regression += np.sign(regression)  # away from 0 for the relative error
    labels = {
        "weighted_mse": regression,
        "mse_plus_relative_error": regression,
        "huber": regression,
        "huber_nll": regression,
        "weighted_bce": binary,
        "focal": binary,
        "bce_soft_precision": binary,
        "dice": segmentation,
        "masked_l1": depth,
        "berhu": depth,
        "silog": depth,
        "ranknet": relevance,
        "pairwise_hinge": relevance,
        "listmle": relevance,
        "listwise_mse": relevance,
        "triplet_semi_hard": identities,
        "triplet_batch_hard": identities,
        "triplet_batch_all": identities,
        "control_keras_mse": regression,
        "control_per_replica_precision": binary,
    }
    inputs = {
        "x": rng.normal(size=(size, FEATURES)).astype("float32"),
        "target_a": rng.standard_t(3, size=(size, 1)).astype("float32"),
        "target_b": rng.normal(size=(size, 1)).astype("float32"),
    }
    return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(size)


def _head_weights(model, name):
    return [np.array(weight) for weight in model.get_layer(name).weights]


def _fit_two_steps(model, initial_weights):
    """Per step: the logged losses and every head's weight update."""
    model.set_weights(initial_weights)
    names = LOSS_HEADS + ["control_keras_mse", "control_per_replica_precision"] + ENDPOINT_HEADS
    steps = []
    for size, seed in ((6, 1), (5, 2)):
        before = {name: _head_weights(model, name) for name in names}
        history = model.fit(_data(size, seed), epochs=1, verbose=0)
        after = {name: _head_weights(model, name) for name in names}
        updates = {
            name: [new - old for new, old in zip(after[name], before[name])] for name in names
        }
        logs = {key: values[0] for key, values in history.history.items()}
        steps.append((logs, updates))
    return steps


@pytest.fixture(scope="module")
def runs(mirrored_strategy):
    tf.keras.utils.set_random_seed(7)
    one_device_model = _build_model(run_eagerly=True)
    initial_weights = one_device_model.get_weights()
    one_device = _fit_two_steps(one_device_model, initial_weights)
    with mirrored_strategy.scope():
        two_replica_model = _build_model(run_eagerly=False)
    two_replicas = _fit_two_steps(two_replica_model, initial_weights)
    return one_device, two_replicas


def _assert_same_step(one_device_step, two_replica_step, head, log_key):
    (logs_one, updates_one), (logs_two, updates_two) = one_device_step, two_replica_step
    np.testing.assert_allclose(logs_two[log_key], logs_one[log_key], rtol=1e-5, err_msg=log_key)
    for one, two in zip(updates_one[head], updates_two[head]):
        assert np.abs(one).max() > 0, f"{head}: no update at all, the comparison would be empty"
        np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-7, err_msg=head)


@pytest.mark.parametrize("step", [0, 1], ids=["batch_6_split_3_3", "batch_5_split_3_2"])
@pytest.mark.parametrize("head", LOSS_HEADS)
def test_loss_class_matches_one_device(runs, head, step):
    one_device, two_replicas = runs
    _assert_same_step(one_device[step], two_replicas[step], head, f"{head}_loss")


@pytest.mark.parametrize("step", [0, 1], ids=["batch_6_split_3_3", "batch_5_split_3_2"])
@pytest.mark.parametrize("head", ENDPOINT_HEADS)
def test_adaptive_huber_and_uncertainty_weighting_match_one_device(runs, head, step):
    one_device, two_replicas = runs
    _assert_same_step(one_device[step], two_replicas[step], head, "endpoint_total")


def _max_relative_difference(one, two):
    return max(
        float(np.max(np.abs(b - a)) / np.max(np.abs(a))) for a, b in zip(one, two)
    )


def test_controls_show_the_comparison_detects_skew(runs):
    one_device, two_replicas = runs
    # Keras' per-replica mean: exact on 3 + 3, its gradient skewed on 3 + 2 while the
    # logged loss still looks right.
    keras_mse_even = _max_relative_difference(
        one_device[0][1]["control_keras_mse"], two_replicas[0][1]["control_keras_mse"]
    )
    keras_mse_uneven = _max_relative_difference(
        one_device[1][1]["control_keras_mse"], two_replicas[1][1]["control_keras_mse"]
    )
    assert keras_mse_even < 1e-4
    assert keras_mse_uneven > 0.05
    np.testing.assert_allclose(
        two_replicas[1][0]["control_keras_mse_loss"],
        one_device[1][0]["control_keras_mse_loss"],
        rtol=1e-5,
    )
    # A batch-level term computed per replica is wrong even on an even split.
    precision_even = _max_relative_difference(
        one_device[0][1]["control_per_replica_precision"],
        two_replicas[0][1]["control_per_replica_precision"],
    )
    assert precision_even > 0.05


def _collective_op_types(concrete_function):
    """Types of the collective ops in a traced function, nested functions included."""
    graph_def = concrete_function.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return {node.op for node in nodes if "Collective" in node.op or "Nccl" in node.op}


def test_one_replica_graph_has_no_collective_ops(mirrored_strategy):
    """With one replica the losses build no all-gather or all-reduce at all."""
    features = tf.keras.Input((FEATURES,))
    _, labels = next(iter(_data(6, 1)))
    for name in LOSS_HEADS:
        build, loss = _heads()[name]
        label_spec = tf.TensorSpec([None, *labels[name].shape[1:]], labels[name].dtype)
        prediction_spec = tf.TensorSpec(build(name)(features).shape, tf.float32)
        one_replica = tf.function(lambda y, p, loss=loss: loss(y, p))
        assert not _collective_op_types(
            one_replica.get_concrete_function(label_spec, prediction_spec)
        ), name
    # The same check finds the collectives of a 2-replica step.
    two_replicas = tf.function(
        lambda y, p: mirrored_strategy.run(losses.Huber(), args=(y, p))
    )
    spec = tf.TensorSpec([None, 2], tf.float32)
    assert _collective_op_types(two_replicas.get_concrete_function(spec, spec))
