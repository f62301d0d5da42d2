"""What the fraud run reports besides its metrics: tables, plots, published references,
all built from what evaluate.py returns. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from common import intervals  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

ISLR = "James, Witten, Hastie & Tibshirani, An Introduction to Statistical Learning (1st ed.)"
CARAVAN_SOURCE = (f"{ISLR}, §4.6.6 lab: Caravan, features standardised, the first 1,000 rows "
                  "test (59 buyers), fitted on the other 4,822")
DEFAULT_SOURCE = f"{ISLR}, ch. 4, Default data: fitted and scored on all 10,000 rows"
KERAS_IO_SOURCE = ("keras.io example 'Imbalanced classification: credit card fraud "
                   "detection' (last 20 % of rows, class weights 1/count), final epoch")
CREDITCARD_COLUMNS = {"Time", "Amount", *(f"V{i}" for i in range(1, 29))}
COLUMNS = ("precision", "recall", "flagged", "hits_at_k", "precision_at_k", "pr_auc",
           "roc_auc", "validation_precision", "threshold", "seeds")


def references(dataset: str, numeric_columns: list) -> list[dict]:
    """Published numbers for the data at hand: ISLR for Caravan and Default, keras.io for
    the creditcard.csv layout."""
    if dataset == "caravan":
        return [{"name": name, "metric": metric, "value": value, "source": CARAVAN_SOURCE}
                for name, metric, value in (
                    ("ISLR logistic regression, cutoff 0.25 (33 flagged)", "hits_at_k", 11),
                    ("ISLR logistic regression, cutoff 0.25 (33 flagged)", "precision_at_k",
                     0.333),
                    ("ISLR logistic regression, cutoff 0.5 (7 flagged)", "hits", 0),
                    ("ISLR KNN k=1 (77 flagged)", "precision", 0.117),
                    ("ISLR KNN k=3 (26 flagged)", "precision", 0.192),
                    ("ISLR KNN k=5 (15 flagged)", "precision", 0.267))]
    if dataset == "islr_default":
        return [{"name": name, "metric": metric, "value": value, "source": DEFAULT_SOURCE}
                for name, metric, value in (
                    ("ISLR logistic regression (balance, income, student)", "roc_auc", 0.950),
                    ("ISLR logistic regression, threshold 0.5", "recall", 0.315),
                    ("ISLR logistic regression, threshold 0.5", "precision", 0.724),
                    ("ISLR logistic regression, threshold 0.2", "recall", 0.610),
                    ("ISLR logistic regression, threshold 0.2", "precision", 0.423))]
    if CREDITCARD_COLUMNS <= set(numeric_columns):
        return [{"name": "keras.io MLP, weighted BCE", "metric": metric, "value": value,
                 "source": KERAS_IO_SOURCE}
                for metric, value in (("tp", 65), ("fn", 10), ("fp", 206), ("precision", 0.24),
                                      ("recall", 0.87))]
    return []


def models_table(results: dict, descriptions: dict, headline: str) -> dict:
    """One row per model: what it is, then its test metrics (means over its seeds)."""
    rows = [[name + (" (headline)" if name == headline else ""), descriptions[name]]
            + [intervals.show(values[column]) for column in COLUMNS]
            for name, values in results.items()]
    return {"columns": ["model", "loss / method", "test precision at the validation "
                        "threshold", "test recall", "rows flagged", "hits@k", "precision@k",
                        "PR-AUC", "ROC-AUC", "validation precision", "threshold (median)",
                        "seeds"],
            "rows": rows}


def differences_table(headline_values: dict, headline: str) -> dict:
    """headline − other for each compared model, with paired 95 % intervals."""
    others = sorted({key.split("_minus_", 1)[1] for key in headline_values
                     if "_minus_" in key})
    metrics = ("precision", "recall", "pr_auc", "hits_at_k")
    rows = [[f"{headline} − {other}"]
            + [intervals.show(headline_values.get(f"{metric}_minus_{other}"))
               for metric in metrics] for other in others]
    return {"columns": ["comparison (test rows, paired bootstrap)", *metrics], "rows": rows}


def seeds_table(per_seed: dict, seeds: list) -> dict:
    """Each network's test precision at its threshold, hits@k and PR-AUC, seed by seed."""
    rows = [[name, seeds[index], round(point["precision"], 4), point["hits_at_k"],
             round(point["pr_auc"], 4),
             "–" if np.isnan(point["multiplier"]) else round(point["multiplier"], 3)]
            for name, points in per_seed.items() for index, point in points.items()]
    return {"columns": ["network", "seed", "test precision", "hits@k", "PR-AUC",
                        "final Lagrange multiplier"], "rows": rows}


def plot_pr_curves(path: Path, y_test, scored: list, results: dict, headline: str) -> Path:
    """Test PR curves (first seed of each model), operating points marked."""
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for model in scored:
        precision, recall, _ = precision_recall_curve(y_test, model.test[:, 0])
        values = results[model.name]
        average_precision = intervals.show(values["pr_auc"].value, digits=3)
        line, = axes.step(recall, precision, where="post",
                          linewidth=2.2 if model.name == headline else 1.1,
                          label=f"{model.name} (AP {average_precision})")
        axes.plot(values["recall"], values["precision"].value, "o", color=line.get_color())
    axes.axhline(np.mean(y_test), color="grey", linestyle=":", linewidth=1,
                 label=f"prevalence {np.mean(y_test):.3f}")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02),
             title="Test split: PR curves; dots = operating points chosen on validation")
    axes.title.set_fontsize(9)
    axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
