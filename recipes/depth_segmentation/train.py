"""Depth estimation + semantic segmentation: one U-Net, two heads, balanced multi-task.

    python recipes/depth_segmentation/train.py

Trains the multi-task U-Net (shared encoder, one decoder per task that reads it through
its own attention masks) and the two single-task networks of the same encoder and
decoder, then reports, with paired bootstrap intervals over the test images, ΔM (mean
relative change over mIoU, pixel accuracy, abs err and AbsRel; negative = multi-task
better) and each task's gain. `--weighting`: static, uncertainty, dwa, famo (loss
weights) or pcgrad, aligned_mtl (per-task gradients combined, common.balancing). Data:
rendered rooms (default), `nyuv2:PATH` (the labelled .mat), `npz:PATH`.
`--evaluate_on=validation` scores on held-out training rooms instead of the test split
(for choosing settings).
"""

from __future__ import annotations

import os
import time

import common  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from absl import flags

from common import flags as common_flags
from common import results, training
from recipes.depth_segmentation import data, evaluate, model, report

RECIPE = "depth_segmentation"
FLAGS = flags.FLAGS

flags.DEFINE_enum("weighting", "static", model.WEIGHTINGS, "How the two tasks combine.")
flags.DEFINE_float("seg_weight", 1.0, "static: weight of the segmentation loss.")
# 0.5: the L1 depth loss in metres reaches the shared encoder with 1.7-3x the gradient
# norm of Dice + cross-entropy; halving it was best for segmentation on validation.
flags.DEFINE_float("depth_weight", 0.5, "static: weight of the depth loss.")
flags.DEFINE_float("dwa_temperature", 2.0, "dwa: temperature T.")
flags.DEFINE_enum("depth_loss", "l1", list(model.DEPTH_LOSSES), "Depth loss (invalid masked).")
flags.DEFINE_float("cross_entropy_weight", 1.0, "Pixel cross-entropy added to the Dice loss "
                   "(0: Dice alone).")
flags.DEFINE_bool("exchange", False, "Multi-task heads read both decoders' features.")
flags.DEFINE_integer("shared_levels", None, "Multi-task: encoder levels the tasks share "
                     "(default: all and the bottleneck); deeper ones are per task.")
flags.DEFINE_bool("attention", True, "Multi-task: each decoder reads the shared features "
                  "through its own soft mask (MTAN-style task attention).")
flags.DEFINE_float("shared_width", 1.0, "Multi-task: filters of the shared layers, as a "
                   "multiple of the single-task network's.")
flags.DEFINE_bool("baselines", True, "Also train the single-task networks (needed for ΔM).")
flags.DEFINE_integer("base_filters", 12, "U-Net width: filters of the first level.")
flags.DEFINE_integer("levels", 3, "U-Net depth: poolings in the encoder.")
flags.DEFINE_integer("train_images", 768, "synthetic: rooms for training.")
flags.DEFINE_integer("test_images", 256, "synthetic: rooms for testing.")
flags.DEFINE_integer("image_size", 64, "synthetic: image height and width.")
flags.DEFINE_string("resolution", "288x384", "nyuv2/npz: HxW the images are resized to "
                    "(288x384: LibMTL's NYUv2 protocol).")
flags.DEFINE_integer("num_classes", None, "Classes (default: the dataset's own).")
flags.DEFINE_float("test_fraction", 0.45, "nyuv2 without splits.mat / npz: share of images "
                   "held out for testing.")
flags.DEFINE_enum("evaluate_on", "test", ["test", "validation"], "Score on the test split, "
                  "or on the last --validation_fraction of the training images.")
flags.DEFINE_float("validation_fraction", 0.25, "Share of training images held out by "
                   "--evaluate_on=validation.")
