"""Test metrics of the trained scorers and of model-free baselines on the same test lists.

Per list: NDCG of the whole list and NDCG@k (gain 2^label - 1, discount 1/log2(rank + 1),
the TF-Ranking and KerasRS convention; a list without any gain scores 0), and the
reciprocal rank of the first liked movie. Values are means over test lists with a BCa
bootstrap interval; "beats" is the paired difference on the same lists.
"""

from __future__ import annotations

from common import intervals, metrics

import numpy as np
import pandas as pd

from recipes.ranking.data import Lists


def baseline_scores(train_table: pd.DataFrame, lists: Lists, num_movies: int,
                    seed: int) -> dict[str, np.ndarray]:
    """Model-free scores [N, L]: each movie's mean training rating (the global mean for
    a movie without ratings), its number of training ratings, and random order."""
    movies = train_table.movie.to_numpy()
    counts = np.bincount(movies, minlength=num_movies + 1).astype(np.float64)
    sums = np.bincount(movies, weights=train_table.rating, minlength=num_movies + 1)
    item_mean = np.where(counts > 0, sums / np.maximum(counts, 1), train_table.rating.mean())
    return {"item_mean": item_mean[lists.movies], "popularity": counts[lists.movies],
            "random": np.random.default_rng(seed).random(lists.movies.shape)}


def per_list(lists: Lists, list_scores: np.ndarray, ndcg_k: int, liked: float) -> dict:
    """Per-list values [N] of each metric."""
    return {"ndcg": metrics.ndcg(lists.labels, list_scores),
            f"ndcg@{ndcg_k}": metrics.ndcg(lists.labels, list_scores, k=ndcg_k),
            "mrr": metrics.reciprocal_rank(lists.labels, list_scores, threshold=liked)}


def evaluate(lists: Lists, seed_scores: list[np.ndarray], baselines: dict[str, np.ndarray],
             *, headline: str, ndcg_k: int, liked: float, seed: int):
    """Metrics of the model (per-list values averaged over its seeds) and of each
    baseline, each an `Interval` over test lists, and the paired differences
    `<headline>_minus_<baseline>`. Returns (metrics, baselines, per-seed means: {metric:
    [S]})."""
    per_seed = [per_list(lists, s, ndcg_k, liked) for s in seed_scores]
    model = {name: np.mean([values[name] for values in per_seed], axis=0)
             for name in per_seed[0]}
    results = {name: intervals.mean(values, seed=seed) for name, values in model.items()}
    seed_means = {name: [float(values[name].mean()) for values in per_seed]
                  for name in per_seed[0]}
    if len(per_seed) > 1:
        results[f"{headline}_seed_std"] = float(np.std(seed_means[headline], ddof=1))
    baseline_results = {}
    for name, list_scores in baselines.items():
        values = per_list(lists, list_scores, ndcg_k, liked)
        baseline_results[name] = {metric: intervals.mean(v, seed=seed)
                                  for metric, v in values.items()}
        results[f"{headline}_minus_{name}"] = intervals.paired_difference(
            model[headline], values[headline], seed=seed)
    return results, baseline_results, seed_means
