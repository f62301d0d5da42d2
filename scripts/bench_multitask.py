"""Step time of each multi-task weighting against static weighting, one run, as ratios.

    .venv/bin/python scripts/bench_multitask.py            # or: scripts/benchmark.py multitask
    .venv/bin/python scripts/bench_multitask.py --rounds 5 --no-write   # quicker

Times the network the depth_segmentation default trains: `model.build` and
the `model.MultiTask` train step with the recipe's default settings (`Config()` of
recipes/depth_segmentation/config.py: U-Net of 12 filters, 3 levels, attention, batch 32
of 64x64 rendered rooms, Adam), once per `--weighting`: static, uncertainty,
dwa (one backward pass), famo (one backward pass and a forward pass after the step),
pcgrad, aligned_mtl, nash_mtl, cagrad (common.balancing: one backward pass per task).
Each step is the recipe's own `train_step` in one `tf.function`, traced and warmed up
before the timing; the weightings are timed in interleaved rounds (every other round in
reverse order) so load from other processes hits all alike. Reported: the median wall
time of a step and the median CPU time this process spends on it (all its threads; on a
shared machine it varies less with the others' load than the wall time), each with its
ratio to static's. Writes `--output` (results/benchmarks/multitask.json), prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import results, timing

import tensorflow as tf

from recipes.depth_segmentation import model, synthetic
from recipes.depth_segmentation.config import Config

WEIGHTINGS = model.LOSS_WEIGHTINGS + model.GRADIENT_WEIGHTINGS
DEFAULT_OUTPUT = results.REPOSITORY / "results" / "benchmarks" / "multitask.json"


def make_step(config: Config, batch: dict, num_classes: int):
    """The recipe's train step for `config` on a fresh network built as the recipe builds
    it, as a tf.function of no arguments (the batch is fixed)."""
    tf.keras.utils.set_random_seed(config.seed)
    trainer = model.build_trainer(config, num_classes, model.TASKS, batch["images"],
                                  batch["depths"])
    data = (tf.constant(batch["images"]),
            {"labels": tf.constant(batch["labels"]), "depth": tf.constant(batch["depths"])})
    return tf.function(lambda: trainer.train_step(data)["loss"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timing rounds")
    parser.add_argument("--steps", type=int, default=1, help="steps per weighting per round")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="record path")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        print("error: --rounds and --steps must be >= 1", file=sys.stderr)
        return 2
    config = Config()  # the default config (configs/default.cfg changes nothing)
    batch = synthetic.rooms(config.global_batch_size, size=config.image_size, seed=config.seed)
    num_classes = len(synthetic.SCENE_CLASSES)
    steps = {}
    for weighting in WEIGHTINGS:
        steps[weighting] = make_step(dataclasses.replace(config, weighting=weighting), batch,
                                     num_classes)
        steps[weighting]().numpy()  # trace and warm up outside the timing
        steps[weighting]().numpy()
    wall = {weighting: [] for weighting in WEIGHTINGS}
    cpu = {weighting: [] for weighting in WEIGHTINGS}
    for round_index in range(args.rounds):
        # Every other round in reverse: no weighting always follows the same one.
        for weighting in WEIGHTINGS[::-1 if round_index % 2 else 1]:
            started, started_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                steps[weighting]().numpy()
            wall[weighting].append((time.perf_counter() - started) / args.steps)
            cpu[weighting].append((time.process_time() - started_cpu) / args.steps)
    static_wall, static_cpu = statistics.median(wall["static"]), statistics.median(cpu["static"])
    tasks = len(model.TASKS)
    rows = [{"weighting": w, "median_step_ms": 1000 * statistics.median(wall[w]),
             "ratio_to_static": statistics.median(wall[w]) / static_wall,
             "median_cpu_ms": 1000 * statistics.median(cpu[w]),
             "cpu_ratio_to_static": statistics.median(cpu[w]) / static_cpu,
             "backward_passes": tasks if w in model.GRADIENT_WEIGHTINGS else 1,
             "extra_forward_passes": 1 if w == "famo" else 0} for w in WEIGHTINGS]
    print(f"{'weighting':<14}{'wall ms':>10}{'x static':>10}{'CPU ms':>10}{'x static':>10}"
          f"{'backward':>10}{'extra fwd':>10}")
    for row in rows:
        print(f"{row['weighting']:<14}{row['median_step_ms']:>10.1f}"
              f"{row['ratio_to_static']:>10.2f}{row['median_cpu_ms']:>10.1f}"
              f"{row['cpu_ratio_to_static']:>10.2f}{row['backward_passes']:>10}"
              f"{row['extra_forward_passes']:>10}")
    record = {"benchmark": "multitask", "command": " ".join(["scripts/bench_multitask.py",
                                                             *argv]),
              "settings": {"rounds": args.rounds, "steps": args.steps,
                           "network": "depth_segmentation default (model.build)",
                           "global_batch_size": config.global_batch_size,
                           "image_size": config.image_size,
                           "base_filters": config.base_filters, "levels": config.levels,
                           "attention": config.attention},
              "rows": rows, "device": timing.device_info(),
              "load_average": [round(load, 2) for load in os.getloadavg()],
              "versions": results.versions(), "git_commit": results.git_commit()}
    if not args.no_write:
        path = results.write(record, args.output)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
