"""Test metrics, baselines' scores and paired differences, with their intervals.

Days of a market series are not independent (volatility clusters), so intervals resample
blocks of `BLOCK_DAYS` consecutive test days, not single days: each block's sums of
squared errors and of the target go into `intervals.statistic`, which resamples the blocks
(paired: every model's errors on the same days move together).
"""

from __future__ import annotations

from common import intervals

import numpy as np

from recipes.financial_regression import data, model

BLOCK_DAYS = 20  # about a trading month: longer than most of the errors' autocorrelation


def scores(target, prediction, volatility: bool = False, smearing: float = 1.0) -> dict:
    """Test R², MAE, RMSE of `prediction` `[N]` against `target` `[N]`; for a log-variance
    target also QLIKE = σ̂²/h − log(σ̂²/h) − 1 with h = exp(target) and
    σ̂² = exp(prediction)·smearing (Duan's retransformation of a log forecast)."""
    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    if target.shape != prediction.shape:
        raise ValueError(f"target {target.shape} and prediction {prediction.shape} differ")
    error = target - prediction
    result = {
        "test_r2": float(1 - np.sum(error**2) / np.sum((target - target.mean()) ** 2)),
        "test_mae": float(np.mean(np.abs(error))),
        "test_rmse": float(np.sqrt(np.mean(error**2))),
    }
    if volatility:
        ratio = np.exp(prediction - target) * smearing
        result["test_qlike"] = float(np.mean(ratio - np.log(ratio) - 1))
    return result


def smearing(target, prediction) -> float:
    """Duan's smearing factor mean(exp(target − prediction)) `[N]` → float: exp of a log
    forecast times this is an unbiased forecast of the level."""
    return float(np.mean(np.exp(np.asarray(target) - np.asarray(prediction))))


def _blocks(values: np.ndarray) -> np.ndarray:
    """Sums over consecutive blocks of `BLOCK_DAYS` rows: `[N]` → `[ceil(N / BLOCK_DAYS)]`."""
    starts = np.arange(0, len(values), BLOCK_DAYS)
    return np.add.reduceat(np.asarray(values, np.float64), starts)


def _r2_gain(count, total, total_squares, errors_base, errors_model):
    """R²(model) − R²(base) from per-block sums: (SSE_base − SSE_model) / SST."""
    n = count.sum()
    total_variation = total_squares.sum() - total.sum() ** 2 / n
    return (errors_base.sum() - errors_model.sum()) / total_variation


def r2_gain(target, base, model, seed: int) -> intervals.Interval:
    """Test R² of `model` minus that of `base` (predictions `[N]`, same days), with a
    block-bootstrap interval over the test days."""
    target = np.asarray(target, np.float64)
    sums = [_blocks(np.ones_like(target)), _blocks(target), _blocks(target**2),
            _blocks((target - base) ** 2), _blocks((target - model) ** 2)]
    return intervals.statistic(_r2_gain, *sums, seed=seed)


def r2(target, prediction, seed: int) -> intervals.Interval:
    """Test R² of `prediction` `[N]` with its block-bootstrap interval (the gain over a
    forecast of the test mean, which has R² 0)."""
    target = np.asarray(target, np.float64)
    return r2_gain(target, np.full_like(target, target.mean()), prediction, seed)


def ensemble(target, single: list[np.ndarray], ensembled: np.ndarray, least_squares,
             seed: int) -> dict:
    """The metrics of an ensemble over seeds and of its members, against least squares.

    test_r2 (+ interval): the ensemble's; test_r2_minus_linear_lstsq: its gain over the
    least-squares model on the same days (block bootstrap); test_r2_single: the members'
    mean R² with an interval over seeds; test_r2_single_minus_linear_lstsq: the members'
    mean gain (block bootstrap of the seed-averaged squared errors), and its worst seed.
    """
    target = np.asarray(target, np.float64)
    member_r2 = [scores(target, p, False, 1.0)["test_r2"] for p in single]
    lstsq_r2 = scores(target, least_squares, False, 1.0)["test_r2"]
    # The seed-averaged squared error, as the prediction whose squared error it is: the
    # gain statistic only needs (target − prediction)², which this reproduces.
    mean_squares = np.mean([(target - p) ** 2 for p in single], axis=0)
    equivalent = target - np.sqrt(mean_squares)
    return {
        "test_r2": r2(target, ensembled, seed),
        "test_r2_minus_linear_lstsq": r2_gain(target, least_squares, ensembled, seed),
        "test_r2_single": (intervals.mean(member_r2, seed=seed) if len(single) > 1
                           else member_r2[0]),
        "test_r2_single_minus_linear_lstsq": r2_gain(target, least_squares, equivalent, seed),
        "test_r2_worst_seed_minus_linear_lstsq": float(min(member_r2) - lstsq_r2),
        "ensemble_size": len(single),
    }


def least_squares(frame: data.Frame, splits: dict, train_target: np.ndarray) -> dict:
    """The closed-form baselines, fitted on the training days (`train_target` [N_train],
    the targets the networks train on) and scored on the test days: `linear_lstsq` (all
    features), `har_lstsq` (the three HAR features; volatility targets), and for a csv
    target `linear_lstsq_all_before_split` (fitted on training and validation days, as
    ISLR2 fits on every day before the test period). Each: {"scores", "validation",
    "test"} (predictions [N])."""
    columns = {"linear_lstsq": list(range(len(frame.feature_names)))}
    if frame.volatility:
        columns["har_lstsq"] = [frame.feature_names.index(n) for n in data.HAR_FEATURES]
    fits = {name: model.least_squares(frame.features[splits["train"]][:, index], train_target)
            for name, index in columns.items()}
    if not frame.volatility:
        rows = np.r_[splits["train"], splits["validation"]]
        target = np.r_[train_target, frame.target[splits["validation"]]]
        fits["linear_lstsq_all_before_split"] = model.least_squares(frame.features[rows],
                                                                    target)
        columns["linear_lstsq_all_before_split"] = columns["linear_lstsq"]
    out = {}
    for name, fitted in fits.items():
        predicted = {part: fitted(frame.features[splits[part]][:, columns[name]])
                     for part in ("validation", "test")}
        validation = frame.target[splits["validation"]]
        out[name] = {**predicted, "scores": {
            **scores(frame.target[splits["test"]], predicted["test"], frame.volatility,
                     smearing(validation, predicted["validation"])),
            "validation_r2": scores(validation, predicted["validation"])["test_r2"]}}
    return out


def evaluate(frame: data.Frame, splits: dict, predictions: dict, members: list,
             lstsq: dict, seed: int) -> dict:
    """The metrics of a trained model (the recipe's, or an MSE baseline's): test scores of
    `predictions` ({"validation", "test"}: [N]), the ensemble statistics of `members`
    (test predictions [N] per seed) against `linear_lstsq`, validation R²."""
    target, validation = frame.target[splits["test"]], frame.target[splits["validation"]]
    return {
        **scores(target, predictions["test"], frame.volatility,
                 smearing(validation, predictions["validation"])),
        **ensemble(target, members, predictions["test"], lstsq["linear_lstsq"]["test"], seed),
        "validation_r2": scores(validation, predictions["validation"])["test_r2"],
    }