# Upper bounds only a typo reaches: a loss weight of 1e3 already drowns the other task;
# at T = 1e3 DWA's weights are equal (static); past 8x shared filters, 256 base filters,
# 7 levels (sides in multiples of 256 pixels), 512-pixel or 50 000 rendered rooms the
# arrays or the render outgrow any machine this recipe is meant for.
common_flags.check_range("seg_weight", 0.0, 1e3)
common_flags.check_range("depth_weight", 0.0, 1e3)
common_flags.check_range("cross_entropy_weight", 0.0, 1e3)
common_flags.check_range("dwa_temperature", 1e-3, 1e3)
common_flags.check_range("shared_width", 0.25, 8.0)
common_flags.check_range("base_filters", 1, 256)
common_flags.check_range("levels", 1, 7)
common_flags.check_range("shared_levels", 0, 7, optional=True)
common_flags.check_range("train_images", 8, 50_000)
common_flags.check_range("test_images", 2, 50_000)
common_flags.check_range("image_size", 16, 512)
common_flags.check_range("num_classes", 2, 1000, optional=True)
common_flags.check_range("test_fraction", 0.01, 0.99)
common_flags.check_range("validation_fraction", 0.05, 0.5)
flags.register_multi_flags_validator(
    ["shared_levels", "levels"], lambda values: values["shared_levels"] is None
    or values["shared_levels"] <= values["levels"],
    message="--shared_levels must be at most --levels")
# Static weights of 0 and 0 train nothing: loss 0 every epoch, a record of an untrained
# network. The other weightings set their own weights and ignore these flags.
flags.register_multi_flags_validator(
    ["weighting", "seg_weight", "depth_weight"], lambda values: values["weighting"] != "static"
    or values["seg_weight"] > 0 or values["depth_weight"] > 0,
    message="--seg_weight and --depth_weight are both 0 with --weighting=static: at least "
            "one task weight must be > 0")
flags.register_validator(
    "dataset", lambda value: value == "synthetic" or (
        value.partition(":")[0] in ("nyuv2", "npz") and value.partition(":")[2] != ""),
    message="--dataset must be synthetic, nyuv2:PATH or npz:PATH")
flags.register_validator(
    "resolution", lambda value: len(value.split("x")) == 2
    and all(part.isdigit() and int(part) > 0 for part in value.split("x")),
    message="--resolution must be HxW, e.g. 288x384")

# 12 epochs: at 6 no network had converged, and the shared encoder, fitting two tasks,
# was further from it than either single-task one.
common_flags.set_defaults(epochs=12, global_batch_size=32, learning_rate=2e-3,
                          dataset="synthetic")
SMOKE = {"epochs": 3, "global_batch_size": 16, "train_images": 96, "test_images": 32,
         "image_size": 32}
NETWORKS = {"multi_task": model.TASKS, "segmentation_only": ("segmentation",),
            "depth_only": ("depth",)}
TOLERANCES = {"delta_m": 4.0, "miou_gain": 0.03, "abs_rel_gain": 0.025, "miou": 0.03,
              "pixel_accuracy": 0.03, "abs_rel": 0.025, "abs_err": 0.08, "delta1": 0.04}


def train_network(run, name: str, train: dict, num_classes: int) -> tf.keras.Model:
    """Builds and trains (or, in a resumed run, loads) network `name`."""
    tf.keras.utils.set_random_seed(FLAGS.seed)
    valid_depth = train["depths"][train["depths"] > 0]
    with run.strategy.scope():
        network = model.build_network(
            num_classes, NETWORKS[name], image_shape=train["images"].shape[1:3],
            base_filters=FLAGS.base_filters, levels=FLAGS.levels,
            depth_scale=float(np.median(valid_depth)), exchange=FLAGS.exchange,
            shared_levels=FLAGS.shared_levels, attention=FLAGS.attention,
            shared_width=FLAGS.shared_width)
        trainer = model.MultiTask(
            network, num_classes=num_classes, weighting=FLAGS.weighting,
            static_weights=(FLAGS.seg_weight, FLAGS.depth_weight), depth_loss=FLAGS.depth_loss,
            cross_entropy_weight=FLAGS.cross_entropy_weight,
            dwa_temperature=FLAGS.dwa_temperature)
        trainer.compile(optimizer=tf.keras.optimizers.Adam(FLAGS.learning_rate),
                        jit_compile=FLAGS.jit_compile)
    callbacks = []
    if trainer.weighting == "dwa":
        # DWA's λ follow the logged epoch losses: a resumed run replays the epochs its
        # backup holds, so λ continue as in an uninterrupted run.
        logged = report.network_history(training.history(run), name)
        for entry in logged[:training.saved_epoch(run, name)]:
            trainer.dwa.on_epoch_end(entry["epoch"] - 1, entry)
        callbacks.append(trainer.dwa)
    training.fit(run, trainer, data.as_dataset(train), epochs=FLAGS.epochs,
                 callbacks=callbacks, name=name)
    return network


