"""Triplet mining against brute-force loops over pairs and triplets (TF Addons' definition)."""

import itertools

from common import losses

import numpy as np
import pytest
import tensorflow as tf

from ._checks import assert_finite_value_and_gradient, assert_gradient_matches_finite_differences

RNG = np.random.default_rng(70)
MININGS = ["semi_hard", "batch_hard", "batch_all"]
DISTANCES = ["squared_l2", "l2", "cosine"]


def _np_distance(a, b, distance):
    if distance == "cosine":
        norms = np.linalg.norm(a) * np.linalg.norm(b)
        return 1.0 - (a @ b / norms if norms > 0 else 0.0)
    squared = float(np.sum((a - b) ** 2))
    return squared if distance == "squared_l2" else np.sqrt(squared)


def _distance_table(embeddings, distance):
    size = len(embeddings)
    return [
        [_np_distance(embeddings[i], embeddings[j], distance) for j in range(size)]
        for i in range(size)
    ]


def _np_semi_hard(labels, embeddings, margin, distance):
    """TF Addons TripletSemiHardLoss, from its documentation: for each positive pair (a, p),
    the nearest negative farther than d(a, p), else the farthest negative; the mean over
    positive pairs. (A pair whose anchor has no negative forms no triplet: skipped.)"""
    d = _distance_table(embeddings, distance)
    total, count = 0.0, 0
    for a, p in itertools.permutations(range(len(labels)), 2):
        if labels[a] != labels[p]:
            continue
        negatives = [d[a][n] for n in range(len(labels)) if labels[n] != labels[a]]
        if not negatives:
            continue
        farther = [value for value in negatives if value > d[a][p]]
        negative = min(farther) if farther else max(negatives)
        total += max(margin + d[a][p] - negative, 0.0)
        count += 1
    return total / count if count else 0.0


