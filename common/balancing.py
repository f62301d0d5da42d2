"""Gradient-based task balancing for any Keras model with two or more heads, as
helpers for a custom `train_step`.

Gradient methods (one backward pass per task) combine the per-task gradients of the
*shared* weights, those that two or more task losses reach; a head's own weights get
their task's gradient unchanged (as LibMTL does):

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

`FAMO` (Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization") needs no
per-task gradient: one backward pass of a weighted loss, and a weight update from the
observed decrease of the log-losses.

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

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf


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


METHODS = {"pcgrad": pcgrad, "aligned_mtl": aligned_mtl}


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
    `method` from the global-batch task gradients, the others' the sum over tasks."""
    if method not in METHODS:
        raise ValueError(f"balancing method must be one of {tuple(METHODS)}, got {method!r}")
    if len(task_losses) < 2:
        raise ValueError(f"{method} needs two or more task losses, got {len(task_losses)}")
    per_task = task_gradients(tape, task_losses, variables)
    reached = [[grads[v] is not None for grads in per_task] for v in range(len(variables))]
    shared = [v for v in range(len(variables)) if sum(reached[v]) >= 2]
    combined = []
    for v in range(len(variables)):
        present = [grads[v] for grads in per_task if grads[v] is not None]
        combined.append(tf.add_n(present) if present else None)
    if not shared:
        return combined
    flat = tf.stack([tf.concat([
        tf.reshape(grads[v] if grads[v] is not None else tf.zeros_like(variables[v]), [-1])
        for v in shared], axis=0) for grads in per_task])  # [K, P]
    if method == "pcgrad":
        update = pcgrad(flat, random_orders(len(task_losses), step))
    else:
        update = aligned_mtl(flat)
    sizes = [variables[v].shape.num_elements() for v in shared]
    for v, piece in zip(shared, tf.split(update, sizes)):
        combined[v] = tf.reshape(piece, variables[v].shape)
    return combined


def apply_gradients(optimizer, gradients, variables) -> None:
    """Applies gradients that are already the global ones on every replica."""
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    optimizer.apply_gradients(pairs, skip_gradients_aggregation=True)


class FAMO(tf.Module):
    """FAMO task weighting (Liu, Feng, Stone & Liu 2023), O(1) in the number of tasks.

    z = softmax(ξ); the step follows d = c Σ_i (z_i / ℓ_i) ∇ℓ_i with
    c = (Σ_i z_i / ℓ_i)^-1, i.e. the loss Σ_i w_i ℓ_i with w = `loss_weights(ℓ)` held
    constant. After the step, with δ_i = log ℓ_i(θ_t) − log ℓ_i(θ_t+1) on the same
    batch, `update` takes ξ ← ξ − β (J_z(ξ)^T δ + γ ξ): a task whose loss fell faster
    loses weight. β = `learning_rate` (0.025), γ = `weight_decay` (0.001), the paper's
    values. Losses must be positive. ξ lives in a variable every replica updates
    identically from all-reduced losses; it is part of the model's checkpoint when the
    FAMO object is an attribute of the model.
    """

    def __init__(self, num_tasks: int, learning_rate: float = 0.025,
                 weight_decay: float = 1e-3, name: str = "famo"):
        super().__init__(name=name)
        if int(num_tasks) < 2:
            raise ValueError(f"FAMO: num_tasks must be >= 2, got {num_tasks}")
        self.learning_rate, self.weight_decay = float(learning_rate), float(weight_decay)
        self.logits = tf.Variable(tf.zeros([int(num_tasks)]), trainable=False, name="logits",
                                  aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def loss_weights(self, task_losses: tf.Tensor) -> tf.Tensor:
        """[K] weights w_i = c z_i / ℓ_i for global-batch losses [K] (no gradient)."""
        losses = tf.maximum(tf.stop_gradient(tf.cast(task_losses, tf.float32)), 1e-8)
        ratios = tf.nn.softmax(tf.identity(self.logits)) / losses
        return ratios / tf.reduce_sum(ratios)

    def update(self, before: tf.Tensor, after: tf.Tensor) -> None:
        """One step of ξ from the global-batch losses [K] before and after the step."""
        delta = (tf.math.log(tf.maximum(tf.cast(before, tf.float32), 1e-8))
                 - tf.math.log(tf.maximum(tf.cast(after, tf.float32), 1e-8)))
        logits = tf.identity(self.logits)
        z = tf.nn.softmax(logits)
        gradient = z * (delta - tf.reduce_sum(z * delta))  # J_softmax(ξ)^T δ
        self.logits.assign(logits - self.learning_rate * (gradient + self.weight_decay * logits))
