"""Test metrics of the networks and the baselines, each over the held-out users.

Every user with a held-out rating is evaluated on all three tasks:
  retrieval  the whole catalog scored, the user's training movies excluded (the standard
             protocol); recall@100 = held-out movies in the top 100 / held-out movies,
             NDCG@10 with binary relevance (a held-out movie is relevant), ideal DCG from
             min(10, held-out movies). The TFRS tutorial's top-100 accuracy (the share of
             held-out pairs whose movie is among the top 100 of the whole catalog, seen
             movies *not* excluded) is recorded as a reference.
  ranking    NDCG of the user's held-out movies ordered by the ranking score (gain 2^r - 1).
  rating     RMSE over all held-out ratings.
Intervals are bootstraps over users (`common.intervals`). ΔM (Maninis et al. 2019, as
the depth recipe's evaluate.py defines it), in %:
  ΔM = -100 / M · Σ_m s_m (multi_m − single_m) / single_m, s_m = +1 if higher is better
over the M = 4 metrics, each against the single-task network of its task: negative means
the multi-task network is better on average.

Baselines: popularity (training count), EASE (Steck 2019, closed form, λ chosen on a
validation split of the training ratings), and cornac's SVD and BaselineOnly for ratings.
"""

from __future__ import annotations

import dataclasses

from common import intervals, metrics

import numpy as np
import pandas as pd

RETRIEVAL_K, NDCG_K, TUTORIAL_K = 100, 10, 100
HIGHER_IS_BETTER = {"retrieval_recall@100": True, "retrieval_ndcg@10": True,
                    "ranking_ndcg": True, "rating_rmse": False}
TASK_OF = {"retrieval_recall@100": "retrieval", "retrieval_ndcg@10": "retrieval",
           "ranking_ndcg": "ranking", "rating_rmse": "rating"}
EASE_LAMBDAS = (30.0, 100.0, 300.0, 1000.0, 3000.0)


@dataclasses.dataclass
class Held:
    """The held-out ratings of the N evaluated users."""

    users: np.ndarray  # [N] int32 codes
    movies: np.ndarray  # [N, L] int32 codes, 0 padding
    ratings: np.ndarray  # [N, L] float32, -1 padding
    positives: np.ndarray  # [N, M + 1] bool: held-out movies
    seen: np.ndarray  # [N, M + 1] bool: training movies (and column 0), excluded


def held_out(train: pd.DataFrame, test: pd.DataFrame, num_movies: int) -> Held:
    users = np.unique(test.user.to_numpy()).astype(np.int32)
    row = np.searchsorted(users, test.user.to_numpy())
    position = test.groupby("user").cumcount().to_numpy()
    length = int(position.max()) + 1
    movies = np.zeros((len(users), length), np.int32)
    ratings = np.full((len(users), length), -1.0, np.float32)
    movies[row, position], ratings[row, position] = test.movie, test.rating
    positives = np.zeros((len(users), num_movies + 1), bool)
    positives[row, test.movie.to_numpy()] = True
    seen = np.zeros_like(positives)
    inside = np.isin(train.user.to_numpy(), users)
    seen[np.searchsorted(users, train.user.to_numpy()[inside]),
         train.movie.to_numpy()[inside]] = True
    seen[:, 0] = True
    return Held(users, movies, ratings, positives, seen)


def retrieval_per_user(scores: np.ndarray, positives: np.ndarray, seen: np.ndarray,
                       k: int = RETRIEVAL_K, ndcg_k: int = NDCG_K) -> dict:
    """Per user [N]: recall@k and NDCG@ndcg_k of catalog scores [N, M + 1], `seen`
    movies excluded; vectorised (one partition and one sort of k columns per user)."""
    masked = np.where(seen, -np.inf, scores)
    width = min(max(k, ndcg_k), masked.shape[1])  # a catalog smaller than k: all of it
    top = np.argpartition(-masked, width - 1, axis=1)[:, :width]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(masked, top, 1), 1,
                                             kind="stable"), 1)
    hits = np.take_along_axis(positives, top, 1)
    count = positives.sum(1)
    discounts = 1.0 / np.log2(np.arange(2, ndcg_k + 2))
    dcg = (hits[:, :ndcg_k] * discounts[:min(ndcg_k, width)]).sum(1)
    ideal = np.cumsum(discounts)[np.minimum(count, ndcg_k) - 1]
    return {f"retrieval_recall@{k}": hits[:, :k].sum(1) / count,
            f"retrieval_ndcg@{ndcg_k}": dcg / ideal}