def train() -> dict:
    run = training.start(RECIPE, common_flags.settings())
    height, width = (int(side) for side in FLAGS.resolution.split("x"))
    train_arrays, test, dataset_name, class_names = data.load(
        FLAGS.dataset, seed=FLAGS.seed, train_images=FLAGS.train_images,
        test_images=FLAGS.test_images, image_size=FLAGS.image_size,
        resolution=(height, width), test_fraction=FLAGS.test_fraction,
        num_classes=FLAGS.num_classes, multiple=2 ** (FLAGS.levels + 1))
    if FLAGS.smoke and FLAGS.dataset != "synthetic":  # after validation of the full data
        train_arrays, test = data.smoke_subset(train_arrays, "train"), data.smoke_subset(
            test, "test")
    if FLAGS.evaluate_on == "validation":  # the test split is not looked at
        train_arrays, test = data.hold_out(train_arrays, FLAGS.validation_fraction)
    num_classes = len(class_names)
    print(f"[{RECIPE}] {dataset_name}: {len(train_arrays['images'])} train / "
          f"{len(test['images'])} {FLAGS.evaluate_on} images, {num_classes} classes",
          flush=True)

    names = list(NETWORKS) if FLAGS.baselines else ["multi_task"]
    stats, found, networks, outputs = {}, {}, {}, {}
    for name in names:
        network = train_network(run, name, train_arrays, num_classes)
        outputs[name] = model.predict(network, test["images"])
        stats[name] = evaluate.statistics(outputs[name], test, num_classes)
        found[name] = evaluate.metrics_of(stats[name])
        networks[name] = {"network": network, "parameters": network.count_params()}
        training.save_model(run, network, serving=model.serving(network),
                            name="" if name == "multi_task" else name)
        print(f"[{RECIPE}] {name}: " + "  ".join(f"{k}={v:.4f}" for k, v in
                                                  found[name].items()), flush=True)
    sample = slice(0, 8)  # what the saved models must reproduce (tests load them)
    np.savez(run.path("test_predictions.npz"), images=test["images"][sample],
             **{task: value[sample] for task, value in outputs["multi_task"].items()})

    metrics = {}
    if FLAGS.baselines:
        compared = evaluate.compare(stats["multi_task"], stats["segmentation_only"],
                                    stats["depth_only"], seed=FLAGS.seed,
                                    resamples=200 if FLAGS.smoke else 1000)
        metrics["delta_m"] = compared.pop("delta_m")  # the headline leads the summary
        metrics.update(compared)
    metrics.update(found["multi_task"])
    history = training.history(run)
    last = report.network_history(history, "multi_task")[-1]
    metrics.update({f"final_weight_{task}": last[f"weight_{task}"] for task in model.TASKS})
    for name, entry in networks.items():
        entry["seconds"] = round(sum(r["seconds"] for r in report.network_history(history,
                                                                                 name)), 1)
    return training.finish(
        run,
        metrics=metrics,
        baselines={name: found[name] for name in found if name != "multi_task"},
        references=report.NYUV2_REFERENCES if FLAGS.dataset.startswith("nyuv2") else [],
        tables=report.tables(found, networks, history, class_names, FLAGS.weighting,
                             stats["multi_task"]["confusion"]),
        tolerances=TOLERANCES,
        dataset={"name": dataset_name, "classes": list(class_names),
                 "evaluated_on": FLAGS.evaluate_on,
                 "fingerprint": results.fingerprint(*train_arrays.values(), *test.values()),
                 "train_images": len(train_arrays["images"]),
                 "evaluation_images": len(test["images"]),
                 "image_size": list(test["images"].shape[1:3])},
        model=networks["multi_task"]["network"],
        artifacts=report.plots(run.path(""), test, outputs["multi_task"], history,
                               class_names, FLAGS.weighting),
        # CPU seconds and load beside the wall time: on a shared machine they say what a
        # quiet one would take.
        extra={"headline": "delta_m" if FLAGS.baselines else "miou",
               "cpu_seconds": round(time.process_time(), 1),
               "load_average": [round(load, 2) for load in os.getloadavg()]},
    )


if __name__ == "__main__":
    training.cli(train, smoke=SMOKE)
