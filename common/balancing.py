"""Gradient-based task balancing for any Keras model with two or more heads, as
helpers for a custom `train_step`.

Gradient methods (one backward pass per task) combine the per-task gradients of the
*shared* weights, those that two or more task losses reach; a head's own weights get
their task's gradient unchanged (as LibMTL does), except under Nash-MTL, a loss
weighting, where they get it times their task's α (as its authors' code does):

  pcgrad       Yu et al. 2020, "Gradient Surgery for Multi-Task Learning": each task's
               gradient g_i, in a random order of the other tasks j, loses its component
               along g_j when g_i · g_j < 0 (g_j the original gradient); the update is
               the sum of the projected gradients.
  aligned_mtl  Senushkin et al. 2023, "Independent Component Alignment for Multi-Task
               Learning": with G = [g_1 .. g_K] = U Σ V^T, the aligned system is
               Ĝ = σ_min U V^T (every singular value made the smallest non-zero one,
               condition number 1); the update is Ĝ w with w = 1 (equal task weights),
               computed as G B w, B = σ_min V Λ^-1/2 V^T from the eigen-decomposition
               of the K x K Gram matrix G^T G = V Λ V^T.
  nash_mtl     Navon et al. 2022, "Multi-Task Learning as a Bargaining Game": α > 0 with
               (M α)_k = 1 / α_k, M the K x K Gram matrix of the task gradients divided
               by its Frobenius norm (the authors' code does: the update keeps the
               gradients' scale); the update Σ_k α_k g_k, its norm clipped to 1.
  cagrad       Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task
               Learning": w on the simplex minimising g_w · g_0 + √φ ||g_w||, g_w = Σ w_k g_k,
               g_0 the mean gradient, √φ = c ||g_0||; the update
               K (g_0 + √φ g_w / ||g_w||) / (1 + c²) (the authors' rescale=1, times K for
               the summed loss as in their code).

`FAMO` (Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization") needs no
per-task gradient: one backward pass of a weighted loss, and a step of the task logits
by Adam from the observed decrease of the log-losses.

Under a `tf.distribute` strategy every replica holds an equal share of the global
batch; the per-task gradients (and losses) are all-reduced before they are combined, so
the combination, which is not linear, sees the global-batch gradients and every replica
applies the same update: `apply_gradients` skips the optimizer's own summing.

    with tf.GradientTape(persistent=True) as tape:
        task_losses = [...]                      # K scalars: means over the replica's batch
    gradients = balancing.combined_gradients(tape, task_losses, model.trainable_variables,
                                             method="pcgrad", step=optimizer.iterations)
    balancing.apply_gradients(optimizer, gradients, model.trainable_variables)
"""

from __future__ import annotations

import itertools

import common  # noqa: F401  (Keras 2 before TensorFlow)

import numpy as np
import tensorflow as tf

# Nash-MTL: the authors' code (AvivNavon/nash-mtl, methods/weight_methods.py) and LibMTL
# (Nash_MTL.py) clip the norm of the shared weights' update at max_norm = 1.0.
NASH_MTL_MAX_NORM = 1.0
# A ridge of 1e-10 on the normalised Gram matrix keeps α finite when a task's gradient
# is zero or two are exactly opposite (no solution then); it moves a regular α by ~1e-10.
NASH_MTL_RIDGE = 1e-10
NASH_MTL_MAX_ITERATIONS = 100  # damped Newton; 4-25 iterations reach 1e-10 in practice
# CAGrad: c = 0.4, the authors' NYUv2 setting (Cranial-XIX/CAGrad nyuv2/run.sh
# --alpha 0.4; also the --c default of the nash-mtl and FAMO repositories).
CAGRAD_C = 0.4
CAGRAD_MAX_TASKS = 10  # the exact solver visits all 2^K - 1 supports


def _replicas() -> tuple[tf.distribute.ReplicaContext | None, int]:
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: nothing to reduce
        return None, 1
    return context, context.num_replicas_in_sync


def global_mean(values) -> tf.Tensor:
    """[K] the global-batch means of K replica-mean scalars (equal replica shares)."""
    stacked = tf.stack([tf.cast(value, tf.float32) for value in values])
    context, replicas = _replicas()
    if replicas == 1:
        return stacked
    return context.all_reduce(tf.distribute.ReduceOp.SUM, stacked) / replicas