def top_k_accuracy(scores: np.ndarray, positives: np.ndarray, k: int = TUTORIAL_K) -> float:
    """TFRS FactorizedTopK: held-out pairs whose movie scores within the user's top k of
    the whole catalog (column 0 excluded, seen movies not)."""
    catalog = scores[:, 1:]
    k = min(k, catalog.shape[1])
    kth = -np.partition(-catalog, k - 1, axis=1)[:, k - 1:k]
    return float(((catalog >= kth) & positives[:, 1:]).sum() / positives.sum())


def per_user(predictions: dict, held: Held) -> dict:
    """Per-user values [N] of each task `predictions` has: {"retrieval": [N, M + 1],
    "ranking": [N, L] scores of held.movies, "rating": [N, L]}."""
    found = {}
    if "retrieval" in predictions:
        found.update(retrieval_per_user(predictions["retrieval"], held.positives, held.seen))
    mask = held.ratings >= 0
    if "ranking" in predictions:
        found["ranking_ndcg"] = metrics.ndcg(held.ratings, predictions["ranking"], mask=mask)
    if "rating" in predictions:
        errors = np.where(mask, predictions["rating"] - held.ratings, 0.0)
        found["squared_error"], found["count"] = (errors**2).sum(1), mask.sum(1)
    return found


def _rmse(squared_error, count) -> float:
    return float(np.sqrt(squared_error.sum() / count.sum()))


def summary(values: dict, seed: int) -> dict:
    """{metric: Interval over users} of per-user `values`."""
    found = {name: intervals.mean(values[name], seed=seed) for name in HIGHER_IS_BETTER
             if name in values}
    if "squared_error" in values:
        found["rating_rmse"] = intervals.statistic(_rmse, values["squared_error"],
                                                   values["count"], seed=seed)
    return found


def delta_m(multi: dict, single: dict, seed: int) -> intervals.Interval:
    """ΔM (%) of the multi-task per-user values against {task: single-task values},
    users resampled together."""
    names = [n for n in ("retrieval_recall@100", "retrieval_ndcg@10", "ranking_ndcg")
             if n in multi and n in single.get(TASK_OF[n], {})]
    columns = {"m": [multi[n] for n in names], "s": [single[TASK_OF[n]][n] for n in names]}
    rated = "squared_error" in multi and "squared_error" in single.get("rating", {})
    if rated:
        columns["m"] += [multi["squared_error"], multi["count"]]
        columns["s"] += [single["rating"]["squared_error"], single["rating"]["count"]]
    samples = np.stack(columns["m"] + columns["s"], 1)  # [N, 2C]

    def statistic(rows):
        half = rows.shape[1] // 2
        m, s = rows[:, :half], rows[:, half:]
        changes = [(m[:, j].mean() - s[:, j].mean()) / s[:, j].mean() for j in range(len(names))]
        if rated:
            multi_rmse, single_rmse = _rmse(m[:, -2], m[:, -1]), _rmse(s[:, -2], s[:, -1])
            changes.append(-(multi_rmse - single_rmse) / single_rmse)
        return -100.0 * float(np.mean(changes))

    return intervals.statistic(statistic, samples, seed=seed)


def popularity(train: pd.DataFrame, held: Held, num_movies: int) -> dict:
    counts = np.bincount(train.movie.to_numpy(), minlength=num_movies + 1).astype(np.float64)
    return {"retrieval": np.broadcast_to(counts, held.positives.shape),
            "ranking": counts[held.movies]}


def ease_scores(matrix: np.ndarray, lam: float) -> np.ndarray:
    """EASE (Steck 2019) scores X B of interactions X [U, M], B = I - P diag(1/diag P),
    P = (XᵀX + λI)⁻¹. With fewer users than movies P is never formed: by Woodbury
    P = (I - Xᵀ(XXᵀ + λI)⁻¹X) / λ, so X P and diag P come from a U x U system."""
    x = np.asarray(matrix, np.float64)
    users, movies = x.shape
    if users < movies:
        gram = x @ x.T
        solved = np.linalg.solve(gram + lam * np.eye(users), x)  # (XXᵀ + λI)⁻¹ X, [U, M]
        diagonal = (1.0 - (solved * x).sum(0)) / lam
        x_p = (x - gram @ solved) / lam
    else:
        p = np.linalg.inv(x.T @ x + lam * np.eye(movies))
        diagonal, x_p = np.diag(p), x @ p
    return x - x_p / diagonal


