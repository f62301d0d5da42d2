"""The ranking recipe: command line, saved models, strategies, resumption, loaders,
protocols and metrics, each checked against something independent."""

import itertools
import re
import subprocess
import sys
import types

from common import cli, losses, results

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
from sklearn.metrics import ndcg_score

from recipes.ranking import data, evaluate, model, protocols
from recipes.ranking.config import Config
from tests.conftest import REPOSITORY, RecipeRun, assert_refused, run_command, run_two_workers

RECIPE = "ranking"
TRAIN = REPOSITORY / "recipes" / RECIPE / "train.py"


def _run(model_dir, *args):
    """`train.py *args --model_dir=model_dir`, in this process."""
    status, stdout, stderr = run_command(RECIPE, [*args, f"--model_dir={model_dir}"])
    return RecipeRun(types.SimpleNamespace(returncode=status, stdout=stdout, stderr=stderr),
                     model_dir)


def _process(model_dir, *args, timeout=600):
    """The same command in a fresh process (what only a process shows)."""
    completed = subprocess.run([sys.executable, str(TRAIN), *args, f"--model_dir={model_dir}"],
                               cwd=model_dir.parent, capture_output=True, text=True,
                               timeout=timeout)
    return RecipeRun(completed, model_dir)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run (3 epochs) that several tests read."""
    return _run(tmp_path_factory.mktemp("smoke") / "run", "--smoke", "--epochs=3")


def published_state():
    folder = results.RESULTS_DIR / RECIPE
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*")} if folder.exists() else {}


# ---- the command line --------------------------------------------------------------

def test_documented_commands_parse(repository, monkeypatch):
    """The command atop train.py and each config's command parse as written (from the
    repository: flagfiles are relative to it)."""
    monkeypatch.chdir(repository)
    commands = re.findall(r"^\s*(\.venv/bin/python recipes/\S+/train\.py.*)$",
                          TRAIN.read_text(), re.M)
    for config in sorted((repository / "recipes" / RECIPE / "configs").glob("*.cfg")):
        commands += re.findall(r"^# (\.venv/bin/python recipes/\S+/train\.py.*)$",
                               config.read_text(), re.M)
    assert len(commands) >= 4
    for command in commands:
        cli.parse(Config, command.split()[2:])


def test_smoke_one_device_beats_random_and_records_the_baselines(smoke):
    assert smoke.returncode == 0, smoke
    record = smoke.record
    assert record["strategy"]["replicas"] == 1
    assert record["flags"]["epochs"] == 3 and record["flags"]["global_batch_size"] == 64
    assert set(record["baselines"]) == {"item_mean", "popularity", "random"}
    assert record["metrics"]["ndcg@10"] > record["baselines"]["random"]["ndcg@10"] + 0.05
    assert record["metrics"]["ndcg@10_minus_random_ci_low"] > 0
    losses_by_epoch = [line["loss"] for line in record["history"]]
    assert len(losses_by_epoch) == 3 and losses_by_epoch[-1] < losses_by_epoch[0]
    assert record["models"]["model"] == {"keras": "model.keras", "saved_model": "saved_model"}


LOAD_AND_SCORE = """
import sys
import common  # noqa: F401
import numpy as np
import tensorflow as tf
run = sys.argv[1]
expected = np.load(run + "/test_predictions.npz")
inputs = {"user": expected["user"], "movie": expected["movie"]}
keras_scores = tf.keras.models.load_model(run + "/model.keras").predict(inputs, verbose=0)
serve = tf.saved_model.load(run + "/saved_model").signatures["serving_default"]
served = serve(user=tf.constant(inputs["user"]), movie=tf.constant(inputs["movie"]))["scores"]
valid = expected["movie"] > 0
for scores in (keras_scores, served.numpy()):
    np.testing.assert_allclose(scores[valid], expected["scores"][valid], rtol=1e-5, atol=1e-6)