def task_gradients(tape: tf.GradientTape, task_losses, variables) -> list[list]:
    """[K][V] gradients of each global-batch task loss; None where a task does not
    reach a variable. `task_losses` are means over this replica's examples."""
    context, replicas = _replicas()
    per_task = []
    for loss in task_losses:
        gradients = tape.gradient(loss, variables,
                                  unconnected_gradients=tf.UnconnectedGradients.NONE)
        gradients = [None if g is None else tf.convert_to_tensor(g) / replicas
                     for g in gradients]
        if replicas > 1:
            present = [g for g in gradients if g is not None]
            reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
            gradients = [None if g is None else next(reduced) for g in gradients]
        per_task.append(gradients)
    return per_task


def pcgrad(gradients: tf.Tensor, orders: tf.Tensor) -> tf.Tensor:
    """PCGrad update [P] from task gradients [K, P]; orders [K, K-1] int: for task i,
    the other tasks in the order its gradient is projected against them."""
    num_tasks = gradients.shape[0]
    squared_norms = tf.reduce_sum(gradients * gradients, axis=1)
    projected = []
    for i in range(num_tasks):
        g = gradients[i]
        for r in range(num_tasks - 1):
            j = orders[i, r]
            other = tf.gather(gradients, j)
            dot = tf.reduce_sum(g * other)
            coefficient = tf.math.divide_no_nan(tf.minimum(dot, 0.0),
                                                tf.gather(squared_norms, j))
            g = g - coefficient * other
        projected.append(g)
    return tf.add_n(projected)


def aligned_mtl(gradients: tf.Tensor, weights: tf.Tensor | None = None,
                tolerance: float = 1e-10) -> tf.Tensor:
    """Aligned-MTL update [P] from task gradients [K, P] and task weights [K] (ones).

    Eigenvalues below `tolerance` x the largest count as zero (dependent gradients):
    their directions are dropped and σ_min is the smallest of the others.
    """
    num_tasks = gradients.shape[0]
    weights = tf.ones([num_tasks], tf.float64) if weights is None else tf.cast(weights,
                                                                              tf.float64)
    g64 = tf.cast(gradients, tf.float64)
    gram = tf.matmul(g64, g64, transpose_b=True)  # [K, K] = G^T G with G = [g_1 .. g_K]
    eigenvalues, vectors = tf.linalg.eigh(gram)
    kept = eigenvalues > tolerance * tf.maximum(tf.reduce_max(eigenvalues), 1e-300)
    safe = tf.where(kept, eigenvalues, 1.0)
    sigma_min = tf.sqrt(tf.reduce_min(tf.where(kept, eigenvalues, float("inf"))))
    sigma_min = tf.where(tf.reduce_any(kept), sigma_min, 0.0)
    inverse_root = tf.where(kept, 1.0 / tf.sqrt(safe), 0.0)
    balance = sigma_min * tf.matmul(vectors * inverse_root, vectors, transpose_b=True)
    coefficients = tf.linalg.matvec(balance, weights)  # [K]: update = Σ_i α_i g_i
    return tf.cast(tf.linalg.matvec(g64, coefficients, transpose_a=True), gradients.dtype)


def nash_mtl_weights(gradients: tf.Tensor) -> tf.Tensor:
    """[K] Nash-MTL's α > 0 for task gradients [K, P]: (M α)_k = 1 / α_k with
    M = G G^T / ||G G^T||_F (the authors' normalisation).

    α is the minimum of the strictly convex f(α) = ½ α^T M α − Σ_k log α_k (its
    gradient is M α − 1/α), found by Newton's method damped as for self-concordant
    functions (step 1 / (1 + λ) while the Newton decrement λ ≥ 1/4), which stays in
    α > 0 without a line search; the iteration starts at α_k = M_kk^-1/2, the solution
    for orthogonal gradients.
    """
    g64 = tf.cast(gradients, tf.float64)
    gram = tf.matmul(g64, g64, transpose_b=True)
    gram = gram / tf.maximum(tf.norm(gram), 1e-300)
    gram += NASH_MTL_RIDGE * tf.eye(gradients.shape[0], dtype=tf.float64)

    def newton_step(alpha, _):
        residual = tf.linalg.matvec(gram, alpha) - 1.0 / alpha
        hessian = gram + tf.linalg.diag(1.0 / tf.square(alpha))
        direction = tf.linalg.solve(hessian, residual[:, None])[:, 0]
        decrement = tf.sqrt(tf.maximum(tf.reduce_sum(residual * direction), 0.0))
        size = 1.0 / (1.0 + tf.where(decrement < 0.25, tf.zeros_like(decrement), decrement))
        return alpha - size * direction, decrement

    alpha, _ = tf.while_loop(
        lambda alpha, decrement: decrement > 1e-12, newton_step,
        (1.0 / tf.sqrt(tf.linalg.diag_part(gram)), tf.constant(np.inf, tf.float64)),
        maximum_iterations=NASH_MTL_MAX_ITERATIONS)
    return tf.cast(alpha, gradients.dtype)