def ease(train: pd.DataFrame, held: Held, num_users: int, num_movies: int,
         validation: tuple[pd.DataFrame, Held], lambdas=EASE_LAMBDAS) -> tuple[dict, float]:
    """EASE's catalog scores for the held-out users, λ chosen by NDCG@10 on `validation`
    (training ratings, held-out ratings of a split of `train`); and that λ."""
    def scores(table, users, lam):
        matrix = np.zeros((num_users + 1, num_movies + 1))
        matrix[table.user.to_numpy(), table.movie.to_numpy()] = 1.0
        return ease_scores(matrix, lam)[users]

    fit, check = validation
    ndcgs = [retrieval_per_user(scores(fit, check.users, lam), check.positives,
                                check.seen)[f"retrieval_ndcg@{NDCG_K}"].mean()
             for lam in lambdas]
    best = float(lambdas[int(np.argmax(ndcgs))])
    return {"retrieval": scores(train, held.users, best)}, best


def rating_baselines(train: pd.DataFrame, held: Held, seed: int) -> dict:
    """{"svd", "baseline_only": {"rating": [N, L], "ranking": [N, L]}} from cornac
    (SVD: biased matrix factorisation as scikit-surprise's SVD, 100 factors, 20 epochs,
    learning rate 0.005, regularisation 0.02, its defaults; BaselineOnly: the biases)."""
    import cornac
    from cornac.data import Dataset

    triples = list(zip(train.user.astype(str), train.movie.astype(str),
                       train.rating.astype(float)))
    dataset = Dataset.from_uir(triples, seed=seed)
    found = {}
    for name, recommender in (
            ("svd", cornac.models.SVD(k=100, max_iter=20, learning_rate=0.005,
                                      lambda_reg=0.02, seed=seed, verbose=False)),
            ("baseline_only", cornac.models.BaselineOnly(seed=seed, verbose=False))):
        recommender.fit(dataset)
        users = np.array([dataset.uid_map.get(str(u), -1) for u in held.users], int)
        lookup = np.full(held.movies.max() + 1, -1)
        known_movies = np.array([int(raw) for raw in dataset.iid_map], int)
        lookup[known_movies[known_movies <= held.movies.max()]] = [
            dataset.iid_map[str(m)] for m in known_movies[known_movies <= held.movies.max()]]
        items = lookup[held.movies]
        predicted = np.full(held.movies.shape, float(recommender.global_mean))
        user_bias = np.where(users >= 0, recommender.u_biases[users], 0.0)
        item_bias = np.where(items >= 0, recommender.i_biases[items], 0.0)
        predicted += user_bias[:, None] + item_bias
        if name == "svd":
            known = (users[:, None] >= 0) & (items >= 0)
            dot = np.einsum("nd,nld->nl", recommender.u_factors[users],
                            recommender.i_factors[items])
            predicted += np.where(known, dot, 0.0)
        predicted = np.clip(predicted, 0.5, 5.0)
        found[name] = {"rating": predicted, "ranking": predicted}
    return found


def evaluate(networks: dict, baselines: dict, held: Held, *, seed: int):
    """(metrics, baselines) from predictions {name: {task: array}} of the networks
    ("multi_task", "single_task_<task>") and of the baselines: the multi-task network's
    metrics with ΔM, and {name: metrics} for the others (single-task networks on their
    own task only). Also the tutorial's top-100 accuracy for retrieval scorers."""
    values = {name: per_user(predictions, held) for name, predictions in networks.items()}
    multi = values["multi_task"]
    found = summary(multi, seed)
    found["retrieval_top100_accuracy"] = top_k_accuracy(networks["multi_task"]["retrieval"],
                                                        held.positives)
    single = {name.removeprefix("single_task_"): v for name, v in values.items()
              if name.startswith("single_task_")}
    if single:
        found["delta_m"] = delta_m(multi, single, seed)
    others = {}
    for name in networks:
        if name.startswith("single_task_"):
            task = name.removeprefix("single_task_")
            others[name] = summary({k: v for k, v in values[name].items()
                                    if k in ("squared_error", "count") and task == "rating"
                                    or TASK_OF.get(k) == task}, seed)
    for name, predictions in baselines.items():
        others[name] = summary(per_user(predictions, held), seed)
        if "retrieval" in predictions:
            others[name]["retrieval_top100_accuracy"] = top_k_accuracy(
                predictions["retrieval"], held.positives)
    return found, others