def _np_batch_hard(labels, embeddings, margin, distance):
    d = _distance_table(embeddings, distance)
    values = []
    for a in range(len(labels)):
        positives = [d[a][p] for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        negatives = [d[a][n] for n in range(len(labels)) if labels[n] != labels[a]]
        if positives and negatives:
            values.append(max(margin + max(positives) - min(negatives), 0.0))
    return np.mean(values) if values else 0.0


def _np_batch_all(labels, embeddings, margin, distance):
    d = _distance_table(embeddings, distance)
    positive_losses = []
    for a, p, n in itertools.permutations(range(len(labels)), 3):
        if labels[a] == labels[p] and labels[a] != labels[n]:
            value = margin + d[a][p] - d[a][n]
            if value > 0:
                positive_losses.append(value)
    return np.mean(positive_losses) if positive_losses else 0.0


BRUTE_FORCE = {"semi_hard": _np_semi_hard, "batch_hard": _np_batch_hard, "batch_all": _np_batch_all}


def _case(size=12, dimension=4, integer=False):
    labels = RNG.integers(0, 4, size=size)
    if integer:  # small integers: many exactly equal distances (ties)
        return labels, RNG.integers(-2, 3, size=(size, dimension)).astype("float64")
    return labels, RNG.normal(size=(size, dimension))


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
def test_mining_matches_brute_force(mining, distance):
    for margin, integer in ((0.2, False), (1.0, False), (1.0, True), (0.0, True)):
        if integer and distance == "cosine":
            continue  # cosine of integer vectors is not exact: no exact ties to test
        labels, embeddings = _case(integer=integer)
        expected = BRUTE_FORCE[mining](labels, embeddings, margin, distance)
        ours = losses.triplet_loss(labels, embeddings, margin, mining, distance).numpy()
        np.testing.assert_allclose(
            ours, expected, rtol=1e-9, atol=1e-12, err_msg=f"{margin=} {integer=}"
        )


def test_semi_hard_with_tf_addons_defaults():
    # TF Addons' TripletSemiHardLoss defaults: margin 1.0 on plain L2 distances.
    labels, embeddings = _case(size=20, dimension=3)
    np.testing.assert_allclose(
        losses.TripletLoss(margin=1.0, distance="l2")(labels, embeddings),
        _np_semi_hard(labels, embeddings, 1.0, "l2"),
        rtol=1e-9,
    )


@pytest.mark.parametrize("mining", MININGS)
def test_gradients_match_finite_differences(mining):
    labels, embeddings = _case(size=8, dimension=3)
    for distance in DISTANCES:
        assert_gradient_matches_finite_differences(
            lambda e: losses.triplet_loss(labels, e, 0.5, mining, distance), embeddings, rtol=1e-5
        )


@pytest.mark.parametrize("mining", MININGS)
def test_no_positive_pair_no_negative_and_identical_embeddings_are_finite(mining):
    """The trap: a batch without a positive pair divides by zero in the usual code (NaN)."""
    embeddings = RNG.normal(size=(6, 3))
    for distance in DISTANCES:
        value, gradient = assert_finite_value_and_gradient(
            lambda e: losses.triplet_loss(np.arange(6), e, 0.2, mining, distance), embeddings
        )
        assert value.numpy() == 0.0 and np.all(gradient.numpy() == 0.0)
        value, _ = assert_finite_value_and_gradient(
            lambda e: losses.triplet_loss(np.zeros(6, "int32"), e, 0.2, mining, distance),
            embeddings,
        )
        assert value.numpy() == 0.0
        # Zero variance: all embeddings equal (distance 0, sqrt's kink), and all zero (cosine).
        for constant in (np.ones((6, 3)), np.zeros((6, 3))):
            value, _ = assert_finite_value_and_gradient(
                lambda e: losses.triplet_loss([0, 0, 1, 1, 2, 2], e, 0.2, mining, distance),
                constant,
            )
            assert value.numpy() == pytest.approx(0.2)  # every triplet at margin + 0 − 0


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_embeddings_are_computed_in_float32(dtype):
    labels, embeddings = _case()
    half = tf.constant(embeddings, dtype)
    for mining in MININGS:
        value = losses.triplet_loss(labels, half, 0.2, mining)
        assert value.dtype == tf.float32
        reference = losses.triplet_loss(labels, tf.cast(half, tf.float32), 0.2, mining)
        np.testing.assert_allclose(value, reference, rtol=1e-6)


@pytest.mark.parametrize(
    "mining,distance", [("semi_hard", "squared_l2"), ("batch_hard", "l2"), ("batch_all", "cosine")]
)
def test_xla_compiles_to_the_same_values(mining, distance):
    labels, embeddings = _case(size=16)
    embeddings = embeddings.astype("float32")
    compiled = tf.function(
        lambda e: losses.triplet_loss(labels, e, 0.3, mining, distance), jit_compile=True
    )
    eager = losses.triplet_loss(labels, embeddings, 0.3, mining, distance)
    np.testing.assert_allclose(compiled(embeddings), eager, rtol=1e-5, atol=1e-7)


def test_label_shapes_dtypes_and_argument_errors():
    labels, embeddings = _case()
    reference = losses.triplet_loss(labels, embeddings)
    for variant in (
        labels[:, None],
        labels.astype("int64"),
        labels.astype("float32"),
        tf.constant(labels, tf.int32),
    ):
        np.testing.assert_allclose(losses.triplet_loss(variant, embeddings), reference, rtol=1e-12)
    with pytest.raises(ValueError, match="labels has shape"):
        losses.triplet_loss(labels[:5], embeddings)
    with pytest.raises(ValueError, match="embeddings must be"):
        losses.triplet_loss(labels, embeddings[:, 0])
    with pytest.raises(ValueError, match="mining"):
        losses.triplet_loss(labels, embeddings, mining="hard")
    with pytest.raises(ValueError, match="distance"):
        losses.TripletLoss(distance="euclidean")
    with pytest.raises(ValueError, match="sample_weight"):
        losses.TripletLoss()(labels, embeddings, sample_weight=np.ones(12))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_sorted_search_matches_numpy_searchsorted_with_ties(jit_compile):
    # The binary search that replaces tf.searchsorted (which XLA expands to [R, V, C]).
    from common.losses.metric_learning import _count_sorted

    for columns in (1, 2, 7, 64):
        rows = np.sort(RNG.integers(0, 5, size=(3, columns)).astype("float32"), axis=-1)
        values = RNG.integers(-1, 7, size=(3, 9)).astype("float32")
        for strict, side in ((False, "right"), (True, "left")):
            search = tf.function(lambda r, v: _count_sorted(r, v, strict), jit_compile=jit_compile)
            expected = [np.searchsorted(rows[k], values[k], side=side) for k in range(3)]
            np.testing.assert_array_equal(search(rows, values), expected)