def _nash_mtl_update(gradients, alpha, max_norm):
    update = tf.linalg.matvec(gradients, alpha, transpose_a=True)
    return update if max_norm is None else tf.clip_by_norm(update, max_norm)


def nash_mtl(gradients: tf.Tensor, max_norm: float | None = NASH_MTL_MAX_NORM) -> tf.Tensor:
    """Nash-MTL update [P] from task gradients [K, P]: Σ_k α_k g_k, norm clipped at
    `max_norm` (None: not clipped)."""
    return _nash_mtl_update(gradients, nash_mtl_weights(gradients), max_norm)


def cagrad_weights(gradients: tf.Tensor, c: float = CAGRAD_C) -> tf.Tensor:
    """[K] the w on the simplex minimising F(w) = g_w · g_0 + c ||g_0|| ||g_w|| for task
    gradients [K, P] (g_w = Σ w_k g_k, g_0 their mean).

    Exact, for K ≤ CAGRAD_MAX_TASKS: on the support S of w, stationarity reads
    a_S + ρ M_SS w_S = ν 1 with M = G G^T, a = G g_0, ρ = c ||g_0|| / ||g_w||; with
    ||g_w|| = c ||g_0|| / ρ and Σ w = 1 it has one solution with ρ > 0 (a quadratic in
    ν). Each support's solution that is a point of the simplex is feasible, the minimum
    is among them: the one of least F wins. All 2^K - 1 supports are solved at once
    (a batch of K x K systems).
    """
    num_tasks = gradients.shape[0]
    if num_tasks > CAGRAD_MAX_TASKS:
        raise ValueError(f"cagrad: at most {CAGRAD_MAX_TASKS} tasks, got {num_tasks}")
    g64 = tf.cast(gradients, tf.float64)
    gram = tf.matmul(g64, g64, transpose_b=True)
    # F's argmin does not change with the gradients' scale; the ridge keeps every
    # M_SS invertible when gradients are dependent.
    scale = tf.maximum(tf.reduce_max(tf.linalg.diag_part(gram)), 1e-300)
    gram = gram / scale + 1e-12 * tf.eye(num_tasks, dtype=tf.float64)
    linear = tf.reduce_mean(gram, axis=1)  # a = G g_0
    radius = c * tf.sqrt(tf.maximum(tf.reduce_mean(gram), 0.0))  # c ||g_0||
    masks = np.array([[k in subset for k in range(num_tasks)]
                      for size in range(1, num_tasks + 1)
                      for subset in itertools.combinations(range(num_tasks), size)],
                     np.float64)  # [S, K]: every support
    supports = tf.constant(masks)
    # [S, K, K]: M_SS on the support, the identity off it
    systems = (tf.constant(masks[:, :, None] * masks[:, None, :]) * gram
               + tf.constant(np.eye(num_tasks) * (1.0 - masks)[:, :, None]))
    solved = tf.linalg.solve(systems, tf.stack([supports, supports * linear], axis=-1))
    u, v = solved[..., 0], solved[..., 1]  # M_SS^-1 1, M_SS^-1 a_S; zero off S
    sum_u, sum_v = tf.reduce_sum(u, -1), tf.reduce_sum(v, -1)
    discriminant = sum_v**2 - sum_u * (tf.linalg.matvec(v, linear) - radius**2)
    rho = tf.sqrt(tf.maximum(discriminant, 0.0))
    nu = (sum_v + rho) / sum_u
    weights = tf.math.divide_no_nan(nu[:, None] * u - v, rho[:, None])  # [S, K]
    feasible = (discriminant > 0) & tf.reduce_all(weights >= -1e-9, axis=-1)
    objective = (tf.linalg.matvec(weights, linear) + radius * tf.sqrt(tf.maximum(
        tf.reduce_sum(weights * tf.linalg.matmul(weights, gram), -1), 0.0)))
    objective = tf.where(feasible, objective, np.inf)
    best = tf.maximum(tf.gather(weights, tf.argmin(objective)), 0.0)
    uniform = tf.fill([num_tasks], tf.constant(1.0 / num_tasks, tf.float64))
    best = tf.where(tf.reduce_any(feasible), best / tf.reduce_sum(best), uniform)
    return tf.cast(best, gradients.dtype)


