"""A multi-task recommender on MovieLens: retrieval, ranking and rating in one model.

    .venv/bin/python recipes/recommender/train.py --flagfile=recipes/recommender/configs/default.cfg

Trains two towers with a shared bottom (or MMoE, --architecture=mmoe) on a seeded 80/20
random split of the ratings, three task losses weighted by --weighting; then, in the same
run, the single-task networks of the same architecture and the baselines (popularity,
EASE, SVD, BaselineOnly). Evaluation covers the whole catalog (evaluate.py). The
SavedModel takes a raw user id and returns the top-k movies with predicted rating and
ranking score. `--validation` evaluates on ratings carved out of the training ratings.
"""

from __future__ import annotations

import time

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import cli, training

import tensorflow as tf

from recipes.recommender import data, evaluate, model, report
from recipes.recommender.config import Config

RECIPE = "recommender"


def fit_network(run, config: Config, ratings, split, tasks, name: str):
    """One network trained on `tasks` (and saved); its predictions for the held-out users."""
    tf.keras.utils.set_random_seed(config.seed)
    user_features = data.user_features(split.train, ratings.num_users)
    movie_features = data.movie_features(ratings, split.train)
    with run.strategy.scope():
        network = model.build(
            ratings.num_users, ratings.num_movies, user_features, movie_features,
            mean_rating=float(split.train.rating.mean()), embedding_dim=config.embedding_dim,
            hidden_units=config.hidden_units, architecture=config.architecture,
            num_experts=config.num_experts)
        trainer = model.MultiTask(
            network, ratings.num_movies, tasks=tasks, weighting=config.weighting,
            static_weights=(config.retrieval_weight, config.ranking_weight,
                            config.rating_weight))
        trainer.compile(optimizer=model.optimizer(config.learning_rate, config.weight_decay),
                        jit_compile=config.jit_compile)
    examples = data.lists(split.train, config.list_length, config.seed)
    training.fit(run, trainer, epochs=config.epochs, name=name,
                 stream=data.stream(examples, run.global_batch_size, config.seed))
    server, signature = model.serving(network, ratings.user_ids, ratings.movie_ids,
                                      config.top_k)
    training.save_model(run, server, serving=signature, name=name)
    return network


def train(config: Config) -> dict:
    run = training.start(RECIPE, config)
    ratings = data.load(config.dataset, config.data_dir)  # checked in full: nothing written yet
    if config.smoke:
        ratings = data.subsample_users(ratings, config.SMOKE_USERS)
    split = data.split(ratings.table, config.test_fraction, config.seed, config.validation)
    held = evaluate.held_out(split.train, split.test, ratings.num_movies)
    print(f"[{RECIPE}] {ratings.name}: {len(ratings.table)} ratings, {ratings.num_users} "
          f"users, {ratings.num_movies} movies; {len(split.train)} training, "
          f"{len(split.test)} {'validation' if config.validation else 'test'} ratings",
          flush=True)

    networks = {"multi_task": fit_network(run, config, ratings, split, model.TASKS, "")}
    if config.single_task:
        for task in model.TASKS:
            networks[f"single_task_{task}"] = fit_network(run, config, ratings, split,
                                                          (task,), f"single_task_{task}")
    started = time.time()
    predictions = {name: model.predict(network, held.users, held.movies, ratings.num_movies)
                   for name, network in networks.items()}
    baselines, ease_lambda = {}, None
    if config.baselines:
        inner = data.split(split.train, config.test_fraction, config.seed, True)
        validation = (inner.train, evaluate.held_out(inner.train, inner.test,
                                                     ratings.num_movies))
        baselines["popularity"] = evaluate.popularity(split.train, held, ratings.num_movies)
        baselines["ease"], ease_lambda = evaluate.ease(split.train, held, ratings.num_users,
                                                       ratings.num_movies, validation)
        baselines.update(evaluate.rating_baselines(split.train, held, config.seed))
    metrics, others = evaluate.evaluate(predictions, baselines, held, seed=config.seed)
    evaluation_seconds = time.time() - started
    curves = {"multi-task": (predictions["multi_task"]["retrieval"], held)}
    for name in ("single_task_retrieval", "popularity", "ease"):
        source = predictions.get(name) or baselines.get(name)
        if source:
            curves[name.replace("_", " ")] = (source["retrieval"], held)
    plot = report.recall_curves(run.path("recall_at_k.png"), curves)
    return training.finish(
        run, metrics=metrics, baselines=others, headline="retrieval_ndcg@10",
        tolerances={"retrieval_ndcg@10": 0.01, "retrieval_recall@100": 0.02,
                    "ranking_ndcg": 0.01, "rating_rmse": 0.01, "delta_m": 2.0},
        references=report.references(ratings.name, len(ratings.table)),
        tables={"recommender": report.table(metrics, others)},
        dataset={"name": ratings.name, "fingerprint": ratings.fingerprint(),
                 "ratings": len(ratings.table), "users": ratings.num_users,
                 "movies": ratings.num_movies, "train_ratings": len(split.train),
                 "evaluated_on": "validation" if config.validation else "test",
                 "held_out_ratings": len(split.test), "evaluated_users": len(held.users)},
        model=networks["multi_task"], artifacts=[plot],
        extra={"ease_lambda": ease_lambda, "evaluation_seconds": evaluation_seconds,
               "retrieval_softmax": "full catalog"})


if __name__ == "__main__":
    cli.main(Config, train)
