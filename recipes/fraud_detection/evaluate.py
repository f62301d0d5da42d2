"""Test metrics of the fraud recipe, its baselines, and paired differences with intervals.

Each model is scored on the same test rows. The operating point is chosen on the
validation split: the largest threshold that reaches `target_recall` there (the fewest
flagged rows, so the best precision, among thresholds that reach it); test precision and
recall are read at that threshold. hits@k is the number of positives among the k
highest-scored test rows (ISLR's comparison: k = 33, the customers its logistic
regression flags at cutoff 0.25), precision@k = hits@k / k. With train.py's --refit
(the default) a model's test scores come from its refit on every training row, with the
settings and the threshold chosen on validation by its fit on the training split alone.

A network trained from several seeds is scored by the mean over its seeds of each metric;
intervals come from one bootstrap over the test rows (`intervals.statistic`, rows of all
models resampled together, thresholds held fixed), so a difference of two models is
paired and its interval holds the test split's sampling noise for the seed-averaged model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from threadpoolctl import threadpool_limits

from common import intervals

LOGISTIC_C = (0.001, 0.01, 0.1, 1.0, float("inf"))  # inf: unpenalised, as ISLR fits it
BOOSTING_RATES = (0.03, 0.1)
BOOSTING_ROUNDS = (50, 200)
RESAMPLES = 1000


@dataclasses.dataclass
class Scored:
    """One model's scores: validation `[Nv, S]`, test `[Nt, S]` for S seeds (S = 1 for
    the deterministic baselines), and what it is."""

    name: str
    what: str
    validation: np.ndarray
    test: np.ndarray

    def __post_init__(self):
        self.validation = np.asarray(self.validation, np.float64).reshape(
            len(self.validation), -1)
        self.test = np.asarray(self.test, np.float64).reshape(len(self.test), -1)


def choose_threshold(labels: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """The largest t such that flagging scores ≥ t reaches `target_recall` on `labels`.

    With P positives that is the k-th highest positive score, k = ceil(target · P).
    """
    positive_scores = np.sort(np.asarray(scores)[np.asarray(labels) == 1])[::-1]
    if positive_scores.size == 0:
        raise ValueError("cannot choose a threshold: the validation split has no positives")
    needed = max(1, math.ceil(target_recall * positive_scores.size - 1e-9))
    return float(positive_scores[needed - 1])


def hits_at_k(labels: np.ndarray, scores: np.ndarray, k: int) -> int:
    """Positives among the k highest scores (ties broken by row order)."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return int(np.asarray(labels)[order].sum())


