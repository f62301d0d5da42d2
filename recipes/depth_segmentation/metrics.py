"""Test-split metrics, accumulated over the whole split (not averaged per batch).

Segmentation: one confusion matrix over every labelled pixel of the split; mIoU is the
mean over classes that occur (in the truth or the prediction) of TP / (TP + FP + FN),
pixel accuracy is trace / total. Depth: every valid pixel (true depth > 0) of the split
counts once: AbsRel = mean |p - t| / t, RMSE = sqrt(mean (p - t)^2),
δ<1.25 = fraction with max(p/t, t/p) < 1.25.

Statistics are kept per image (a confusion matrix, four depth sums), so the split's
metrics are their sum, and a bootstrap over test images resamples them cheaply.
"""

from __future__ import annotations

import numpy as np


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
    """mIoU (over classes present in truth or prediction), pixel accuracy, per-class IoU."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    iou = np.where(present, true_positive / np.maximum(union, 1), np.nan)
    return {
        "miou": float(np.nanmean(iou)) if present.any() else 0.0,
        "pixel_accuracy": float(true_positive.sum() / max(confusion.sum(), 1)),
        "iou_per_class": iou,
    }


def per_image_depth_sums(true_depth, predicted_depth) -> np.ndarray:
    """[N, 4] per image: valid pixels, Σ|p-t|/t, Σ(p-t)², #(max(p/t, t/p) < 1.25)."""
    true_depth = np.asarray(true_depth, np.float64).reshape(len(true_depth), -1)
    predicted = np.asarray(predicted_depth, np.float64).reshape(len(true_depth), -1)
    valid = true_depth > 0
    t = np.where(valid, true_depth, 1.0)
    p = np.maximum(predicted, 1e-6)
    return np.stack([
        valid.sum(1),
        (valid * np.abs(p - t) / t).sum(1),
        (valid * (p - t) ** 2).sum(1),
        (valid & (np.maximum(p / t, t / p) < 1.25)).sum(1),
    ], axis=1).astype(np.float64)


def depth_metrics(sums: np.ndarray) -> dict:
    """AbsRel, RMSE and δ<1.25 from depth sums [4] (or [N, 4], summed over images)."""
    sums = np.asarray(sums, np.float64)
    count, abs_rel, squared, delta = sums.reshape(-1, 4).sum(0)
    count = max(count, 1.0)
    return {"abs_rel": abs_rel / count, "rmse": float(np.sqrt(squared / count)),
            "delta1": delta / count}


def paired_bootstrap(first: np.ndarray, second: np.ndarray, metric, seed: int = 0,
                     samples: int = 1000) -> tuple[float, float]:
    """95 % interval of metric(Σ first[idx]) − metric(Σ second[idx]) over test images
    resampled with replacement: per-image statistics [N, ...] of two models on the same
    images, `metric` a function of the summed statistics."""
    rng = np.random.default_rng(seed)
    n = len(first)
    differences = []
    for _ in range(samples):
        index = rng.integers(0, n, n)
        differences.append(metric(first[index].sum(0)) - metric(second[index].sum(0)))
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)
