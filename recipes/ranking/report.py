"""The ranking table, the published reference numbers, and the test predictions file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recipes.ranking.data import Lists, Ratings

_TFRS = "TFRS listwise tutorial code on MovieLens 100K, TF 2.21, 5 seeds x 30 epochs (issue 2)"
_KERAS_RS = ("keras-io examples/keras_rs/listwise_ranking.py, MovieLens 100K, "
             "keras_rs.metrics.NDCG(k=5), one run")
REFERENCES = {
    "latest": [],
    "tfrs_listwise": [
        {"name": f"TFRS listwise tutorial, {model}", "metric": "ndcg", "value": value,
         "source": _TFRS}
        for model, value in [("mse", 0.9103), ("pairwise hinge", 0.9125),
                             ("listmle", 0.9114), ("ranknet", 0.8978),
                             ("item-mean baseline", 0.9130)]],
    "keras_rs_listwise": [
        {"name": f"KerasRS listwise example, {model}", "metric": "ndcg", "value": value,
         "source": _KERAS_RS}
        for model, value in [("mse", 0.9109), ("pairwise hinge", 0.9348)]],
}


def references(protocol: str) -> list[dict]:
    """The published numbers a run of `protocol` is compared with, each with its source."""
    return REFERENCES.get(protocol, [])


def ranking_table(loss: str, metrics: dict, baselines: dict, headline: str) -> dict:
    """Model and baselines, one row each: headline [95% CI], then the other metrics."""
    columns = [headline] + [name for name in ("mrr", "ndcg") if name != headline]
    rows = [[f"{loss} (this recipe)"] + [str(metrics[name]) for name in columns]]
    rows += [[name] + [str(values[name]) for name in columns]
             for name, values in baselines.items()]
    return {"columns": ["model"] + [f"{name} [95% CI]" for name in columns], "rows": rows}


def write_predictions(path: Path, ratings: Ratings, lists: Lists, list_scores: np.ndarray):
    """The test lists as raw ids and the recipe's own model's scores [N, L]: a loaded
    `model.keras` or SavedModel must reproduce them from the ids alone."""
    raw_movies = np.concatenate([[0], ratings.movie_ids])[lists.movies]  # code 0: padding
    np.savez(path, user=ratings.user_ids[lists.users - 1], movie=raw_movies,
             scores=np.asarray(list_scores, np.float32))
    return path
