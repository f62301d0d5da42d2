"""Step time of each multi-task weighting against static weighting, one run, as ratios.

    .venv/bin/python scripts/bench_multitask.py            # or: scripts/benchmark.py multitask
    .venv/bin/python scripts/bench_multitask.py --rounds 5 --tasks 3

A small two-or-more-head convolutional network (a shared encoder, one head per task,
64x64 images, batch 32: the size of the depth_segmentation recipe's default) defined
here, trained by one `tf.function` step per weighting: static (Σ L_k, one backward
pass), uncertainty (common.losses.UncertaintyWeighting), FAMO (common.balancing.FAMO:
one backward pass and one extra forward pass), PCGrad and Aligned-MTL
(common.balancing.combined_gradients: one backward pass per task). Each is timed in
interleaved rounds (static, A, static, B, ...) so load from other processes hits all
alike; reported as the median step time and its ratio to static's. Writes
results/benchmarks/multitask.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from common import balancing, losses, results, timing

WEIGHTINGS = ("static", "uncertainty", "famo", "pcgrad", "aligned_mtl")


def network(num_tasks: int, size: int, filters: int) -> tf.keras.Model:
    """Shared encoder (3 levels) -> per task a decoder back to full size, 1 channel."""
    image = tf.keras.Input((size, size, 3))
    x, skips = image, []
    for level in range(3):
        x = tf.keras.layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = tf.keras.layers.MaxPooling2D()(x)
    outputs = []
    for task in range(num_tasks):
        y = x
        for level in reversed(range(3)):
            y = tf.keras.layers.Conv2DTranspose(filters * 2**level, 2, strides=2)(y)
            y = tf.keras.layers.Concatenate()([y, skips[level]])
            y = tf.keras.layers.Conv2D(filters * 2**level, 3, padding="same",
                                       activation="relu")(y)
        outputs.append(tf.keras.layers.Conv2D(1, 1, name=f"head{task}")(y))
    return tf.keras.Model(image, outputs)


def make_step(weighting: str, model: tf.keras.Model, num_tasks: int):
    optimizer = tf.keras.optimizers.Adam(1e-3)
    uncertainty = losses.UncertaintyWeighting(num_tasks)
    famo = balancing.FAMO(num_tasks)
    variables = model.trainable_variables + (
        uncertainty.trainable_variables if weighting == "uncertainty" else [])

    def task_losses(images, targets):
        outputs = model(images, training=True)
        return [tf.reduce_mean(tf.abs(out[..., 0] - targets[k])) + 0.1
                for k, out in enumerate(outputs)]

    @tf.function
    def step(images, targets):
        with tf.GradientTape(persistent=weighting in balancing.METHODS) as tape:
            values = task_losses(images, targets)
            if weighting == "uncertainty":
                total = uncertainty(values)
            elif weighting == "famo":
                weights = famo.loss_weights(balancing.global_mean(values))
                total = tf.reduce_sum(weights * tf.stack(values))
            else:
                total = tf.add_n(values)
        if weighting in balancing.METHODS:
            gradients = balancing.combined_gradients(tape, values, variables, method=weighting,
                                                     step=optimizer.iterations)
            balancing.apply_gradients(optimizer, gradients, variables)
        else:
            optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        if weighting == "famo":
            famo.update(tf.stack(values), tf.stack(task_losses(images, targets)))
        return total

    return step


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps per timing")
    parser.add_argument("--tasks", type=int, default=2, help="number of heads (>= 2)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--filters", type=int, default=12)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.tasks < 2 or args.rounds < 1 or args.steps < 1:
        print("error: --tasks must be >= 2, --rounds and --steps >= 1", file=sys.stderr)
        return 2
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)), tf.float32)
    targets = tf.constant(rng.uniform(0, 1, (args.tasks, args.batch, args.size, args.size)),
                          tf.float32)
    steps = {}
    for weighting in WEIGHTINGS:
        tf.keras.utils.set_random_seed(0)
        steps[weighting] = make_step(weighting, network(args.tasks, args.size, args.filters),
                                     args.tasks)
        steps[weighting](images, targets)  # trace and warm up outside the timing
    times = {weighting: [] for weighting in WEIGHTINGS}
    for _ in range(args.rounds):
        for weighting in WEIGHTINGS:
            started = time.perf_counter()
            for _ in range(args.steps):
                steps[weighting](images, targets).numpy()
            times[weighting].append((time.perf_counter() - started) / args.steps)
    static = statistics.median(times["static"])
    rows = [{"weighting": w, "median_step_ms": 1000 * statistics.median(times[w]),
             "ratio_to_static": statistics.median(times[w]) / static,
             "backward_passes": args.tasks if w in balancing.METHODS else 1,
             "extra_forward_passes": 1 if w == "famo" else 0} for w in WEIGHTINGS]
    print(f"{'weighting':<14}{'median step ms':>16}{'x static':>10}{'backward':>10}"
          f"{'extra fwd':>10}")
    for row in rows:
        print(f"{row['weighting']:<14}{row['median_step_ms']:>16.1f}"
              f"{row['ratio_to_static']:>10.2f}{row['backward_passes']:>10}"
              f"{row['extra_forward_passes']:>10}")
    record = {"benchmark": "multitask", "command": " ".join(["scripts/bench_multitask.py",
                                                             *argv]),
              "settings": vars(args), "rows": rows, "device": timing.device_info(),
              "versions": results.versions(), "git_commit": results.git_commit()}
    if not args.no_write:
        path = results.write(record, results.REPOSITORY / "results" / "benchmarks"
                             / "multitask.json")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
