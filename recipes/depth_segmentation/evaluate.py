"""Test metrics of each network, the gains of the multi-task network over the
single-task ones and ΔM, each the mean over the training seeds with an interval from a
two-level bootstrap (seeds, then test images: `intervals.over_seeds_and_rows`); each
seed's multi-task network is compared with the single-task ones of the same seed.

Segmentation: one confusion matrix over every labelled pixel of the split; mIoU is the
mean over classes that occur (in the truth or the prediction) of TP / (TP + FP + FN),
pixel accuracy is trace / total. Depth: every valid pixel (true depth > 0) counts once:
AbsRel = mean |p - t| / t, abs err = mean |p - t|, RMSE = sqrt(mean (p - t)^2),
δ<1.25 = fraction with max(p/t, t/p) < 1.25. Statistics are kept per image (a
confusion matrix, five depth sums), so a bootstrap over images resamples them cheaply.

ΔM (Maninis et al. 2019, as the Nash-MTL and FAMO papers tabulate it), in %:
  ΔM = 100 / M · Σ_m (−1)^{h_m} (multi_m − single_m) / single_m
over the M = 4 metrics mIoU, pixel accuracy, abs err, AbsRel, with h_m = 1 where higher
is better: negative means the multi-task network is better on average.
"""

from __future__ import annotations

from common import intervals

import numpy as np

SEGMENTATION_METRICS = ("miou", "pixel_accuracy")
DEPTH_METRICS = ("abs_rel", "abs_err", "rmse", "delta1")
HIGHER_IS_BETTER = {"miou": True, "pixel_accuracy": True, "abs_rel": False, "abs_err": False,
                    "rmse": False, "delta1": True}
DELTA_M_METRICS = ("miou", "pixel_accuracy", "abs_err", "abs_rel")


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """[C, C] counts, rows = true class, columns = predicted; labels < 0 are skipped."""
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    keep = labels >= 0
    index = labels[keep].astype(np.int64) * num_classes + predictions[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_image_confusion(labels, predictions, num_classes: int) -> np.ndarray:
    """[N, C, C]: one confusion matrix per image of labels/predictions [N, H, W]."""
    return np.stack([confusion_matrix(t, p, num_classes) for t, p in zip(labels, predictions)])


def segmentation_metrics(confusion: np.ndarray) -> dict:
    """mIoU, pixel accuracy and per-class IoU (NaN: absent) from counts [C, C] or [N, C, C]."""
    confusion = np.asarray(confusion, np.float64).reshape(-1, *np.shape(confusion)[-2:]).sum(0)
    true_positive = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    iou = np.where(present, true_positive / np.maximum(union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)) if present.any() else 0.0,
            "pixel_accuracy": float(true_positive.sum() / max(confusion.sum(), 1)),
            "iou_per_class": iou}


def per_image_depth_sums(true_depth, predicted_depth) -> np.ndarray:
    """[N, 5] per image: valid pixels, Σ|p-t|/t, Σ|p-t|, Σ(p-t)², #(max(p/t, t/p) < 1.25)."""
    true_depth = np.asarray(true_depth, np.float64).reshape(len(true_depth), -1)
    predicted = np.asarray(predicted_depth, np.float64).reshape(len(true_depth), -1)
    valid = true_depth > 0
    t = np.where(valid, true_depth, 1.0)
    p = np.maximum(predicted, 1e-6)
    return np.stack([valid.sum(1), (valid * np.abs(p - t) / t).sum(1),
                     (valid * np.abs(p - t)).sum(1), (valid * (p - t) ** 2).sum(1),
                     (valid & (np.maximum(p / t, t / p) < 1.25)).sum(1)], axis=1).astype(float)


def depth_metrics(sums: np.ndarray) -> dict:
    """AbsRel, abs err, RMSE and δ<1.25 from depth sums [5] or [N, 5] (summed)."""
    count, abs_rel, abs_err, squared, delta = np.asarray(sums, float).reshape(-1, 5).sum(0)
    count = max(count, 1.0)
    return {"abs_rel": abs_rel / count, "abs_err": abs_err / count,
            "rmse": float(np.sqrt(squared / count)), "delta1": delta / count}