print("reproduced", valid.sum())
"""


def test_saved_models_reproduce_the_test_predictions_in_a_fresh_process(smoke, tmp_path):
    """model.keras (with only `import common`) and the SavedModel signature score raw
    MovieLens ids as the run did."""
    assert smoke.returncode == 0, smoke
    completed = subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, str(smoke.model_dir)],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "reproduced" in completed.stdout


def test_mirrored_two_replicas_matches_one_device(smoke, tmp_path):
    """Global batch, loss averaged over it: 2 replicas train the same model as 1."""
    two = _run(tmp_path / "two", "--smoke", "--epochs=3", "--strategy=mirrored",
               "--num_cpu_devices=2")
    assert two.returncode == 0, two
    assert two.record["strategy"]["replicas"] == 2
    np.testing.assert_allclose([e["loss"] for e in two.record["history"]],
                               [e["loss"] for e in smoke.record["history"]], rtol=1e-4)
    assert two.record["metrics"]["ndcg@10"] == pytest.approx(
        smoke.record["metrics"]["ndcg@10"], abs=2e-3)


def test_a_five_seed_run_prints_nothing_on_stderr(tmp_path):
    """No TensorFlow start-up lines (CUDA probing, oneDNN notices) and no warning: scoring
    five seeds' scorers used to retrace `predict` per model, which TensorFlow reports as
    a retracing WARNING from the fifth seed on."""
    five = _process(tmp_path / "five", "--smoke", "--epochs=2", "--num_seeds=5")
    assert five.returncode == 0, five
    assert five.stderr.strip() == "", five.stderr[-3000:]


def test_scores_of_several_scorers_equal_each_ones_predict():
    """One traced function with each scorer's weights copied in gives each scorer's own
    scores, over several batches and a partial last one."""
    rng = np.random.default_rng(0)
    features = rng.random((31, 4))
    scorers = []
    for seed in (1, 2):
        tf.keras.utils.set_random_seed(seed)
        scorers.append(model.build(20, 30, features, 8, (6, 3)))
        # Non-zero movie biases, so that every term of the score differs between seeds.
        bias = scorers[-1].get_layer("movie_bias")
        bias.set_weights([rng.normal(size=bias.get_weights()[0].shape)])
    lists = data.Lists(rng.integers(0, 21, 25).astype(np.int32),
                       rng.integers(0, 31, (25, 7)).astype(np.int32),
                       np.zeros((25, 7), np.float32))
    ours = model.predict(scorers, lists.users, lists.movies, batch_size=10)
    for scorer, scores in zip(scorers, ours):
        expected = scorer.predict({"user": lists.users, "movie": lists.movies}, verbose=0)
        assert scores.shape == (25, 7) and scores.dtype == np.float64
        np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(ours[0], ours[1])


def test_crash_mid_epoch_then_restart_equals_uninterrupted(smoke, tmp_path):
    # Smoke: 600 lists / 64 = 9 steps per epoch; step 13 is inside epoch 2.
    crashed = _run(tmp_path / "resumed", "--smoke", "--epochs=3", "--simulate_crash_at_step=13",
                   "--backup_seconds=0")
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    resumed = _run(tmp_path / "resumed", "--smoke", "--epochs=3")
    assert resumed.returncode == 0, resumed
    assert "resuming" in resumed.stdout
    assert resumed.record["weights_fingerprint"] == smoke.record["weights_fingerprint"]


def test_two_workers_on_localhost_end_with_identical_weights(tmp_path):
    chief, other = run_two_workers(RECIPE, ("--smoke", "--epochs=1"), tmp_path / "run")
    assert chief["strategy"]["replicas"] == 2
    assert chief["weights_fingerprint"] == other["weights_fingerprint"]


def test_rated_list_protocols_run_on_validation_lists(tmp_path):
    """keras_rs_listwise with --validation: labels on [0, 1], NDCG@5, KerasRS references."""
    result = _run(tmp_path / "keras_rs", "--smoke", "--epochs=1", "--validation",
                  "--flagfile=" + str(REPOSITORY / "recipes/ranking/configs/keras_rs_listwise.cfg"),
                  "--num_seeds=1")
    assert result.returncode == 0, result
    record = result.record
    assert record["dataset"]["evaluated_on"] == "validation"
    assert record["dataset"]["list_length"] == 5 and "ndcg@5" in record["metrics"]
    assert record["metrics"]["ndcg"] == pytest.approx(record["metrics"]["ndcg@5"])
    assert {r["value"] for r in record["references"]} == {0.9109, 0.9348}


# ---- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["--protocol=bogus"], "protocol"),
    (["--hidden_units=64,x"], "hidden_units"),
    (["--dataset=bogus"], "--dataset"),
])
def test_bad_flags_fail_clearly_and_publish_nothing(tmp_path, args, named):
    before = published_state()
    result = _run(tmp_path / "never", "--smoke", "--publish", *args)
    assert result.returncode != 0 and named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()
    assert published_state() == before


def test_malformed_ratings_file_is_named_and_leaves_no_run_directory(tmp_path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,11,x,101\n")
    result = _run(tmp_path / "never", "--smoke", f"--dataset=grouplens:{folder}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {folder / 'ratings.csv'} line 3, column rating: 'x' is not a valid rating")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()


def _ratings_folder(root, name, text, file="ratings.csv"):
    folder = root / name
    folder.mkdir()
    (folder / file).write_text(text)
    return f"--dataset=grouplens:{folder}"


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, bad_inputs):
    """Each case stops at the parse (1) or before training (2) with one line naming the
    flag, or the file and its line, and leaves its run directory empty."""
    header = "userId,movieId,rating,timestamp\n"
    rows = "1,10,4.0,100\n1,11,0.5,101\n2,10,5.0,102\n"
    cases = {  # name: (argv, expected substring of the error)
        "empty_file": ([_ratings_folder(tmp_path, "empty", "")], "ratings.csv: the file is empty"),
        "header_only": ([_ratings_folder(tmp_path, "header", header)],
                        "ratings.csv: no rows below the header"),
        "rating_1000": ([_ratings_folder(tmp_path, "high", header + rows + "2,12,1000,103\n")],
                        "ratings.csv line 5: rating 1000 is outside MovieLens' scale 0.5..5"),
        "rating_-7": ([_ratings_folder(tmp_path, "low", header + "2,12,-7,99\n" + rows)],
                      "ratings.csv line 2: rating -7 is outside"),
        "rating_1e300": ([_ratings_folder(tmp_path, "huge", header + rows + "2,12,1e300,103\n")],
                         "ratings.csv line 5: rating 1e+300 is outside"),
        "rating_0_in_ml_100k": ([_ratings_folder(tmp_path, "ml-100k", "1\t10\t4\t100\n"
                                                 "1\t11\t0\t101\n", "u.data")],
                                "u.data line 2: rating 0 is outside"),
        "every_rating_twice": ([_ratings_folder(tmp_path, "twice", header + rows + rows)],
                               "ratings.csv lines 2 and 5: user 1 rated movie 10 twice "
                               "(3 repeated"),
        "rating_weight_1e30": (["--rating_weight=1e30"], "--rating_weight must be a finite"),
        "rating_weight_negative": (["--rating_weight=-1"], "--rating_weight must be a finite"),
        "l2_inf": (["--l2=inf"], "--l2 must be a finite"),
        "l2_2": (["--l2=2"], "--l2 must be a finite"),
        "test_fraction_nan": (["--test_fraction=nan"], "--test_fraction must be a finite"),
        "test_fraction_1": (["--test_fraction=1"], "--test_fraction must be a finite"),
        "hidden_units_gap": (["--hidden_units=64,,16"], "--hidden_units must be positive"),
        "hidden_units_zero": (["--hidden_units=0"], "--hidden_units must be positive"),
        "embedding_dim_huge": (["--embedding_dim=1000000000"], "--embedding_dim must be"),
        "num_list_per_user_huge": (["--num_list_per_user=100000000"],
                                   "--num_list_per_user must be"),
        "num_examples_per_list_1": (["--num_examples_per_list=1"],
                                    "--num_examples_per_list must be"),
        "negatives_per_list_negative": (["--negatives_per_list=-1"],
                                        "--negatives_per_list must be"),
        "test_negatives_0": (["--test_negatives=0"], "--test_negatives must be"),
        "holdout_per_user_0": (["--holdout_per_user=0"], "--holdout_per_user must be"),
        "ndcg_k_0": (["--ndcg_k=0"], "--ndcg_k must be"),
        "num_seeds_1000": (["--num_seeds=1000"], "--num_seeds must be"),
    }
    outcomes = bad_inputs(RECIPE, {name: ["--smoke", *argv]
                                   for name, (argv, _) in cases.items()})
    assert_refused(outcomes, {name: expected for name, (_, expected) in cases.items()})


# ---- protocols ---------------------------------------------------------------------

def _random_table(seed=0, users=12, movies=40, per_user=(6, 15)):
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, users + 1):
        for movie in rng.choice(np.arange(1, movies + 1), size=rng.integers(*per_user),
                                replace=False):
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
    lists = protocols.sample_lists(table, 3, 5, seed=7)
    assert len(lists) == len(expected)
    for index, example in enumerate(expected):
        assert int(example["user_id"]) == lists.users[index]
        np.testing.assert_array_equal(example["movie_title"].astype(int), lists.movies[index])
        np.testing.assert_array_equal(example["user_rating"], lists.labels[index])


def _make(protocol, table, validation, seed=3):
    return protocols.make(protocol, table, num_list_per_user=4, num_examples_per_list=5,
                          negatives_per_list=6, test_negatives=10, holdout_per_user=2,
                          test_fraction=0.2, validation=validation, seed=seed)


def _pairs(table):
    return set(zip(table.user.tolist(), table.movie.tolist()))


@pytest.mark.parametrize("protocol", ["tfrs_listwise", "keras_rs_listwise"])
def test_validation_lists_come_from_training_ratings_only(protocol):
    table = _random_table(4, users=30, movies=200, per_user=(60, 90))
    test_split, validation_split = _make(protocol, table, False), _make(protocol, table, True)
    def list_pairs(lists):
        return {(u, m) for u, row in zip(lists.users, lists.movies) for m in row}

    test_pairs = list_pairs(test_split.test_lists)
    validation_pairs = list_pairs(validation_split.test_lists)
    assert validation_pairs and not validation_pairs & test_pairs
    assert not validation_pairs & _pairs(validation_split.train_table)
    assert _pairs(validation_split.train_table) <= _pairs(test_split.train_table) | validation_pairs


def test_keras_rs_split_is_70_15_15_on_ratings_rescaled_to_0_1():
    table = _random_table(5, users=30, movies=200, per_user=(40, 60))
    split = _make("keras_rs_listwise", table, False)
    assert len(split.train_table) == round(0.7 * len(table))
    low, high = table.rating.min(), table.rating.max()
    expected = dict(zip(zip(table.user, table.movie), (table.rating - low) / (high - low)))
    for (user, movie), label in zip(zip(split.train_table.user, split.train_table.movie),
                                    split.train_table.rating):
        assert label == pytest.approx(expected[(user, movie)])
    assert split.test_lists.labels.min() >= 0 and split.test_lists.labels.max() <= 1
    assert split.liked == pytest.approx((4.0 - low) / (high - low))


def test_latest_split_holds_out_each_users_latest_ratings():
    table = _random_table(1)
    train, test = protocols.latest_split(table, holdout_per_user=3)
    assert len(train) + len(test) == len(table)
    for user, group in table.groupby("user"):
        held = test[test.user == user]
        if len(group) < 6:
            assert held.empty
            continue
        assert len(held) == 3
        assert held.timestamp.min() >= train[train.user == user].timestamp.max()


def test_lists_with_unrated_mix_rated_and_never_rated_movies():
    table = _random_table(2)
    pool = np.arange(1, 41)
    lists = protocols.lists_with_unrated(table, protocols.rated_movies_by_user(table), pool,
                                         num_list_per_user=4, positives_per_list=3,
                                         negatives_per_list=6, seed=0)
    assert lists.movies.shape == (12 * 4, 9)
    for user, movies, labels in zip(lists.users, lists.movies, lists.labels):
        user_ratings = dict(zip(table[table.user == user].movie, table[table.user == user].rating))
        for movie, label in zip(movies, labels):
            if label > 0:
                assert user_ratings[movie] == label
            else:
                assert label == 0 and movie not in user_ratings and movie in pool
        assert (labels > 0).sum() == 3 and len(set(movies)) == 9


# ---- metrics and the model -----------------------------------------------------------

def test_ndcg_follows_keras_rs_convention_on_rescaled_labels():
    """Gain 2^label - 1, discount 1/log2(rank + 1), all-zero lists score 0 (KerasRS's
    NDCG): against scikit-learn fed the exponential gains, and a brute-force formula."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (50, 5)) / 4.0
    labels[0] = 0.0  # a list of 1-star ratings only: no gain
    list_scores = rng.normal(size=(50, 5))
    ours = evaluate.per_list(data.Lists(np.zeros(50, np.int32), np.ones((50, 5), np.int32),
                                        labels), list_scores, ndcg_k=5, liked=0.75)
    gains = 2.0 ** labels - 1.0
    assert ours["ndcg"][0] == 0.0
    np.testing.assert_allclose(ours["ndcg@5"][1:], [ndcg_score([g], [s]) for g, s in
                                                    zip(gains[1:], list_scores[1:])])
    for gain, score, value in zip(gains[1:], list_scores[1:], ours["ndcg@5"][1:]):
        dcg = sum(gain[i] / np.log2(rank + 2) for rank, i in enumerate(np.argsort(-score)))
        ideal = max(sum(gain[list(p)[r]] / np.log2(r + 2) for r in range(5))
                    for p in itertools.permutations(range(5)))
        assert value == pytest.approx(dcg / ideal)


