"""Depth estimation + semantic segmentation: one U-Net, two heads, balanced multi-task.

    python recipes/depth_segmentation/train.py

Trains the multi-task U-Net (shared encoder, one decoder per task that reads it through
its own attention masks) and the two single-task networks of the same encoder and
decoder, each from `--num_seeds` seeds on the same rooms, then reports ΔM (mean relative
change over mIoU, pixel accuracy, abs err and AbsRel; negative = multi-task better) and
each task's gain as means over the seeds, with intervals over seeds and test images and
tolerances from the seeds' spread. `--weighting`: a loss weighting (static, uncertainty,
dwa, famo) or a method of common.balancing that combines the per-task gradients
(`--help` lists them all). Data: rendered rooms (default), `nyuv2:PATH` (the labelled
.mat), `npz:PATH`. Settings: config.py.
`--evaluate_on=validation` scores on held-out training rooms instead of the test split
(for choosing settings).
"""

from __future__ import annotations

import os
import time

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import cli, intervals, results, training

import numpy as np
import tensorflow as tf

from recipes.depth_segmentation import data, evaluate, model, report
from recipes.depth_segmentation.config import Config

RECIPE = "depth_segmentation"
NETWORKS = {"multi_task": model.TASKS, "segmentation_only": ("segmentation",),
            "depth_only": ("depth",)}
TOLERANCES = {"delta_m": 4.0, "miou_gain": 0.03, "abs_rel_gain": 0.025, "miou": 0.03,
              "pixel_accuracy": 0.03, "abs_rel": 0.025, "abs_err": 0.08, "delta1": 0.04}


def fit_network(run, config: Config, network_name: str, seed: int, train: dict,
                num_classes: int) -> tf.keras.Model:
    """Builds from `seed` and trains (or, in a resumed run, loads) network `network_name`
    of NETWORKS on the `train` arrays (images [N, H, W, 3], depths and labels [N, H, W])."""
    name = run_name(network_name, seed, config.seed)
    tf.keras.utils.set_random_seed(seed)
    with run.strategy.scope():
        trainer = model.build_trainer(config, num_classes, NETWORKS[network_name],
                                      train["images"], train["depths"])
    network = trainer.network
    callbacks = []
    if trainer.weighting == "dwa":
        # DWA's λ follow the logged epoch losses: a resumed run replays the epochs its
        # backup holds, so λ continue as in an uninterrupted run.
        logged = report.network_history(training.history(run), name)
        for entry in logged[:training.saved_epoch(run, name)]:
            trainer.dwa.on_epoch_end(entry["epoch"] - 1, entry)
        callbacks.append(trainer.dwa)
    training.fit(run, trainer, data.as_dataset(train), epochs=config.epochs,
                 callbacks=callbacks, name=name)
    return network


def run_name(network_name: str, seed: int, first_seed: int) -> str:
    """The name of the network trained from `seed` in the run (backups, history, saved
    weights): the first seed's keeps the plain name, as in a one-seed run."""
    return network_name if seed == first_seed else f"{network_name}_seed{seed}"


def train(config: Config) -> dict:
    run = training.start(RECIPE, config)
    train_arrays, test, dataset_name, class_names = data.load(
        config.dataset, seed=config.seed, train_images=config.train_images,
        test_images=config.test_images, image_size=config.image_size,
        resolution=config.height_width, test_fraction=config.test_fraction,
        num_classes=config.num_classes, multiple=2 ** (config.levels + 1))
    if config.smoke and config.dataset != "synthetic":  # after validation of the full data
        train_arrays = data.smoke_subset(train_arrays, config.SMOKE_IMAGES["train"])
        test = data.smoke_subset(test, config.SMOKE_IMAGES["test"])
    if config.evaluate_on == "validation":  # the test split is not looked at
        train_arrays, test = data.hold_out(train_arrays, config.validation_fraction)
    num_classes = len(class_names)
    print(f"[{RECIPE}] {dataset_name}: {len(train_arrays['images'])} train / "
          f"{len(test['images'])} {config.evaluate_on} images, {num_classes} classes",
          flush=True)

    names = list(NETWORKS) if config.baselines else ["multi_task"]
    seeds = range(config.seed, config.seed + config.num_seeds)  # the rooms stay the same
    per_seed, networks, outputs = [], {}, {}
    for seed in seeds:
        stats = {}
        for name in names:
            network = fit_network(run, config, name, seed, train_arrays, num_classes)
            found = model.predict(network, test["images"])
            stats[name] = evaluate.statistics(found, test, num_classes)
            print(f"[{RECIPE}] {run_name(name, seed, config.seed)}: " + "  ".join(
                f"{k}={v:.4f}" for k, v in evaluate.metrics_of(stats[name]).items()),
                flush=True)
            if seed == config.seed:  # the first seed's networks are the run's saved models
                outputs[name] = found
                networks[name] = {"network": network, "parameters": network.count_params()}
                training.save_model(run, network, serving=model.serving(network),
                                    name="" if name == "multi_task" else name)
        per_seed.append(stats)
    sample = slice(0, 8)  # what the saved models must reproduce (tests load them)
    np.savez(run.path("test_predictions.npz"), images=test["images"][sample],
             **{task: value[sample] for task, value in outputs["multi_task"].items()})

    metrics, baselines, seed_values = evaluate.evaluate(
        per_seed, seed=config.seed, resamples=200 if config.smoke else 1000)
    history = training.history(run)
    for task in model.TASKS:
        seed_values["multi_task"][f"final_weight_{task}"] = [
            report.network_history(history, run_name("multi_task", seed, config.seed))[-1][
                f"weight_{task}"] for seed in seeds]
        metrics[f"final_weight_{task}"] = float(
            np.mean(seed_values["multi_task"][f"final_weight_{task}"]))
    for name, entry in networks.items():
        entry["seconds"] = round(sum(
            r["seconds"] for seed in seeds
            for r in report.network_history(history, run_name(name, seed, config.seed))), 1)
    # With several seeds a reproduction may land as far from the mean as the seeds'
    # spread allows (3 standard errors); one seed has no spread to measure.
    tolerances = intervals.seed_tolerances(seed_values["multi_task"], TOLERANCES)
    means = {"multi_task": {k: getattr(v, "value", v) for k, v in metrics.items()},
             **{name: {k: v.value for k, v in values.items()}
                for name, values in baselines.items()}}
    return training.finish(
        run,
        metrics=metrics,
        headline="delta_m" if config.baselines else "miou",
        baselines=baselines,
        references=report.NYUV2_REFERENCES if config.dataset.startswith("nyuv2") else [],
        tables=report.tables(means, networks, history, class_names, config.weighting,
                             per_seed[0]["multi_task"]["confusion"], list(seeds), seed_values,
                             metrics, tolerances),
        tolerances=tolerances,
        dataset={"name": dataset_name, "classes": list(class_names),
                 "evaluated_on": config.evaluate_on,
                 "fingerprint": results.fingerprint(*train_arrays.values(), *test.values()),
                 "train_images": len(train_arrays["images"]),
                 "evaluation_images": len(test["images"]),
                 "image_size": list(test["images"].shape[1:3])},
        model=networks["multi_task"]["network"],
        artifacts=report.plots(run.path(""), test, outputs["multi_task"], history,
                               class_names, config.weighting),
        # CPU seconds and load beside the wall time: on a shared machine they say what a
        # quiet one would take.
        extra={"seeds": list(seeds), "per_seed": seed_values,
               "cpu_seconds": round(time.process_time(), 1),
               "load_average": [round(load, 2) for load in os.getloadavg()]},
    )


if __name__ == "__main__":
    cli.main(Config, train)
