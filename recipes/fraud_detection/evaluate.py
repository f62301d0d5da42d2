"""Test metrics of the fraud recipe, its baselines, and paired differences with intervals.

Each model is scored on the same test rows. The operating point is chosen on the
validation split: the largest threshold that reaches `target_recall` there (the fewest
flagged rows, so the best precision, among thresholds that reach it); test precision and
recall are read at that threshold. hits@k is the number of positives among the k
highest-scored test rows (ISLR's comparison: k = 33, the customers its logistic
regression flags at cutoff 0.25), precision@k = hits@k / k. With train.py's --refit
(the default) a model's test scores come from its refit on every training row, with the
threshold chosen on validation by its fit on the training split alone.

Regularisation (each network's weight decay, logistic regression's C, the trees' rate and
rounds) is chosen by cross-validation over every training row: the same
RepeatedStratifiedKFold folds for every model (`cv_folds`), each held-out fold scored by
its PR-AUC, the grid value of the best mean PR-AUC chosen (`selection`). PR-AUC because
it depends only on the order of the scores, so it is defined for every loss (weighted
BCE's and the constrained losses' scores are not calibrated probabilities, which
log-loss needs), and each fold's figure uses every held-out positive (~58 on Caravan),
not the dozen above a recall-0.2 operating point that make precision there noisy.

A network trained from several seeds is scored by the mean over its seeds of each metric;
intervals come from one bootstrap over the test rows (`intervals.statistic`, rows of all
models resampled together, thresholds held fixed), so a difference of two models is
paired and its interval holds the test split's sampling noise for the seed-averaged model.
"""

from __future__ import annotations

import dataclasses
import math

from common import intervals

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from threadpoolctl import threadpool_limits

# Decades and their midpoints around where Caravan's optimum lies (C = 0.003-0.01), up
# to 1e4, all but unpenalised (ISLR's fit).
LOGISTIC_C = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0, 1e4)
BOOSTING_GRID = tuple((rate, rounds) for rate in (0.03, 0.1) for rounds in (50, 200))
FOLDS = 5  # of RepeatedStratifiedKFold
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


def cv_folds(labels: np.ndarray, repeats: int, seed: int) -> list[tuple]:
    """[(fit rows, held-out rows)] of RepeatedStratifiedKFold(FOLDS, repeats, seed) over
    `labels` `[N]`: the one set of folds every model is cross-validated on."""
    splitter = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=repeats, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


def selection(grid: list, fold_scores: dict) -> dict:
    """The grid value whose held-out PR-AUC `fold_scores[value]` `[F]` is best on average
    (the first of equals), and each value's mean and spread (SD over the F folds)."""
    scores = [{"value": value, "cv_pr_auc": float(np.mean(fold_scores[value])),
               "cv_pr_auc_sd": float(np.std(fold_scores[value]))} for value in grid]
    best = max(scores, key=lambda row: row["cv_pr_auc"])  # max keeps the first of ties
    return {"grid": list(grid), "chosen": best["value"], "cv_pr_auc": best["cv_pr_auc"],
            "cv_pr_auc_sd": best["cv_pr_auc_sd"], "folds": len(fold_scores[grid[0]]),
            "scores": scores}


def cross_validate(make, grid, x, y, folds) -> dict:
    """`selection` of scikit-learn classifiers `make(value)`, each fitted on a fold's fit
    rows of `x` `[N, D]`, `y` `[N]` and scored on its held-out rows."""
    with threadpool_limits(1):
        return selection(grid, {value: [average_precision(
            y[held], make(value).fit(x[fit], y[fit]).predict_proba(x[held])[:, 1])[0]
            for fit, held in folds] for value in grid})


def _baseline(name, make, grid, what, cv, x_train, y_train, x_validation, x_test,
              refit) -> tuple[Scored, dict]:
    """A baseline's setting chosen by `cross_validate` on `cv` = (x, y, folds), then fitted
    on the training split (its validation scores set its threshold) and, with `refit` =
    (x, y), on every training row (its test scores)."""
    chosen = cross_validate(make, grid, *cv)
    with threadpool_limits(1):
        first = make(chosen["chosen"]).fit(x_train, y_train)
        final = make(chosen["chosen"]).fit(*refit) if refit else first
    return Scored(name, what(chosen["chosen"]), first.predict_proba(x_validation)[:, 1],
                  final.predict_proba(x_test)[:, 1]), chosen


def logistic_regression(cv, x_train, y_train, x_validation, x_test,
                        refit=None) -> tuple[Scored, dict]:
    """scikit-learn's logistic regression, C by cross-validated PR-AUC (`_baseline`)."""
    return _baseline("logistic_regression",
                     lambda c: LogisticRegression(C=c, max_iter=5000), LOGISTIC_C,
                     lambda c: f"scikit-learn LogisticRegression(C={c}), C by "
                     "cross-validated PR-AUC", cv, x_train, y_train, x_validation, x_test,
                     refit)


def gradient_boosting(cv, x_train, y_train, x_validation, x_test, seed: int,
                      refit=None, grid=BOOSTING_GRID) -> tuple[Scored, dict]:
    """HistGradientBoostingClassifier; [learning rate, rounds] of `grid` by cross-validated
    PR-AUC."""
    # One OpenMP thread (cross_validate, _baseline): on a busy 2-core machine its threads
    # spin (12x slower, measured).
    return _baseline("hist_gradient_boosting",
                     lambda setting: HistGradientBoostingClassifier(
                         learning_rate=setting[0], max_iter=setting[1],
                         early_stopping=False, random_state=seed),
                     grid,
                     lambda setting: "scikit-learn HistGradientBoostingClassifier("
                     f"learning_rate={setting[0]}, max_iter={setting[1]}), by "
                     "cross-validated PR-AUC", cv, x_train, y_train, x_validation, x_test,
                     refit)
