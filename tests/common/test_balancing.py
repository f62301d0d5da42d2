"""common.balancing against brute-force NumPy / scipy versions of each paper's update."""

import itertools

from common import balancing

import numpy as np
import pytest
import tensorflow as tf
from scipy import optimize


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


def scipy_nash_mtl_alpha(gradients):
    """α > 0 with (M α)_k = 1 / α_k, M = G G^T / ||G G^T||_F, by scipy's least squares
    on α = exp(x) (so α > 0), from a start far from the solution."""
    gradients = np.asarray(gradients, np.float64)
    gram = gradients @ gradients.T
    gram /= np.linalg.norm(gram)
    found = optimize.least_squares(lambda x: gram @ np.exp(x) - np.exp(-x),
                                   np.zeros(len(gram)), xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert found.success
    alpha = np.exp(found.x)
    assert np.abs(gram @ alpha - 1 / alpha).max() < 1e-9 * alpha.max()
    return alpha


def scipy_cagrad_weights(gradients, c=0.4):
    """w on the simplex minimising w·(G g_0) + c ||g_0|| ||G^T w||, by SLSQP from
    several starts (the least objective kept)."""
    gradients = np.asarray(gradients, np.float64)
    gram, mean = gradients @ gradients.T, gradients.mean(0)
    radius = c * np.linalg.norm(mean)

    def objective(w):
        return w @ gradients @ mean + radius * np.sqrt(max(w @ gram @ w, 0.0))

    k, best = len(gradients), None
    starts = [np.full(k, 1 / k), *np.eye(k), *np.random.default_rng(0).dirichlet(np.ones(k), 4)]
    for start in starts:
        found = optimize.minimize(objective, start, method="SLSQP", bounds=[(0, 1)] * k,
                                  constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
                                  options={"ftol": 1e-15, "maxiter": 1000})
        if best is None or found.fun < best.fun:
            best = found
    return best.x, objective


def numpy_cagrad(gradients, weights, c=0.4):
    """Liu et al. 2021: g_0 + c ||g_0|| g_w / ||g_w||, rescaled by 1/(1 + c²), times K."""
    gradients = np.asarray(gradients, np.float64)
    mean, combined = gradients.mean(0), weights @ gradients
    return len(gradients) * (mean + c * np.linalg.norm(mean) * combined
                             / np.linalg.norm(combined)) / (1 + c**2)


def random_gradients(num_tasks, case, seed):
    """[K, 30] random task gradients of mixed scales; "conflict": task 1 mostly opposes
    task 0 (g_0 · g_1 < 0)."""
    rng = np.random.default_rng(seed)
    gradients = rng.normal(size=(num_tasks, 30)) * rng.uniform(0.05, 5, (num_tasks, 1))
    if case == "conflict":
        gradients[1] = -0.8 * gradients[0] + 0.3 * rng.normal(size=30)
        assert gradients[0] @ gradients[1] < 0
    return gradients.astype(np.float32)


SOLVER_CASES = [(k, case, seed) for k in (2, 3) for case in ("random", "conflict")
                for seed in range(3)]


@pytest.mark.parametrize("num_tasks,case,seed", SOLVER_CASES)
def test_nash_mtl_solves_its_bargaining_equation_like_scipy(num_tasks, case, seed):
    gradients = random_gradients(num_tasks, case, seed)
    alpha = scipy_nash_mtl_alpha(gradients)
    got = balancing.nash_mtl_weights(tf.constant(gradients)).numpy()
    np.testing.assert_allclose(got, alpha, rtol=1e-5)
    np.testing.assert_allclose(balancing.nash_mtl(tf.constant(gradients), max_norm=None),
                               alpha @ gradients, rtol=1e-4, atol=1e-5 * np.abs(
                                   alpha @ gradients).max())
    # The authors clip the update's norm at 1: the direction stays.
    clipped = balancing.nash_mtl(tf.constant(gradients)).numpy()
    expected = alpha @ gradients
    expected *= min(1.0, 1.0 / np.linalg.norm(expected))
    np.testing.assert_allclose(clipped, expected, rtol=1e-4, atol=1e-6)


def test_nash_mtl_stays_finite_without_a_solution():
    # Opposite gradients have no bargaining solution, a zero gradient none either.
    for gradients in ([[1.0, 0.0], [-1.0, 0.0]], [[1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0]] * 2):
        update = balancing.nash_mtl(tf.constant(gradients)).numpy()
        assert np.all(np.isfinite(update)) and np.linalg.norm(update) <= 1 + 1e-6


@pytest.mark.parametrize("num_tasks,case,seed", SOLVER_CASES)
def test_cagrad_solves_its_dual_like_scipy(num_tasks, case, seed):
    gradients = random_gradients(num_tasks, case, seed)
    weights, objective = scipy_cagrad_weights(gradients)
    got = balancing.cagrad_weights(tf.constant(gradients)).numpy().astype(np.float64)
    assert abs(got.sum() - 1) < 1e-6 and got.min() >= 0
    # No worse than scipy's minimum (and so at it: scipy's is a minimum too) ...
    assert objective(got) <= objective(weights) + 1e-7 * abs(objective(weights)) + 1e-9
    # ... and the same update.
    expected = numpy_cagrad(gradients, weights)
    np.testing.assert_allclose(balancing.cagrad(tf.constant(gradients)), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_cagrad_without_conflict_is_the_scaled_mean_and_keeps_zero_finite():
    # Gradients in one direction: w puts all on the smallest, the update is along g_0.
    gradients = np.array([[1.0, 0.0], [3.0, 0.0]], np.float32)
    np.testing.assert_allclose(balancing.cagrad_weights(tf.constant(gradients)), [1, 0],
                               atol=1e-6)
    np.testing.assert_allclose(balancing.cagrad(tf.constant(gradients)),
                               2 * (1 + 0.4) * gradients.mean(0) / (1 + 0.4**2), rtol=1e-5)
    # 0 in the hull of the gradients: g_w = 0 at the optimum, the update is K g_0 / (1 + c²).
    hull = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(balancing.cagrad(tf.constant(hull)),
                               3 * hull.mean(0) / (1 + 0.4**2), atol=1e-5)
    assert np.all(balancing.cagrad(tf.zeros([2, 3])).numpy() == 0)


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


def numpy_famo(losses_before, losses_after, learning_rate=0.025, weight_decay=1e-3):
    """Liu et al. 2023, Algorithm 1, with the logits stepped by Adam as the authors' code
    does (torch Adam: weight decay added to the gradient, betas 0.9 / 0.999, eps 1e-8).
    Returns the loss weights used at each step [T, K] and the final logits, moments."""
    k = losses_before.shape[1]
    logits, first, second, used = np.zeros(k), np.zeros(k), np.zeros(k), []
    for t, (before, after) in enumerate(zip(losses_before, losses_after), start=1):
        z = np.exp(logits) / np.exp(logits).sum()
        d_before, d_after = before + 1e-8, after + 1e-8
        c = 1 / np.sum(z / d_before)
        used.append(c * z / d_before)  # the step follows c Σ z_k ∇ log ℓ_k
        delta = np.log(d_before) - np.log(d_after)
        jacobian = np.diag(z) - np.outer(z, z)  # [i, j] = dz_i / dξ_j
        gradient = jacobian.T @ delta + weight_decay * logits
        first = 0.9 * first + 0.1 * gradient
        second = 0.999 * second + 0.001 * gradient**2
        logits = logits - learning_rate * (first / (1 - 0.9**t)) / (
            np.sqrt(second / (1 - 0.999**t)) + 1e-8)
    return np.array(used), logits, first, second


def random_decreasing_losses(num_tasks, steps, seed):
    rng = np.random.default_rng(seed)
    before = rng.uniform(0.2, 3.0, (steps, num_tasks))
    return before, before * rng.uniform(0.9, 1.0, (steps, num_tasks))


@pytest.mark.parametrize("num_tasks,steps,seed", [(2, 20, 0), (3, 20, 1), (4, 30, 2)])
def test_famo_steps_its_logits_by_adam_like_the_paper_and_the_authors(num_tasks, steps,
                                                                      seed):
    before, after = random_decreasing_losses(num_tasks, steps, seed)
    used, logits, first, second = numpy_famo(before, after)
    famo = balancing.FAMO(num_tasks)
    for t in range(steps):
        np.testing.assert_allclose(famo.loss_weights(tf.constant(before[t], tf.float32)),
                                   used[t], rtol=1e-5, err_msg=f"step {t}")
        famo.update(tf.constant(before[t], tf.float32), tf.constant(after[t], tf.float32))
    np.testing.assert_allclose(famo.logits.numpy(), logits, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(famo.first_moment.numpy(), first, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(famo.second_moment.numpy(), second, rtol=1e-4, atol=1e-12)
    assert famo.steps.numpy() == steps


def test_famo_moves_the_weights_where_a_plain_step_would_not():
    # Log-losses falling at 0.004 and 0.001 a step for 100 steps: Adam's step 0.025
    # reaches z ≈ [0.25, 0.75]; the plain step ξ -= 0.025 (J^T δ + γ ξ) stays at 0.5.
    before = np.tile(np.exp([0.0, 0.0]), (100, 1))
    after = before * np.exp([-0.004, -0.001])
    _, logits, _, _ = numpy_famo(before, after)
    famo = balancing.FAMO(2)
    for b, a in zip(before, after):
        famo.update(tf.constant(b, tf.float32), tf.constant(a, tf.float32))
    z = numpy_softmax(famo.logits.numpy())
    np.testing.assert_allclose(z, numpy_softmax(logits), rtol=1e-4)
    assert z[0] < 0.3


def test_famo_state_is_saved_and_restored_with_the_model(tmp_path):
    class Holder(tf.keras.Model):  # like the recipe's MultiTask: FAMO as an attribute
        def __init__(self):
            super().__init__()
            self.famo = balancing.FAMO(3)

    before, after = random_decreasing_losses(3, 4, seed=3)
    saved = Holder()
    for b, a in zip(before, after):
        saved.famo.update(tf.constant(b, tf.float32), tf.constant(a, tf.float32))
    path = tf.train.Checkpoint(model=saved).save(str(tmp_path / "checkpoint"))
    restored = Holder()
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for name in ("logits", "first_moment", "second_moment", "steps"):
        value = getattr(saved.famo, name).numpy()
        assert np.any(value != 0), name
        np.testing.assert_array_equal(getattr(restored.famo, name).numpy(), value, name)


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


def expected_combination(method, flat):
    """(shared update [P], task weights [K] of the heads' gradients) by the oracles."""
    if method == "pcgrad":
        return numpy_pcgrad(flat, [[1], [0]]), np.ones(2)
    if method == "aligned_mtl":
        return numpy_aligned_mtl(flat), np.ones(2)
    if method == "cagrad":
        return numpy_cagrad(flat, scipy_cagrad_weights(flat)[0]), np.ones(2)
    alpha = scipy_nash_mtl_alpha(flat)  # nash_mtl weights the heads' gradients by α too
    update = alpha @ flat
    return update * min(1.0, 1.0 / np.linalg.norm(update)), alpha


@pytest.mark.parametrize("method", ["pcgrad", "aligned_mtl", "nash_mtl", "cagrad"])
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
    expected, task_weights = expected_combination(method, flat)
    np.testing.assert_allclose(np.concatenate([got[i].numpy().ravel() for i in shared]),
                               expected, rtol=1e-4, atol=1e-6)
    for i, name in enumerate(names):
        if name != "shared":
            k = "ab".index(name)
            np.testing.assert_allclose(got[i], task_weights[k] * separate[k][i], rtol=1e-4,
                                       atol=1e-7)


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


@pytest.mark.parametrize("method", ["pcgrad", "aligned_mtl", "nash_mtl", "cagrad",
                                    "famo-weights"])
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


def famo_steps(strategy, x, ya, yb, start, steps=3):
    """`steps` FAMO steps (weighted loss, SGD, losses after, logit update) on the global
    batch, as the recipe's train_step takes them; returns the weights and FAMO's state."""
    with strategy.scope():
        model = two_head_model()
        optimizer = tf.keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
        famo = balancing.FAMO(2)
    for variable, value in zip(model.trainable_variables, start):
        variable.assign(value)

    def replica_step(x, ya, yb):
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            task_losses = head_losses(model, x, ya, yb)
            weights = famo.loss_weights(balancing.global_mean(task_losses))
            total = tf.reduce_sum(weights * tf.stack(task_losses)) / replicas
        optimizer.minimize(total, model.trainable_variables, tape=tape)
        after = head_losses(model, x, ya, yb)
        famo.update(balancing.global_mean(task_losses), balancing.global_mean(after))

    dataset = tf.data.Dataset.from_tensors((x, ya, yb)).unbatch().batch(len(x))
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    run = tf.function(lambda b: strategy.run(replica_step, args=b))
    for _ in range(steps):
        run(batch)
    state = [famo.logits, famo.first_moment, famo.second_moment, famo.steps]
    return [v.numpy() for v in model.trainable_variables], [v.numpy() for v in state]


def test_famo_two_replicas_step_like_one_device(mirrored_strategy):
    tf.keras.utils.set_random_seed(4)
    start = [v.numpy() for v in two_head_model().trainable_variables]
    x, ya, yb = toy_data(seed=5)
    one_weights, one_state = famo_steps(tf.distribute.get_strategy(), x, ya, yb, start)
    two_weights, two_state = famo_steps(mirrored_strategy, x, ya, yb, start)
    assert np.abs(one_state[0]).max() > 1e-3  # the logits moved
    for expected, got in zip(one_weights + one_state, two_weights + two_state):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="one of"):
        balancing.combined_gradients(None, [1.0, 2.0], [], method="mgda")
    with pytest.raises(ValueError, match="two or more"):
        balancing.combined_gradients(None, [1.0], [], method="pcgrad")
    with pytest.raises(ValueError, match="num_tasks"):
        balancing.FAMO(1)
    with pytest.raises(ValueError, match="at most"):
        balancing.cagrad(tf.zeros([balancing.CAGRAD_MAX_TASKS + 1, 3]))
