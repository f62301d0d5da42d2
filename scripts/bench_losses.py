"""Speed of each loss of `common.losses`, forward + backward, beside its closest Keras built-in.

    python scripts/bench_losses.py              # or: python scripts/benchmark.py losses
    python scripts/bench_losses.py --rounds 5   # fewer timing rounds

Every loss runs as `tf.function` (value and gradient with respect to the predictions),
once without and once with `jit_compile=True` (XLA), on sizes of the recipes' batches.
Each is timed beside its Keras twin in interleaved rounds (ours, twin, ours, twin, ...)
so that load from other processes hits both alike, and reported as the ratio of the
medians: Huber, binary cross-entropy and focal are true twins (the same loss); for the
other losses the built-in named is only the nearest cost reference. Also: RankNet
vectorised against a Python loop over the pairs (eager, as such code runs) at list
length 50, and triplet mining at batch 1024, dimension 128. Writes
results/benchmarks/losses.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import losses, results, timing

import numpy as np
import tensorflow as tf

RNG = np.random.default_rng(0)


def _regression():
    return tuple(RNG.normal(size=(8192, 16)).astype("float32") for _ in range(2))


def _binary():
    labels = (RNG.uniform(size=(8192, 16)) < 0.1).astype("float32")
    return labels, RNG.normal(size=(8192, 16)).astype("float32") * 3


def _segmentation():
    labels = np.eye(13, dtype="float32")[RNG.integers(0, 13, size=(8, 120, 160))]
    return labels, tf.nn.softmax(RNG.normal(size=(8, 120, 160, 13)).astype("float32")).numpy()


def _depth():
    depth = RNG.uniform(0.5, 10.0, size=(8, 240, 320, 1)).astype("float32")
    depth[RNG.uniform(size=depth.shape) < 0.2] = 0.0
    return depth, RNG.uniform(0.5, 10.0, size=depth.shape).astype("float32")


def _lists():
    labels = RNG.integers(0, 5, size=(1024, 50)).astype("float32")
    labels[:, 45:] = -1.0
    return labels, RNG.normal(size=(1024, 50)).astype("float32")


KERAS = tf.keras.losses
REGRESSION, BINARY = "[8192, 16]", "[8192, 16] logits"
LISTS, DEPTH = "[1024, 50] lists", "[8, 240, 320, 1]"

# (name, inputs, make inputs, ours, Keras built-in, the built-in is the same loss)
CASES = [
    ("huber", REGRESSION, _regression, losses.Huber(1.0), KERAS.Huber(1.0), True),
    ("weighted_mse", REGRESSION, _regression, losses.WeightedMSE(), KERAS.MeanSquaredError(),
     False),
    ("mse_plus_relative_error", REGRESSION, _regression, losses.MSEPlusRelativeError(),
     KERAS.MeanSquaredError(), False),
    ("huber_nll", REGRESSION, _regression, losses.HuberNLL(1.0, 1.0), KERAS.Huber(1.0), False),
    ("bce (pos_weight 1)", BINARY, _binary, losses.WeightedBinaryCrossentropy(from_logits=True),
     KERAS.BinaryCrossentropy(from_logits=True), True),
    ("weighted_bce (pos_weight 9)", BINARY, _binary,
     losses.WeightedBinaryCrossentropy(9.0, from_logits=True),
     KERAS.BinaryCrossentropy(from_logits=True), False),
    ("focal", BINARY, _binary, losses.BinaryFocalCrossentropy(from_logits=True),
     KERAS.BinaryFocalCrossentropy(apply_class_balancing=True, from_logits=True), True),
    ("bce_with_soft_precision", BINARY, _binary,
     losses.BCEWithSoftPrecision(9.0, 1.0, from_logits=True),
     KERAS.BinaryCrossentropy(from_logits=True), False),
    ("dice", "[8, 120, 160, 13]", _segmentation, losses.DiceLoss(),
     KERAS.CategoricalCrossentropy(), False),
    ("masked_l1", DEPTH, _depth, losses.MaskedL1(), KERAS.MeanAbsoluteError(), False),
    ("berhu", DEPTH, _depth, losses.BerHu(), KERAS.MeanAbsoluteError(), False),
    ("scale_invariant_log", DEPTH, _depth, losses.ScaleInvariantLogLoss(),
     KERAS.MeanSquaredLogarithmicError(), False),
    ("ranknet", LISTS, _lists, losses.RankNetLoss(), KERAS.MeanSquaredError(), False),
    ("pairwise_hinge", LISTS, _lists, losses.PairwiseHingeLoss(), KERAS.MeanSquaredError(), False),
    ("listmle", LISTS, _lists, losses.ListMLELoss(), KERAS.MeanSquaredError(), False),
    ("listwise_mse", LISTS, _lists, losses.ListwiseMSE(), KERAS.MeanSquaredError(), False),
]


def forward_backward(loss, jit_compile: bool):
    """tf.function returning the loss and the sum of its gradient (pulled to the host).

    Inputs are arguments, not captured constants, so XLA cannot fold the work away.
    """

    @tf.function(jit_compile=jit_compile)
    def step(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = loss(y_true, y_pred)
        return value, tf.reduce_sum(tape.gradient(value, y_pred))

    return step


def _seconds(function, *args) -> float:
    start = time.perf_counter()
    for tensor in function(*args):
        tensor.numpy()
    return time.perf_counter() - start


def interleaved_medians(functions: dict, args, rounds: int) -> dict:
    """Median seconds of each function, timed in alternation after one warm-up call each.

    The order flips every round, so neither function always runs right after the other.
    """
    for function in functions.values():
        _seconds(function, *args)  # traces (and compiles, with XLA)
    seconds = {name: [] for name in functions}
    order = list(functions)
    for _ in range(rounds):
        for name in order:
            seconds[name].append(_seconds(functions[name], *args))
        order.reverse()
    return {name: statistics.median(values) for name, values in seconds.items()}


def ranknet_pair_loop(labels, scores):
    """RankNet with a Python loop over the (i, j) positions, vectorised over lists only."""
    valid = labels >= 0
    total = tf.zeros(tf.shape(labels)[:1])
    count = tf.zeros(tf.shape(labels)[:1])
    size = labels.shape[1]
    for i in range(size):
        for j in range(size):
            pair = valid[:, i] & valid[:, j] & (labels[:, i] > labels[:, j])
            value = tf.nn.softplus(scores[:, j] - scores[:, i])
            total += tf.where(pair, value, tf.zeros_like(value))
            count += tf.cast(pair, tf.float32)
    return tf.reduce_mean(tf.math.divide_no_nan(total, count))


def _eager_seconds(labels, scores):
    start = time.perf_counter()
    with tf.GradientTape() as tape:
        tape.watch(scores)
        value = ranknet_pair_loop(labels, scores)
    gradient = tape.gradient(value, scores)
    value.numpy(), gradient.numpy()
    return time.perf_counter() - start, float(value)


def ranknet_against_pair_loop(rounds: int) -> dict:
    labels = tf.constant(RNG.integers(0, 5, size=(256, 50)).astype("float32"))
    scores = tf.constant(RNG.normal(size=(256, 50)).astype("float32"))
    vectorised = forward_backward(losses.RankNetLoss(), jit_compile=False)
    vectorised_seconds = interleaved_medians({"vectorised": vectorised}, (labels, scores), rounds)
    # One run: the loop takes about a minute, thousands of times the vectorised call.
    loop_seconds, loop_value = _eager_seconds(labels, scores)
    return {
        "lists": 256,
        "list_length": 50,
        "vectorised_ms": 1e3 * vectorised_seconds["vectorised"],
        "pair_loop_ms": 1e3 * loop_seconds,
        "speedup": loop_seconds / vectorised_seconds["vectorised"],
        "same_value": abs(loop_value - float(losses.RankNetLoss()(labels, scores))) < 1e-5,
    }


def triplet_mining(rounds: int) -> list[dict]:
    labels = tf.constant(np.repeat(np.arange(256), 4))  # P×K = 256 identities × 4 images
    embeddings = tf.math.l2_normalize(RNG.normal(size=(1024, 128)).astype("float32"), -1)
    rows = []
    for mining in ("semi_hard", "batch_hard", "batch_all"):
        loss = losses.TripletLoss(0.2, mining)
        functions = {jit: forward_backward(loss, jit) for jit in (False, True)}
        medians = interleaved_medians(functions, (labels, embeddings), rounds)
        for jit, seconds in medians.items():
            rows.append({"mining": mining, "batch": 1024, "dimension": 128, "jit_compile": jit,
                         "ms": 1e3 * seconds})
    return rows


def loss_cases(rounds: int) -> list[dict]:
    rows = []
    for name, shape, make_inputs, ours, twin, same_loss in CASES:
        args = tuple(tf.constant(array) for array in make_inputs())
        for jit in (False, True):
            functions = {"ours": forward_backward(ours, jit), "twin": forward_backward(twin, jit)}
            medians = interleaved_medians(functions, args, rounds)
            rows.append({
                "loss": name,
                "inputs": shape,
                "jit_compile": jit,
                "ours_ms": 1e3 * medians["ours"],
                "keras": type(twin).__name__ + ("" if same_loss else " (cost reference)"),
                "keras_ms": 1e3 * medians["twin"],
                "ratio": medians["ours"] / medians["twin"],
                "same_loss": same_loss,
            })
            print(f"  {name:<28} jit={str(jit):<5} {rows[-1]['ratio']:.2f}x", flush=True)
    return rows


def print_table(record: dict) -> None:
    print(f"\n{'loss':<28}{'inputs':<20}{'XLA':<6}{'ours ms':>9}{'keras ms':>10}{'ratio':>7}"
          "  keras")
    for row in record["losses"]:
        print(f"{row['loss']:<28}{row['inputs']:<20}{'yes' if row['jit_compile'] else 'no':<6}"
              f"{row['ours_ms']:>9.2f}{row['keras_ms']:>10.2f}{row['ratio']:>7.2f}  {row['keras']}")
    loop = record["ranknet_vs_pair_loop"]
    print(f"\nranknet, {loop['lists']} lists of {loop['list_length']}: vectorised "
          f"{loop['vectorised_ms']:.2f} ms, Python pair loop {loop['pair_loop_ms']:.0f} ms: "
          f"{loop['speedup']:.0f}x faster (same value: {loop['same_value']})")
    print("\ntriplet mining, batch 1024, dimension 128 (forward + backward):")
    for row in record["triplet"]:
        xla = "yes" if row["jit_compile"] else "no"
        print(f"  {row['mining']:<11} XLA {xla:<4}{row['ms']:>9.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per function")
    parser.add_argument("--output", default=str(results.RESULTS_DIR / "benchmarks" / "losses.json"))
    options = parser.parse_args(argv)
    load_before = os.getloadavg()
    print("losses against their Keras twins (ratio of median times):", flush=True)
    record = {
        "benchmark": "losses",
        "what": (
            "forward + backward of each loss under tf.function, median of interleaved rounds; "
            "ratio = ours / Keras built-in (a twin where same_loss, else a cost reference)"
        ),
        "rounds": options.rounds,
        "losses": loss_cases(options.rounds),
        "ranknet_vs_pair_loop": ranknet_against_pair_loop(options.rounds),
        "triplet": triplet_mining(options.rounds),
        "device": timing.device_info(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "versions": results.versions(),
        "git_commit": results.git_commit(),
    }
    path = results.write(record, options.output)
    print_table(record)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
