"""common.balancing against brute-force NumPy versions of each paper's update."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from common import balancing


def numpy_pcgrad(gradients, orders):
    """Yu et al. 2020, Algorithm 1, one projection at a time, in float64."""
    gradients = np.asarray(gradients, np.float64)
    total = np.zeros(gradients.shape[1])
    for i, order in enumerate(orders):
        g = gradients[i].copy()
        for j in order:
            if g @ gradients[j] < 0:
                g -= (g @ gradients[j]) / (gradients[j] @ gradients[j]) * gradients[j]
        total += g
    return total


def numpy_aligned_mtl(gradients, weights=None):
    """Senushkin et al. 2023: G = U Σ V^T (columns g_i) -> σ_min U V^T w, by SVD."""
    columns = np.asarray(gradients, np.float64).T  # [P, K]
    u, s, vt = np.linalg.svd(columns, full_matrices=False)
    keep = s > 1e-5 * s.max()
    aligned = s[keep].min() * u[:, keep] @ vt[keep]
    return aligned @ (np.ones(columns.shape[1]) if weights is None else weights)


GRADIENTS = {  # small fixed task gradients [K, P]
    "conflict": [[1.0, 0.0, 2.0], [-1.0, 1.0, -0.5]],
    "agree": [[1.0, 2.0, 0.0], [0.5, 1.0, 1.0]],
    "three": [[1.0, -2.0, 0.5, 0.0], [-1.5, 0.5, 1.0, 2.0], [0.2, 1.0, -1.0, -0.3]],
    "scales": [[10.0, 0.0, 1.0], [-0.01, 0.02, 0.0]],
}


@pytest.mark.parametrize("case", sorted(GRADIENTS))
def test_pcgrad_matches_the_papers_projections_for_every_order(case):
    gradients = np.array(GRADIENTS[case], np.float32)
    k = len(gradients)
    others = [[j for j in range(k) if j != i] for i in range(k)]
    for orders in itertools.product(*(itertools.permutations(o) for o in others)):
        got = balancing.pcgrad(tf.constant(gradients), tf.constant(orders, tf.int32))
        np.testing.assert_allclose(got, numpy_pcgrad(gradients, orders), rtol=1e-5,
                                   atol=1e-6)


def test_pcgrad_removes_the_conflict_and_keeps_agreeing_gradients():
    conflict = np.array(GRADIENTS["conflict"], np.float32)
    update = balancing.pcgrad(tf.constant(conflict), tf.constant([[1], [0]]))
    assert all(update.numpy() @ g >= -1e-6 for g in conflict)
    agree = np.array(GRADIENTS["agree"], np.float32)
    np.testing.assert_allclose(balancing.pcgrad(tf.constant(agree), tf.constant([[1], [0]])),
                               agree.sum(0), rtol=1e-6)


@pytest.mark.parametrize("case", sorted(GRADIENTS))
def test_aligned_mtl_matches_the_svd_form(case):
    gradients = np.array(GRADIENTS[case], np.float32)
    got = balancing.aligned_mtl(tf.constant(gradients)).numpy()
    np.testing.assert_allclose(got, numpy_aligned_mtl(gradients), rtol=1e-5, atol=1e-6)


def test_aligned_mtl_equalises_the_singular_values_and_drops_dependent_directions():
    rng = np.random.default_rng(0)
    gradients = rng.normal(size=(3, 20)) * np.array([[10.0], [1.0], [0.1]])
    # The update is σ_min Σ_i u_i (v_i · 1): every component has the same scale.
    u, s, vt = np.linalg.svd(gradients.T, full_matrices=False)
    got = balancing.aligned_mtl(tf.constant(gradients, tf.float32)).numpy()
    np.testing.assert_allclose(u.T @ got, s.min() * vt.sum(1), rtol=1e-4, atol=1e-6)
    dependent = np.stack([gradients[0], 2 * gradients[0]]).astype(np.float32)
    got = balancing.aligned_mtl(tf.constant(dependent)).numpy()
    np.testing.assert_allclose(got, numpy_aligned_mtl(dependent), rtol=1e-4, atol=1e-6)
    assert np.all(np.isfinite(balancing.aligned_mtl(tf.zeros([2, 5])).numpy()))


def numpy_softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_famo_weights_give_the_normalised_log_loss_gradient():
    # On ℓ_i(θ) = ½|A_i θ - b_i|² + 0.1, the direction Σ w_i ∇ℓ_i must equal
    # c ∇_θ Σ_i z_i log ℓ_i (finite differences), c = (Σ z_i / ℓ_i)^-1.
    rng = np.random.default_rng(1)
    a, b, theta = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4)), rng.normal(size=5)
    logits = np.array([0.3, -0.2, 0.5])
    z = numpy_softmax(logits)

    def task_losses(t):
        return np.array([0.5 * np.sum((a[i] @ t - b[i]) ** 2) + 0.1 for i in range(3)])

    famo = balancing.FAMO(3)
    famo.logits.assign(logits)
    ell = task_losses(theta)
    weights = famo.loss_weights(tf.constant(ell, tf.float32)).numpy()
    direction = sum(weights[i] * a[i].T @ (a[i] @ theta - b[i]) for i in range(3))
    eps = 1e-6
    numeric = np.array([(z @ np.log(task_losses(theta + eps * e))
                         - z @ np.log(task_losses(theta - eps * e))) / (2 * eps)
                        for e in np.eye(5)])
    np.testing.assert_allclose(direction, numeric / np.sum(z / ell), rtol=1e-4, atol=1e-6)


def test_famo_update_follows_the_observed_log_loss_decrease():
    famo = balancing.FAMO(3, learning_rate=0.5, weight_decay=0.01)
    logits = np.array([0.1, -0.4, 0.2])
    famo.logits.assign(logits)
    before, after = np.array([1.0, 2.0, 0.5]), np.array([0.5, 1.9, 0.45])
    famo.update(tf.constant(before, tf.float32), tf.constant(after, tf.float32))
    delta = np.log(before) - np.log(after)
    # J_z^T δ by finite differences of softmax: independent of the closed form.
    eps = 1e-6
    jacobian = np.stack([(numpy_softmax(logits + eps * e) - numpy_softmax(logits - eps * e))
                         / (2 * eps) for e in np.eye(3)], axis=1)  # [i, j] = dz_i/dξ_j
    expected = logits - 0.5 * (jacobian.T @ delta + 0.01 * logits)
    np.testing.assert_allclose(famo.logits.numpy(), expected, rtol=1e-5, atol=1e-6)
    # the task whose loss fell fastest (task 0) lost weight
    assert numpy_softmax(famo.logits.numpy())[0] < numpy_softmax(logits)[0]


def two_head_model():
    inputs = tf.keras.Input((3,))
    hidden = tf.keras.layers.Dense(4, activation="tanh", name="shared")(inputs)
    return tf.keras.Model(inputs, {"a": tf.keras.layers.Dense(1, name="a")(hidden),
                                   "b": tf.keras.layers.Dense(2, name="b")(hidden)})


def head_losses(model, x, ya, yb):
    out = model(x)
    return [tf.reduce_mean(tf.square(out["a"][:, 0] - ya)),
            tf.reduce_mean(tf.reduce_sum(tf.square(out["b"] - yb), -1))]


def toy_data(seed=0, n=8):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=n).astype(np.float32),
            (3 * rng.normal(size=(n, 2))).astype(np.float32))


@pytest.mark.parametrize("method", ["pcgrad", "aligned_mtl"])
def test_shared_weights_get_the_combination_and_heads_their_own_gradient(method):
    tf.keras.utils.set_random_seed(0)
    model = two_head_model()
    x, ya, yb = toy_data()
    with tf.GradientTape(persistent=True) as tape:
        task_losses = head_losses(model, x, ya, yb)
    variables = model.trainable_variables
    got = balancing.combined_gradients(tape, task_losses, variables, method=method, step=3)
    separate = [tape.gradient(loss, variables) for loss in task_losses]
    names = [v.name.split("/")[0] for v in variables]
    shared = [i for i, name in enumerate(names) if name == "shared"]
    flat = np.stack([np.concatenate([separate[k][i].numpy().ravel() for i in shared])
                     for k in range(2)])
    expected = (numpy_pcgrad(flat, [[1], [0]]) if method == "pcgrad"
                else numpy_aligned_mtl(flat))
    np.testing.assert_allclose(np.concatenate([got[i].numpy().ravel() for i in shared]),
                               expected, rtol=1e-5, atol=1e-7)
    for i, name in enumerate(names):
        if name != "shared":
            np.testing.assert_allclose(got[i], separate["ab".index(name)][i], rtol=1e-6)


def step_weights(strategy, method, x, ya, yb, start):
    """One balanced SGD step on the global batch (x, ya, yb); returns the new weights."""
    with strategy.scope():
        model = two_head_model()
        optimizer = tf.keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
    for variable, value in zip(model.trainable_variables, start):
        variable.assign(value)

    def replica_step(x, ya, yb):
        with tf.GradientTape(persistent=True) as tape:
            task_losses = head_losses(model, x, ya, yb)
        if method == "famo-weights":  # FAMO's loss weights from all-reduced losses
            losses = balancing.global_mean(task_losses)
            return losses
        gradients = balancing.combined_gradients(tape, task_losses, model.trainable_variables,
                                                 method=method, step=optimizer.iterations)
        balancing.apply_gradients(optimizer, gradients, model.trainable_variables)
        return tf.constant(0.0)

    dataset = tf.data.Dataset.from_tensors((x, ya, yb)).unbatch().batch(len(x))
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    result = tf.function(lambda b: strategy.run(replica_step, args=b))(batch)
    if method == "famo-weights":
        return strategy.experimental_local_results(result)
    return [v.numpy() for v in model.trainable_variables]


@pytest.mark.parametrize("method", ["pcgrad", "aligned_mtl", "famo-weights"])
def test_two_replicas_combine_the_global_batch_gradients(mirrored_strategy, method):
    tf.keras.utils.set_random_seed(1)
    start = [v.numpy() for v in two_head_model().trainable_variables]
    x, ya, yb = toy_data(seed=2)
    one = step_weights(tf.distribute.get_strategy(), method, x, ya, yb, start)
    two = step_weights(mirrored_strategy, method, x, ya, yb, start)
    if method == "famo-weights":  # every replica sees the global-batch losses
        one = one[0]
        for replica_losses in two:
            np.testing.assert_allclose(replica_losses, one, rtol=1e-5)
        return
    for expected, got in zip(one, two):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # Combining each replica's half-batch gradients and averaging would differ: the
    # test can tell the two apart.
    halves = [step_weights(tf.distribute.get_strategy(), method, x[s], ya[s], yb[s], start)
              for s in (slice(0, 4), slice(4, 8))]
    averaged = [(h0 + h1) / 2 for h0, h1 in zip(*halves)]
    assert max(np.abs(a - e).max() for a, e in zip(averaged, one)) > 1e-4


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="one of"):
        balancing.combined_gradients(None, [1.0, 2.0], [], method="mgda")
    with pytest.raises(ValueError, match="two or more"):
        balancing.combined_gradients(None, [1.0], [], method="pcgrad")
    with pytest.raises(ValueError, match="num_tasks"):
        balancing.FAMO(1)