def test_scorer_is_the_documented_formula():
    """score(u, m) = MLP([user, movie]) + user . movie + movie bias + w . features(m),
    movie = movie id embedding + W features(m), against NumPy with random weights."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(7, 3)).astype(np.float32)
    scorer = model.build(4, 6, features, embedding_dim=5, hidden_units=(8, 4))
    for layer in scorer.layers:
        if layer.trainable_weights:
            layer.set_weights([rng.normal(size=w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    weights = {layer.name: layer.get_weights() for layer in scorer.layers}
    users = np.array([1, 4, 0], np.int32)
    movies = np.array([[1, 2, 6], [3, 3, 0], [5, 4, 2]], np.int32)
    user = weights["user_embedding"][0][users]  # [B, D]
    feature = features[movies]  # [B, L, F]
    movie = weights["movie_embedding"][0][movies] + feature @ weights["feature_embedding"][0]
    tower_movie, tower_bias = weights["tower_movie"]
    tower = np.maximum(movie @ tower_movie + tower_bias
                       + (user @ weights["tower_user"][0])[:, None, :], 0)
    hidden, hidden_bias = weights["tower_2"]
    tower = np.maximum(tower @ hidden + hidden_bias, 0)
    score_weight, score_bias = weights["tower_score"]
    expected = ((tower @ score_weight)[..., 0] + score_bias[0]
                + np.einsum("bd,bld->bl", user, movie)
                + weights["movie_bias"][0][movies][..., 0]
                + (feature @ weights["feature_bias"][0])[..., 0])
    got = scorer({"user": users, "movie": movies}).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_serving_maps_raw_ids_and_unknown_ids_to_padding():
    features = np.eye(4, dtype=np.float32)
    scorer = model.build(2, 3, features, embedding_dim=4, hidden_units=(8,))
    ranker, _ = model.serving(scorer, np.array([7, 9]), np.array([30, 10, 20]))
    raw = ranker({"user": np.array([9, 5]), "movie": np.array([[10, 20, 99], [30, 30, 0]])})
    coded = scorer({"user": np.array([2, 0]), "movie": np.array([[2, 3, 0], [1, 1, 0]])})
    np.testing.assert_allclose(raw.numpy(), coded.numpy(), rtol=1e-6)


def test_training_loss_is_ranknet_plus_weighted_rating_mse():
    """RankingModel's loss on one batch against NumPy: mean over lists of the pairwise
    logistic loss plus 0.5 x the squared error of score + user bias + mean label."""
    tf.keras.utils.set_random_seed(1)
    scorer = model.build(3, 6, np.zeros((7, 2), np.float32), 4, (8,))
    ranker = model.RankingModel(scorer, 3, "ranknet", rating_weight=0.5, mean_label=3.0,
                                global_batch_size=4)
    ranker.user_bias.set_weights([np.array([[0.0], [0.3], [-0.2], [0.1]], np.float32)])
    users = np.array([1, 2, 3, 1], np.int32)
    movies = np.array([[1, 2, 3], [4, 5, 6], [1, 3, 5], [2, 4, 0]], np.int32)
    labels = np.array([[5, 3, 1], [2, 2, 4], [3, 3, 3], [1, 4, -1]], np.float32)
    features = {"user": users, "movie": movies}
    loss = ranker.compute_loss((features, labels)).numpy()
    scores = scorer(features).numpy()
    bias = ranker.user_bias.get_weights()[0][users, 0]
    expected = []
    for s, y, b in zip(scores, labels, bias):
        valid = y >= 0
        pairs = [np.log1p(np.exp(-(s[i] - s[j]))) for i in range(3) for j in range(3)
                 if valid[i] and valid[j] and y[i] > y[j]]
        squared = ((s + b + 3.0 - y)[valid]) ** 2
        expected.append((np.mean(pairs) if pairs else 0.0) + 0.5 * squared.mean())
    assert loss == pytest.approx(np.mean(expected), rel=1e-5)
    assert model.LIST_LOSSES["ranknet"] is losses.ranknet_loss


def test_stream_epochs_are_seeded_permutations_and_resume_exactly():
    lists = data.Lists(np.arange(10, dtype=np.int32), np.arange(20, dtype=np.int32).reshape(10, 2),
                       np.zeros((10, 2), np.float32))
    stream = data.stream(lists, global_batch_size=4, seed=7)
    batches, steps = stream(0)
    assert steps == 2  # 10 lists, batches of 4: the remainder of 2 is dropped
    users = [b[0]["user"].numpy() for b in batches.take(3 * steps)]
    for epoch in range(3):
        seen = np.concatenate(users[epoch * steps:(epoch + 1) * steps])
        assert len(set(seen)) == 8  # no list twice in an epoch
        np.testing.assert_array_equal(
            [b[0]["movie"].numpy() for b in batches.skip(epoch * steps).take(1)][0][:, 0],
            2 * users[epoch * steps])  # the rows of one list stay together
    assert not np.array_equal(users[0], users[steps])  # reshuffled each epoch
    resumed, _ = stream(2)
    np.testing.assert_array_equal(next(iter(resumed))[0]["user"].numpy(), users[2 * steps])