def cagrad(gradients: tf.Tensor, c: float = CAGRAD_C) -> tf.Tensor:
    """CAGrad update [P] from task gradients [K, P]: K (g_0 + c ||g_0|| g_w / ||g_w||)
    / (1 + c²), w = `cagrad_weights`."""
    num_tasks = gradients.shape[0]
    mean = tf.reduce_mean(gradients, axis=0)
    combined = tf.linalg.matvec(gradients, cagrad_weights(gradients, c), transpose_a=True)
    step = mean + tf.math.divide_no_nan(c * tf.norm(mean) * combined, tf.norm(combined))
    return num_tasks * step / (1.0 + c**2)


METHODS = {"pcgrad": pcgrad, "aligned_mtl": aligned_mtl, "nash_mtl": nash_mtl,
           "cagrad": cagrad}


def random_orders(num_tasks: int, step) -> tf.Tensor:
    """[K, K-1]: for each task, the other tasks in a random order fixed by `step`
    (stateless, so every replica draws the same)."""
    rows = []
    for i in range(num_tasks):
        noise = tf.random.stateless_uniform([num_tasks], seed=tf.stack(
            [tf.cast(step, tf.int64), tf.constant(i, tf.int64)]))
        permutation = tf.argsort(noise)
        rows.append(tf.boolean_mask(permutation, permutation != i))
    return tf.reshape(tf.stack(rows), [num_tasks, num_tasks - 1])


def combined_gradients(tape: tf.GradientTape, task_losses, variables, *, method: str,
                       step=0) -> list:
    """[V] gradients (None where no loss reaches a variable): the shared weights' by
    `method` from the global-batch task gradients, the others' the sum over tasks
    (weighted by α under nash_mtl)."""
    if method not in METHODS:
        raise ValueError(f"balancing method must be one of {tuple(METHODS)}, got {method!r}")
    if len(task_losses) < 2:
        raise ValueError(f"{method} needs two or more task losses, got {len(task_losses)}")
    per_task = task_gradients(tape, task_losses, variables)
    reached = [[grads[v] is not None for grads in per_task] for v in range(len(variables))]
    shared = [v for v in range(len(variables)) if sum(reached[v]) >= 2]
    task_weights, update = [1.0] * len(task_losses), None
    if shared:
        flat = tf.stack([tf.concat([
            tf.reshape(grads[v] if grads[v] is not None else tf.zeros_like(variables[v]),
                       [-1]) for v in shared], axis=0) for grads in per_task])  # [K, P]
        if method == "pcgrad":
            update = pcgrad(flat, random_orders(len(task_losses), step))
        elif method == "nash_mtl":
            alpha = nash_mtl_weights(flat)
            update = _nash_mtl_update(flat, alpha, NASH_MTL_MAX_NORM)
            task_weights = tf.unstack(alpha)
        else:
            update = METHODS[method](flat)
    combined = []
    for v in range(len(variables)):
        present = [weight * grads[v] for weight, grads in zip(task_weights, per_task)
                   if grads[v] is not None]
        combined.append(tf.add_n(present) if present else None)
    if update is not None:
        sizes = [variables[v].shape.num_elements() for v in shared]
        for v, piece in zip(shared, tf.split(update, sizes)):
            combined[v] = tf.reshape(piece, variables[v].shape)
    return combined


def apply_gradients(optimizer, gradients, variables) -> None:
    """Applies gradients that are already the global ones on every replica."""
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    optimizer.apply_gradients(pairs, skip_gradients_aggregation=True)


def step(optimizer, tape: tf.GradientTape, task_losses, replica_share, variables,
         method: str | None) -> None:
    """One optimizer step of a multi-task `train_step`. With a gradient `method` (one of
    METHODS; the tape persistent), the tasks' gradients combined by it; otherwise the
    gradient of `replica_share` (this replica's share of the weighted loss), where a
    variable no task reaches (another task's head of a single-task network) gets none."""
    if method in METHODS:
        gradients = combined_gradients(tape, task_losses, variables, method=method,
                                       step=optimizer.iterations)
        apply_gradients(optimizer, gradients, variables)
    else:
        gradients = tape.gradient(replica_share, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables)
                                   if g is not None])


