"""Movie ranking on MovieLens with a pairwise RankNet loss (TensorFlow Recommenders).

    .venv/bin/python recipes/ranking/train.py

Trains a TFRS model on lists of movies per user and ranks held-out lists. Protocols
(`protocols.py`): `latest` (default: each user's 5 latest ratings among 95 unrated
movies, NDCG@10), `tfrs_listwise` (the TFRS listwise tutorial, configs/tfrs_listwise.cfg)
and `keras_rs_listwise` (the KerasRS listwise example, configs/keras_rs_listwise.cfg).
Every run scores model-free baselines (item mean rating, popularity, random) on the same
test lists. `--validation` evaluates on ratings carved out of the training ratings
instead: hyper-parameters are chosen that way, never on the test lists.
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import cli, intervals, training

import numpy as np
import tensorflow as tf

from recipes.ranking import data, evaluate, model, protocols, report
from recipes.ranking.config import Config

RECIPE = "ranking"


def train(config: Config) -> dict:
    run = training.start(RECIPE, config)
    ratings = data.load(config.dataset, config.data_dir)  # checked in full: nothing written yet
    if config.smoke:
        ratings = data.subsample_users(ratings, config.SMOKE_USERS)
    split = protocols.make(
        config.protocol, ratings.table, num_list_per_user=config.num_list_per_user,
        num_examples_per_list=config.num_examples_per_list,
        negatives_per_list=config.negatives_per_list, test_negatives=config.test_negatives,
        holdout_per_user=config.holdout_per_user, test_fraction=config.test_fraction,
        validation=config.validation, seed=config.seed)
    train_lists, test_lists = split.train_lists, split.test_lists
    print(f"[{RECIPE}] {ratings.name}: {len(ratings.table)} ratings, {ratings.num_users} users, "
          f"{ratings.num_movies} movies; {len(train_lists)} training lists of "
          f"{train_lists.movies.shape[1]}, {len(test_lists)} "
          f"{'validation' if config.validation else 'test'} lists of "
          f"{test_lists.movies.shape[1]}", flush=True)
    features = np.concatenate(
        [ratings.features, data.rating_statistics(split.train_table, ratings.num_movies)], 1)

    scorers = []
    for index in range(config.num_seeds):
        tf.keras.utils.set_random_seed(config.seed + index)
        with run.strategy.scope():
            scorer = model.build(
                ratings.num_users, ratings.num_movies, features, config.embedding_dim,
                config.hidden_units, config.l2)
            ranker = model.RankingModel(
                scorer, ratings.num_users, config.loss, config.rating_weight,
                float(train_lists.labels[train_lists.labels >= 0].mean()), run.global_batch_size,
                config.l2)
            ranker.compile(optimizer=model.optimizer(config.optimizer, config.learning_rate),
                           jit_compile=config.jit_compile)
        name = f"seed{config.seed + index}" if index else ""
        training.fit(run, ranker, epochs=config.epochs, name=name,
                     stream=data.stream(train_lists, run.global_batch_size, config.seed))
        served, signature = model.serving(scorer, ratings.user_ids, ratings.movie_ids)
        training.save_model(run, served, serving=signature, name=name)
        scorers.append(scorer)

    seed_scores = model.predict(scorers, test_lists.users, test_lists.movies)
    headline = "ndcg" if config.protocol != "latest" else f"ndcg@{config.ndcg_k}"
    metrics, baselines, seed_means = evaluate.evaluate(
        test_lists, seed_scores,
        evaluate.baseline_scores(split.train_table, test_lists, ratings.num_movies, config.seed),
        headline=headline, ndcg_k=config.ndcg_k, liked=split.liked, seed=config.seed)
    predictions = report.write_predictions(run.path("test_predictions.npz"), ratings,
                                           test_lists, seed_scores[0])
    return training.finish(
        run, metrics=metrics, baselines=baselines,
        # A difference from a baseline (which has no seed) varies as the headline does.
        tolerances=intervals.seed_tolerances(
            {headline: seed_means[headline], "mrr": seed_means["mrr"],
             **{f"{headline}_minus_{name}": seed_means[headline] for name in baselines}},
            one_seed={headline: 0.01, "mrr": 0.02,
                      **{f"{headline}_minus_{name}": 0.01 for name in baselines}}),
        references=report.references(config.protocol),
        tables={"ranking": report.ranking_table(config.loss, metrics, baselines, headline)},
        dataset={"name": ratings.name, "fingerprint": ratings.fingerprint(),
                 "ratings": len(ratings.table), "users": ratings.num_users,
                 "movies": ratings.num_movies, "protocol": config.protocol,
                 "evaluated_on": "validation" if config.validation else "test",
                 "train_lists": len(train_lists), "test_lists": len(test_lists),
                 "list_length": int(test_lists.movies.shape[1])},
        headline=headline, model=scorers[0], extra={"predictions": predictions.name})


if __name__ == "__main__":
    cli.main(Config, train)
