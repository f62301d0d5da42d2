"""What the fraud run reports besides its metrics: tables, plots, published references.

Kept apart from train.py so that the run itself reads top to bottom. Plots use
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

ISLR_SOURCE = ("James, Witten, Hastie & Tibshirani, An Introduction to Statistical Learning, "
               "ch. 4, Default data: fitted and scored on all 10,000 rows (training set)")
KERAS_IO_SOURCE = ("keras.io example 'Imbalanced classification: credit card fraud "
                   "detection' (last 20 % of rows, class weights 1/count), final epoch")
CREDITCARD_COLUMNS = {"Time", "Amount", *(f"V{i}" for i in range(1, 29))}


def references(dataset: str, feature_names: list) -> list[dict]:
    """Published numbers for the data at hand (ISLR for Default, keras.io for creditcard)."""
    if dataset == "default":
        return [
            {"name": name, "metric": metric, "value": value, "source": ISLR_SOURCE}
            for name, metric, value in (
                ("ISLR logistic regression (balance, income, student)", "roc_auc", 0.950),
                ("ISLR logistic regression, threshold 0.5", "recall", 0.315),
                ("ISLR logistic regression, threshold 0.5", "precision", 0.724),
                ("ISLR logistic regression, threshold 0.2", "recall", 0.610),
                ("ISLR logistic regression, threshold 0.2", "precision", 0.423),
                ("ISLR LDA (balance, student), threshold 0.5", "recall", 0.243),
                ("ISLR LDA (balance, student), threshold 0.5", "precision", 0.779),
            )
        ] + [{"name": "ISLR logistic regression (balance, income, student)",
              "metric": "pr_auc", "value": 0.531,
              "source": "average precision of the book's logistic fit on all 10,000 rows, "
                        "computed (the book plots ROC, not PR curves)"}]
    if CREDITCARD_COLUMNS <= set(feature_names):
        return [
            {"name": "keras.io MLP, weighted BCE", "metric": metric, "value": value,
             "source": KERAS_IO_SOURCE}
            for metric, value in (("tp", 65), ("fn", 10), ("fp", 206), ("precision", 0.24),
                                  ("recall", 0.87))
        ]
    return []


def operating_point_table(scored: dict, points: dict, headline: str) -> dict:
    """One row per model: threshold, test precision / recall, confusion counts, AUCs."""
    rows = []
    for name, (loss, _, _) in scored.items():
        point = points[name]
        rows.append([name + (" (headline)" if name == headline else ""), loss,
                     round(point["threshold"], 4), round(point["val_recall"], 3),
                     round(point["precision"], 3), round(point["recall"], 3),
                     point["tp"], point["fp"], point["fn"], point["tn"],
                     round(point["pr_auc"], 3), round(point["roc_auc"], 3)])
    return {"columns": ["model", "loss", "threshold (from validation)", "validation recall",
                        "test precision", "test recall", "TP (caught)", "FP (flagged good)",
                        "FN (missed)", "TN", "PR-AUC", "ROC-AUC"],
            "rows": rows}


def paired_differences(y_test, scored: dict, points: dict, headline: str, seed: int,
                       resamples: int = 2000) -> dict:
    """Headline minus each other model: test precision and recall at their operating points.

    Returns {model: {"precision": (difference, low, high), "recall": (...)}}: 95 %
    intervals from a paired bootstrap over test rows (thresholds held fixed), so a
    difference whose interval spans 0 is not shown to be real on this test split.
    """
    y_test = np.asarray(y_test).astype(bool)
    flagged = {name: scores >= points[name]["threshold"]
               for name, (_, _, scores) in scored.items()}
    rng = np.random.default_rng(seed)
    draws = {name: {"precision": [], "recall": []} for name in flagged}
    for start in range(0, resamples, 100):  # chunks keep memory small on large test splits
        rows = rng.integers(0, len(y_test), size=(min(100, resamples - start), len(y_test)))
        y = y_test[rows]
        for name, flags in flagged.items():
            f = flags[rows]
            tp = (f & y).sum(axis=1)
            draws[name]["precision"].append(tp / np.maximum(f.sum(axis=1), 1))
            draws[name]["recall"].append(tp / np.maximum(y.sum(axis=1), 1))
    differences = {}
    for name in flagged:
        if name == headline:
            continue
        differences[name] = {}
        for metric in ("precision", "recall"):
            diff = np.concatenate(draws[headline][metric]) - np.concatenate(draws[name][metric])
            low, high = np.percentile(diff, [2.5, 97.5])
            differences[name][metric] = (points[headline][metric] - points[name][metric],
                                         float(low), float(high))
    return differences


def differences_table(differences: dict, headline: str) -> dict:
    rows = [[f"{headline} − {name}"]
            + [f"{value[0]:+.3f} [{value[1]:+.3f}, {value[2]:+.3f}]"
               for value in (by_metric["precision"], by_metric["recall"])]
            for name, by_metric in differences.items()]
    return {"columns": ["comparison (test split)", "precision difference (95 % CI)",
                        "recall difference (95 % CI)"],
            "rows": rows}


def seeds_table(per_seed: dict, seeds: list) -> dict:
    """Test precision / FP at the operating point and PR-AUC of each network, per seed."""
    rows = []
    for name, points in per_seed.items():
        precision = [point["precision"] for point in points]
        rows.append([name, *(f"{p:.3f} ({point['fp']} FP, recall {point['recall']:.2f})"
                             for p, point in zip(precision, points)),
                     f"{np.mean(precision):.3f} ± {np.std(precision, ddof=1):.3f}",
                     f"{np.mean([point['pr_auc'] for point in points]):.3f} ± "
                     f"{np.std([point['pr_auc'] for point in points], ddof=1):.3f}"])
    return {"columns": ["network", *(f"precision, seed {seed}" for seed in seeds),
                        "precision mean ± sd", "PR-AUC mean ± sd"],
            "rows": rows}


def sweep_table(per_seed: dict, headline: str, headline_weight: float, loss: str) -> dict:
    """The soft-precision weight λ against test precision at the operating point.

    λ = 0 is weighted BCE alone (the `network_weighted_bce` baseline). Means over seeds.
    """
    by_weight = {}
    if "network_weighted_bce" in per_seed:
        by_weight[0.0] = ("network_weighted_bce", per_seed["network_weighted_bce"])
    if loss == "bce_soft_precision":
        by_weight[headline_weight] = (headline, per_seed[headline])
    for name, points in per_seed.items():
        if "_lambda" in name:
            by_weight[float(name.rsplit("_lambda", 1)[1])] = (name, points)
    rows = []
    for weight, (name, points) in sorted(by_weight.items()):
        values = {key: [point[key] for point in points]
                  for key in ("precision", "recall", "fp", "pr_auc", "val_precision",
                              "threshold")}
        spread = (lambda key: f" ± {np.std(values[key], ddof=1):.3f}"
                  if len(points) > 1 else "")
        rows.append([weight, name, f"{np.median(values['threshold']):.3g}",
                     f"{np.mean(values['val_precision']):.3f}{spread('val_precision')}",
                     f"{np.mean(values['precision']):.3f}{spread('precision')}",
                     round(float(np.mean(values["recall"])), 3),
                     round(float(np.mean(values["fp"])), 1),
                     f"{np.mean(values['pr_auc']):.3f}{spread('pr_auc')}"])
    return {"columns": ["λ (precision_weight)", "network", "threshold (median)",
                        "validation precision",
                        "test precision (mean ± sd)",
                        "test recall", "FP", "PR-AUC (mean ± sd)"],
            "rows": rows}


def islr_check_table(frame) -> dict:
    """ISLR's Default figures next to the same fits reproduced here (scikit-learn).

    As in the book, the models are fitted and scored on all 10,000 rows: a check that the
    data are the book's, not a test-split result.
    """
    y = (frame["default"] == "Yes").to_numpy(int)
    student = (frame["student"] == "Yes").to_numpy(float)
    full = np.c_[frame["balance"], frame["income"], student]
    full = (full - full.mean(axis=0)) / full.std(axis=0)
    logistic = LogisticRegression(C=np.inf, max_iter=5000).fit(full, y).predict_proba(full)[:, 1]
    lda = LinearDiscriminantAnalysis().fit(full[:, [0, 2]], y).predict_proba(full[:, [0, 2]])
    rows = []
    for model, scores, threshold, book in (
        ("logistic (balance, income, student)", logistic, 0.5,
         {"sensitivity": 0.315, "precision": 0.724, "error rate": 0.0268}),
        ("logistic (balance, income, student)", logistic, 0.2,
         {"sensitivity": 0.610, "precision": 0.423}),
        ("LDA (balance, student)", lda[:, 1], 0.5,
         {"sensitivity": 0.243, "precision": 0.779, "error rate": 0.0275}),
    ):
        flagged = scores >= threshold
        tp = int((flagged & (y == 1)).sum())
        ours = {"sensitivity": tp / y.sum(), "precision": tp / flagged.sum(),
                "error rate": float((flagged != (y == 1)).mean())}
        rows += [[model, threshold, metric, value, round(ours[metric], 4)]
                 for metric, value in book.items()]
    rows += [["logistic (balance, income, student)", "-", "ROC-AUC", 0.950,
              round(roc_auc_score(y, logistic), 4)],
             ["logistic (balance, income, student)", "-", "average precision", 0.531,
              round(average_precision_score(y, logistic), 4)]]
    return {"columns": ["ISLR fit (all 10,000 rows)", "threshold", "metric", "ISLR",
                        "reproduced here"],
            "rows": rows}


def plot_pr_curves(path: Path, y_test, scored: dict, points: dict, headline: str,
                   target_recall: float | None = None) -> Path:
    """Test-split precision-recall curves, each model's operating point marked."""
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    if target_recall is not None:
        axes.axvline(target_recall, color="grey", linestyle="--", linewidth=1,
                     label=f"target recall {target_recall:g} (on validation)")
    for name, (_, _, scores) in scored.items():
        precision, recall, _ = precision_recall_curve(y_test, scores)
        line, = axes.step(recall, precision, where="post",
                          linewidth=2.2 if name == headline else 1.2,
                          label=f"{name} (AP {points[name]['pr_auc']:.3f})")
        axes.plot(points[name]["recall"], points[name]["precision"], "o",
                  color=line.get_color(), markersize=7 if name == headline else 5)
    axes.axhline(np.mean(y_test), color="grey", linestyle=":", linewidth=1,
                 label=f"prevalence {np.mean(y_test):.3f}")
    axes.set(xlabel="recall (frauds caught / all frauds)",
             ylabel="precision (frauds / flagged)", xlim=(0, 1.01), ylim=(0, 1.02),
             title="Test split: PR curves, dots = operating points chosen on validation")
    axes.title.set_fontsize(9)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def plot_confusion(path: Path, point: dict, title: str) -> Path:
    """The 2×2 confusion matrix at the operating point, with counts and their meaning."""
    counts = np.array([[point["tn"], point["fp"]], [point["fn"], point["tp"]]])
    words = [["TN: good, passed", "FP: good, flagged"], ["FN: fraud, missed",
                                                          "TP: fraud, caught"]]
    figure, axes = plt.subplots(figsize=(5.2, 4.4))
    axes.imshow(np.log1p(counts), cmap="Blues")
    for row in range(2):
        for column in range(2):
            dark = np.log1p(counts[row, column]) > 0.6 * np.log1p(counts.max())
            axes.text(column, row, f"{counts[row, column]}\n{words[row][column]}",
                      ha="center", va="center", fontsize=10,
                      color="white" if dark else "black")
    axes.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["passed", "flagged"],
             yticklabels=["good", "fraud"], xlabel="prediction", ylabel="truth")
    axes.set_title(f"{title}\nthreshold {point['threshold']:.3f}: precision "
                   f"{point['precision']:.3f}, recall {point['recall']:.3f}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