# FAMO's task-logit optimizer, as the authors' code (Cranial-XIX/FAMO, famo.py) and
# LibMTL (weighting/FAMO.py) set it: torch Adam, lr 0.025 (FAMO_w_lr), L2-style weight
# decay 0.001 (LibMTL's FAMO_w_gamma; the authors' trainers take --gamma, default 0.01),
# betas (0.9, 0.999) and eps 1e-8 (torch's defaults).
FAMO_LEARNING_RATE = 0.025
FAMO_WEIGHT_DECAY = 1e-3
FAMO_BETAS = (0.9, 0.999)
FAMO_EPSILON = 1e-8
# Their losses are offset by this before the log and the division (min_losses = 0).
FAMO_LOSS_OFFSET = 1e-8


class FAMO(tf.Module):
    """FAMO task weighting (Liu, Feng, Stone & Liu 2023), O(1) in the number of tasks.

    With z = softmax(ξ) and D_k = ℓ_k + 1e-8 (ℓ_k the global-batch loss [K], taken
    as 0 if negative), the step follows ∇ Σ_k z_k log D_k / c, c = Σ_k z_k / D_k, i.e. the
    loss Σ_k w_k ℓ_k with w = `loss_weights(ℓ)` = (z_k / D_k) / c held constant. After
    the step, with δ_k = log D_k(θ_t) − log D_k(θ_t+1) on the same batch, `update` gives
    ξ the gradient J_softmax(ξ)^T δ + γ ξ (a task whose loss fell faster loses weight) and
    steps it by Adam (lr β = 0.025, γ = 0.001: the authors' code and LibMTL). ξ, Adam's
    moments and its step count are variables every replica updates identically from
    all-reduced losses; they are in the model's checkpoint when the FAMO object is an
    attribute of the model.
    """

    def __init__(self, num_tasks: int, learning_rate: float = FAMO_LEARNING_RATE,
                 weight_decay: float = FAMO_WEIGHT_DECAY, name: str = "famo"):
        super().__init__(name=name)
        if int(num_tasks) < 2:
            raise ValueError(f"FAMO: num_tasks must be >= 2, got {num_tasks}")
        self.learning_rate, self.weight_decay = float(learning_rate), float(weight_decay)

        def state(initial, name):
            return tf.Variable(initial, trainable=False, name=name,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

        self.logits = state(tf.zeros([int(num_tasks)]), "logits")
        self.first_moment = state(tf.zeros([int(num_tasks)]), "first_moment")
        self.second_moment = state(tf.zeros([int(num_tasks)]), "second_moment")
        self.steps = state(tf.constant(0, tf.int64), "steps")

    @staticmethod
    def _offset(losses) -> tf.Tensor:
        return tf.maximum(tf.cast(losses, tf.float32), 0.0) + FAMO_LOSS_OFFSET

    def loss_weights(self, task_losses: tf.Tensor) -> tf.Tensor:
        """[K] weights w_k = (z_k / D_k) / Σ_j (z_j / D_j) for global-batch losses [K]
        (no gradient)."""
        ratios = tf.nn.softmax(tf.identity(self.logits)) / self._offset(
            tf.stop_gradient(task_losses))
        return ratios / tf.reduce_sum(ratios)

    def update(self, before: tf.Tensor, after: tf.Tensor) -> None:
        """One Adam step of ξ from the global-batch losses [K] before and after the step."""
        delta = tf.math.log(self._offset(before)) - tf.math.log(self._offset(after))
        logits = tf.identity(self.logits)
        z = tf.nn.softmax(logits)
        gradient = z * (delta - tf.reduce_sum(z * delta)) + self.weight_decay * logits
        beta1, beta2 = FAMO_BETAS
        steps = tf.identity(self.steps) + 1
        first = beta1 * tf.identity(self.first_moment) + (1 - beta1) * gradient
        second = beta2 * tf.identity(self.second_moment) + (1 - beta2) * tf.square(gradient)
        t = tf.cast(steps, tf.float32)
        step = (self.learning_rate * (first / (1 - beta1**t))
                / (tf.sqrt(second / (1 - beta2**t)) + FAMO_EPSILON))
        self.steps.assign(steps)
        self.first_moment.assign(first)
        self.second_moment.assign(second)
        self.logits.assign(logits - step)