def average_precision(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """PR-AUC of each column of `scores` `[N]` or `[N, S]`, as scikit-learn's
    average_precision_score (tied scores are one threshold), vectorised to bootstrap fast:
    the mean over positives of the precision at the end of their score's tie group."""
    scores = np.asarray(scores, np.float64).reshape(len(scores), -1)
    order = np.argsort(-scores, axis=0, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=0)
    hit = np.asarray(labels)[order] == 1
    tp = np.cumsum(hit, axis=0)
    rows = np.arange(1, len(scores) + 1)[:, None]
    last = np.vstack([ranked[1:] != ranked[:-1], np.ones((1, scores.shape[1]), bool)])
    group_end = np.where(last, rows - 1, len(scores))
    group_end = np.minimum.accumulate(group_end[::-1], axis=0)[::-1]
    precision = np.take_along_axis(tp / rows, group_end, axis=0)
    return np.sum(hit * precision, axis=0) / np.maximum(tp[-1], 1)


def _per_seed(labels, test, thresholds, top_k, metric):
    """`metric` `[S]` of one model's S seeds (columns of `test`) on the test rows."""
    if metric == "pr_auc":
        return average_precision(labels, test)
    if metric == "roc_auc":
        return np.array([roc_auc_score(labels, column) for column in test.T])
    if metric == "hits_at_k":
        order = np.argsort(-test, axis=0, kind="stable")[:top_k]
        return labels[order].sum(axis=0).astype(float)
    flagged = test >= thresholds[None, :]
    tp = (flagged & (labels[:, None] == 1)).sum(axis=0)
    if metric == "precision":
        return tp / np.maximum(flagged.sum(axis=0), 1)
    if metric == "recall":
        return tp / max(int((labels == 1).sum()), 1)
    return flagged.sum(axis=0).astype(float)  # "flagged"


def seed_point(y_validation, validation, y_test, test, target_recall: float,
               top_k: int) -> dict:
    """Test precision (at the validation threshold), hits@k and PR-AUC of one seed."""
    threshold = np.array([choose_threshold(y_validation, validation, target_recall)])
    test = np.asarray(test, np.float64)[:, None]
    return {metric: float(_per_seed(np.asarray(y_test), test, threshold, top_k, metric)[0])
            for metric in ("precision", "hits_at_k", "pr_auc")}


def seed_points(model: Scored, y_validation, y_test, target_recall: float, top_k: int,
                multipliers: list) -> dict:
    """{seed index: seed_point + the final Lagrange multiplier} of one network."""
    return {index: {**seed_point(y_validation, model.validation[:, index], y_test,
                                 model.test[:, index], target_recall, top_k),
                    "multiplier": multiplier}
            for index, multiplier in enumerate(multipliers)}


def evaluate(models: list[Scored], y_validation, y_test, target_recall: float, top_k: int,
             comparisons: tuple, seed: int, resamples: int = RESAMPLES) -> dict:
    """{name: {metric: Interval | float}} for every model.

    Each entry also holds `<metric>_minus_<other>` (precision, pr_auc, hits_at_k) for
    each model named in `comparisons`, as paired Intervals.
    """
    y_validation, y_test = np.asarray(y_validation), np.asarray(y_test)
    top_k = min(top_k, len(y_test))
    thresholds = {model.name: np.array([choose_threshold(y_validation, column, target_recall)
                                        for column in model.validation.T])
                  for model in models}
    tests = {model.name: model.test for model in models}

    def mean_metric(name, metric):
        return lambda labels, test: float(np.mean(
            _per_seed(labels, test, thresholds[name], top_k, metric)))

    results = {}
    for model in models:
        values = {metric: intervals.statistic(mean_metric(model.name, metric), y_test,
                                              model.test, seed=seed, n_resamples=resamples)
                  for metric in ("precision", "pr_auc", "hits_at_k")}
        values.update({metric: float(np.mean(_per_seed(y_test, model.test,
                                                       thresholds[model.name], top_k, metric)))
                       for metric in ("recall", "flagged", "roc_auc")})
        values["precision_at_k"] = values["hits_at_k"].value / top_k
        values["threshold"] = float(np.median(thresholds[model.name]))
        values["validation_precision"] = float(np.mean(_per_seed(
            y_validation, model.validation, thresholds[model.name], top_k, "precision")))
        values["seeds"] = int(model.test.shape[1])
        results[model.name] = values
    for name in results:  # paired differences: every model against each comparison
        for other in comparisons:
            if other != name and other in tests:
                results[name].update(_differences(y_test, tests, thresholds, name, other,
                                                  top_k, seed, resamples))
    return results


def _differences(y_test, tests, thresholds, name, other, top_k, seed, resamples) -> dict:
    """{metric_minus_other: Interval}: seed means of `name` minus those of `other`."""
    differences = {}
    for metric in ("precision", "pr_auc", "hits_at_k"):
        def difference(labels, first, second, metric=metric):
            a = _per_seed(labels, first, thresholds[name], top_k, metric)
            b = _per_seed(labels, second, thresholds[other], top_k, metric)
            return float(a.mean() - b.mean())
        differences[f"{metric}_minus_{other}"] = intervals.statistic(
            difference, y_test, tests[name], tests[other], seed=seed, n_resamples=resamples)
    return differences


def logistic_regression(x_train, y_train, x_validation, y_validation, x_test,
                        refit=None) -> Scored:
    """scikit-learn's logistic regression, C chosen by validation PR-AUC; the validation
    scores come from the fit on the training split, the test scores from the same C refit
    on `refit` = (x, y) (every training row) if given, as the networks are."""
    def fit(c, x=x_train, y=y_train):
        return LogisticRegression(C=c, max_iter=5000).fit(x, y)

    with threadpool_limits(1):
        fits = {c: fit(c) for c in LOGISTIC_C}
        best = max(LOGISTIC_C, key=lambda c: average_precision_score(
            y_validation, fits[c].predict_proba(x_validation)[:, 1]))
        final = fit(best, *refit) if refit else fits[best]
    return Scored("logistic_regression", f"scikit-learn LogisticRegression(C={best}), C by "
                  "validation PR-AUC", fits[best].predict_proba(x_validation)[:, 1],
                  final.predict_proba(x_test)[:, 1])


def gradient_boosting(x_train, y_train, x_validation, y_validation, x_test, seed: int,
                      refit=None) -> Scored:
    """HistGradientBoostingClassifier; learning rate and rounds by validation PR-AUC, then
    refit on `refit` = (x, y) if given (as logistic_regression)."""
    def fit(rate, rounds, x=x_train, y=y_train):
        return HistGradientBoostingClassifier(learning_rate=rate, max_iter=rounds,
                                              early_stopping=False,
                                              random_state=seed).fit(x, y)

    # One OpenMP thread: on a busy 2-core machine its threads spin (12x slower, measured).
    with threadpool_limits(1):
        fits = {(rate, rounds): fit(rate, rounds)
                for rate in BOOSTING_RATES for rounds in BOOSTING_ROUNDS}
        best = max(fits, key=lambda key: average_precision_score(
            y_validation, fits[key].predict_proba(x_validation)[:, 1]))
        final = fit(*best, *refit) if refit else fits[best]
        return Scored("hist_gradient_boosting", "scikit-learn HistGradientBoostingClassifier("
                      f"learning_rate={best[0]}, max_iter={best[1]}), by validation PR-AUC",
                      fits[best].predict_proba(x_validation)[:, 1],
                      final.predict_proba(x_test)[:, 1])