def statistics(outputs: dict, test: dict, num_classes: int) -> dict:
    """Per-image statistics of one network's test outputs {task: [N, H, W(, C)]}."""
    found = {}
    if "segmentation" in outputs:
        found["confusion"] = per_image_confusion(test["labels"],
                                                 outputs["segmentation"].argmax(-1), num_classes)
    if "depth" in outputs:
        found["depth"] = per_image_depth_sums(test["depths"], outputs["depth"])
    return found


def metrics_of(stats: dict) -> dict:
    """{metric: value} of one network from its per-image statistics."""
    found = {}
    if "confusion" in stats:
        found.update({k: v for k, v in segmentation_metrics(stats["confusion"]).items()
                      if k in SEGMENTATION_METRICS})
    if "depth" in stats:
        found.update(depth_metrics(stats["depth"]))
    return found


def _signed_relative_changes(multi: dict, single: dict) -> np.ndarray:
    return np.array([(1 if HIGHER_IS_BETTER[m] else -1) * (multi[m] - single[m]) / single[m]
                     for m in DELTA_M_METRICS])


def _scores(multi_confusion, multi_depth, single_confusion, single_depth):
    return (metrics_of({"confusion": multi_confusion, "depth": multi_depth}),
            metrics_of({"confusion": single_confusion, "depth": single_depth}))


def _gain(metric: str):
    sign = 1 if HIGHER_IS_BETTER[metric] else -1

    def gain(*arrays):
        multi, single = _scores(*arrays)
        return sign * (multi[metric] - single[metric])

    return gain


def _delta_m(*arrays) -> float:
    return -100.0 * float(np.mean(_signed_relative_changes(*_scores(*arrays))))


def _metric(metric: str, key: str):
    return lambda array: metrics_of({key: array})[metric]


def _quantities(stats: dict) -> dict:
    """{(group, name): (fn, samples)} for one seed's statistics {network: statistics(...)}:
    group "multi_task" (metrics, gains, ΔM) or a single-task network; `fn(*samples)` is
    the quantity on the test images `samples` hold, each [N, ...]."""
    multi, found = stats["multi_task"], {}
    if "segmentation_only" in stats:
        # each seed's multi-task network against the single-task ones of the same seed
        paired = (multi["confusion"], multi["depth"], stats["segmentation_only"]["confusion"],
                  stats["depth_only"]["depth"])
        found[("multi_task", "delta_m")] = (_delta_m, paired)
        found.update({("multi_task", f"{m}_gain"): (_gain(m), paired)
                      for m in SEGMENTATION_METRICS + DEPTH_METRICS})
        found.update({("segmentation_only", m): (_metric(m, "confusion"),
                                                 (stats["segmentation_only"]["confusion"],))
                      for m in SEGMENTATION_METRICS})
        found.update({("depth_only", m): (_metric(m, "depth"), (stats["depth_only"]["depth"],))
                      for m in DEPTH_METRICS})
    found.update({("multi_task", m): (_metric(m, "confusion"), (multi["confusion"],))
                  for m in SEGMENTATION_METRICS})
    found.update({("multi_task", m): (_metric(m, "depth"), (multi["depth"],))
                  for m in DEPTH_METRICS})
    return found


def evaluate(per_seed: list[dict], *, seed: int, resamples: int = 1000):
    """(metrics, baselines, seed_values) from the per-image statistics of S training
    seeds on the same test images, `per_seed[s]` = {network: `statistics(...)`}.

    metrics: the multi-task network's metrics, and with the single-task networks each
    `<metric>_gain` (positive: multi-task better) and `delta_m` (%); baselines:
    {single-task network: its metrics}. Each is an Interval: the mean over the seeds of
    the value on all test images, with `intervals.over_seeds_and_rows` (seeds and test
    images resampled). seed_values: {group: {name: [S] per-seed values}}, group
    "multi_task" or a single-task network.
    """
    quantities = [_quantities(stats) for stats in per_seed]
    found, seed_values = {}, {}
    for group, name in quantities[0]:
        fn = quantities[0][group, name][0]
        samples = [seed_quantities[group, name][1] for seed_quantities in quantities]
        found.setdefault(group, {})[name] = intervals.over_seeds_and_rows(
            fn, samples, seed=seed, n_resamples=resamples)
        seed_values.setdefault(group, {})[name] = [float(fn(*each)) for each in samples]
    metrics = found.pop("multi_task")
    return metrics, found, seed_values
