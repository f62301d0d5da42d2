"""Tests of the fraud-detection recipe: smoke runs (one device, 2-replica mirrored, ISLR
Default), a killed multi-network run resumed network by network, the cross-validation's
reset network against one built afresh, the saved model in a fresh process, every bad
input of issues 11 and 20, and the loaders, batches and metrics against independent
computations.

The recipe runs in this process (`run_command`: the command line's parse and run); the
real command line runs once, for its exit status and one-line error, and the saved model
loads in a fresh process.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import types
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import cli, results

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold

from recipes.fraud_detection import data, evaluate, model
from recipes.fraud_detection.config import Config
from tests.conftest import REPOSITORY, RecipeRun, run_command

RECIPE = "fraud_detection"
TRAIN_PY = REPOSITORY / "recipes" / RECIPE / "train.py"
CRASH = ["--smoke", "--simulate_crash_at_step=15",  # in epoch 2 of a network's 2 epochs
         "--backup_seconds=0"]


def _run(model_dir: Path, *args: str) -> RecipeRun:
    """`train.py *args --model_dir=model_dir`, in this process."""
    status, stdout, stderr = run_command(RECIPE, [*args, f"--model_dir={model_dir}"])
    return RecipeRun(types.SimpleNamespace(returncode=status, stdout=stdout, stderr=stderr),
                     model_dir)


def published_state() -> dict:
    folder = results.RESULTS_DIR / RECIPE
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} if (
        folder.exists()) else {}


def write_creditcard(path: Path, rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """A small file in the Kaggle creditcard.csv layout, rows not in time order."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"Time": rng.permutation(rows) * 3.0})
    for i in range(1, 29):
        frame[f"V{i}"] = rng.normal(size=rows)
    frame["Amount"] = rng.exponential(80.0, size=rows)
    frame["Class"] = (rng.random(rows) < 0.1).astype(int)
    frame.to_csv(path, index=False)
    return frame


def _bad(kind: str, folder: Path) -> list[str]:
    """The flags (and the file they name) of one bad input."""
    path = folder / "bad.csv"
    frame = write_creditcard(path)
    if kind == "directory":
        return [f"--dataset=csv:{folder}"]
    if kind == "single_class":
        frame["Class"] = 0
    elif kind == "not_binary":
        frame.loc[5, "Class"] = 2
    elif kind == "infinite_cell":
        frame["V3"] = frame["V3"].astype(object)
        frame.loc[7, "V3"] = "inf"
    elif kind == "empty_cell":
        frame["V4"] = frame["V4"].astype(object)
        frame.loc[9, "V4"] = ""
    elif kind == "unparsable_cell":  # a low-cardinality numeric column with a typo
        frame["V5"] = (frame["V5"] > 0).astype(int).astype(object)
        frame.loc[11, "V5"] = "abc"
    elif kind == "missing_label":
        frame = frame.rename(columns={"Class": "label"})
    elif kind == "test_file_missing_column":
        frame.drop(columns=["V2"]).to_csv(folder / "test.csv", index=False)
        frame.to_csv(path, index=False)
        return [f"--dataset=csv:{path}", f"--test_dataset=csv:{folder / 'test.csv'}"]
    frame.to_csv(path, index=False)
    return [f"--dataset=csv:{path}"]


# kind -> what the one-line error must say
BAD_INPUTS = {
    "directory": "is a directory",
    "single_class": "single class",
    "not_binary": "row 6: '2'",
    "infinite_cell": "column 'V3' has 1 missing or non-finite cell(s) (row 8",
    "empty_cell": "column 'V4' has 1 missing or non-finite cell(s) (row 10",
    "unparsable_cell": "column 'V5' is numeric but has 1 cell(s) that are not numbers "
                       "(row 12: 'abc')",
    "missing_label": "missing column(s) ['Class']",
    "test_file_missing_column": "missing column(s) ['V2']",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every smoke run of this file, one after another in this process: {name: RecipeRun}.

    "crash_*": one run directory, killed twice by --simulate_crash_at_step=15 (each fit
    counts its own steps: the first kill is in epoch 2 of the first network; the rerun
    finishes that network and is killed in the second), then rerun to the end.
    """
    root = tmp_path_factory.mktemp("fraud_runs")
    jobs = {"one_device": ["--smoke"],
            "mirrored": ["--smoke", "--strategy=mirrored", "--num_cpu_devices=2"],
            # --norefit: that path is covered too, and three fits fewer in this file
            "islr_default": ["--smoke", "--dataset=islr_default", "--norefit"],
            "crash_1": CRASH, "crash_2": CRASH, "crash_3": ["--smoke"]}
    return {name: _run(root / ("crash" if name.startswith("crash") else name), *args)
            for name, args in jobs.items()}


def _record(runs, name):
    run = runs[name]
    assert run.returncode == 0, run.stderr[-3000:]
    return run.record, run.model_dir


def test_documented_commands_parse_and_default_cfg_is_the_plain_command(monkeypatch):
    """The command atop train.py and each config's command parse as written (from the
    repository: flagfiles are relative to it); default.cfg changes nothing."""
    monkeypatch.chdir(REPOSITORY)
    commands = re.findall(r"^\s*(\.venv/bin/python recipes/\S+/train\.py.*)$",
                          TRAIN_PY.read_text(), re.M)
    assert commands == [f".venv/bin/python recipes/{RECIPE}/train.py"]
    for path in sorted((REPOSITORY / "recipes" / RECIPE / "configs").glob("*.cfg")):
        commands += re.findall(r"^# (\.venv/bin/python recipes/\S+/train\.py.*)$",
                               path.read_text(), re.M)
    assert len(commands) == 4
    configs = {command: cli.parse(Config, command.split()[2:]) for command in commands}
    plain = configs[commands[0]]
    default = next(config for config in configs.values() if config.preset == "default"
                   and config is not plain)
    assert default.configuration == plain.configuration
    islr = next(config for config in configs.values() if config.preset == "islr_default")
    assert (islr.dataset, islr.learning_rate, islr.weight_decays, islr.epochs) == (
        "islr_default", 3e-2, (0.0,), 30)


@pytest.mark.parametrize("name", ["one_device", "mirrored"])
def test_smoke_run_reaches_a_real_bar(runs, name):
    record, model_dir = _record(runs, name)
    metrics, baselines = record["metrics"], record["baselines"]
    assert record["strategy"]["replicas"] == (2 if name == "mirrored" else 1)
    assert record["refit"].startswith("every model refit")  # --refit is the default
    assert record["flags"]["epochs"] == 2 and record["flags"]["num_seeds"] == 1  # SMOKE
    assert set(baselines) == {"network_weighted_bce", "network_bce_soft_precision",
                              "logistic_regression", "hist_gradient_boosting"}
    # Caravan is hard (ISLR's logistic: PR-AUC ~0.17 on 6 % buyers); the smoke test split
    # keeps all 59 buyers among 500 rows (12 %): chance is PR-AUC 0.12, ROC-AUC 0.5.
    for values in (metrics, baselines["logistic_regression"]):
        assert values["pr_auc"] > 0.15 and values["roc_auc"] > 0.6, values
    assert metrics["pr_auc_ci_low"] < metrics["pr_auc"] < metrics["pr_auc_ci_high"]
    assert metrics["precision_at_k"] == pytest.approx(metrics["hits_at_k"] / 33)
    assert "precision_minus_network_weighted_bce_ci_low" in metrics
    assert "pr_auc_minus_logistic_regression" in baselines["network_weighted_bce"]
    assert record["models"]["model"] == {"keras": "model.keras", "saved_model": "saved_model"}
    assert (model_dir / "pr_curve.png").stat().st_size > 10_000


def test_mirrored_losses_are_the_one_device_losses(runs):
    """Every loss, soft precision and the dual ascent included, is taken over the global
    batch under 2 replicas: the logged losses and λ match one device."""
    one, _ = _record(runs, "one_device")
    two, _ = _record(runs, "mirrored")
    keys = ("loss", "multiplier")
    assert len(one["history"]) == len(two["history"]) == 12  # 3 networks, each refit
    for first, second in zip(one["history"], two["history"]):
        assert first["model"] == second["model"]
        for key in keys:
            if key in first:
                np.testing.assert_allclose(second[key], first[key], rtol=1e-4, err_msg=key)
    assert abs(one["metrics"]["pr_auc"] - two["metrics"]["pr_auc"]) < 2e-3


def test_killed_run_resumes_network_by_network_to_the_same_record(runs):
    first, second, third = runs["crash_1"], runs["crash_2"], runs["crash_3"]
    assert first.returncode != 0 and "simulated crash" in first.stderr
    assert second.returncode != 0 and "simulated crash" in second.stderr
    assert "resuming network_weighted_bce_seed42 after epoch 1" in second.stdout
    record, _ = _record(runs, "crash_3")
    assert "network_weighted_bce_seed42 already trained: loaded" in third.stdout
    assert "resuming network_bce_soft_precision_seed42 after epoch 1" in third.stdout
    reference, _ = _record(runs, "one_device")
    keys = [(line["model"], line["epoch"]) for line in record["history"]]
    assert len(keys) == len(set(keys)) == 12  # 3 networks + their refits x 2 epochs
    assert {model for model, _ in keys} == {
        f"network_{loss}_seed42{refit}" for loss in ("weighted_bce", "bce_soft_precision",
                                                     "precision_at_recall")
        for refit in ("", "_refit")}
    np.testing.assert_allclose([line["loss"] for line in record["history"]],
                               [line["loss"] for line in reference["history"]], rtol=1e-6)
    assert record["metrics"] == reference["metrics"]
    assert record["baselines"] == reference["baselines"]


@pytest.mark.parametrize("name", ["one_device", "islr_default"])
def test_saved_models_reproduce_the_test_predictions_in_a_fresh_process(runs, name):
    record, model_dir = _record(runs, name)
    script = f"""
import json, numpy as np
import common
import tensorflow as tf
from recipes.fraud_detection import data
record = json.loads(open({str(model_dir / 'results.json')!r}).read())
flags = record["flags"]
splits = data.smoke_subset(data.load(flags["dataset"], None, [], flags["seed"]), flags["seed"])
features = splits.test.features
expected = np.load({str(model_dir / 'test_scores.npy')!r})
network = tf.keras.models.load_model({str(model_dir / 'model.keras')!r})
keras_scores = tf.sigmoid(network.predict(features, verbose=0)).numpy()[:, 0]
serve = tf.saved_model.load({str(model_dir / 'saved_model')!r}).signatures["serving_default"]
inputs = {{key: tf.constant(value) for key, value in features.items()}}
served = serve(**inputs)["score"].numpy()
np.testing.assert_allclose(keras_scores, expected, rtol=1e-5)
np.testing.assert_allclose(served, expected, rtol=1e-5)
print("ok", sorted(inputs), len(expected))
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=300, cwd=REPOSITORY)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ok" in completed.stdout
    if name == "islr_default":  # the raw text column goes in as text
        assert "'student'" in completed.stdout
        # --norefit: the three networks fitted on the training split score the test rows
        assert record["refit"].startswith("none")
        assert len(record["history"]) == 6
        assert not any(line["model"].endswith("_refit") for line in record["history"])


def test_caravan_follows_islr_and_validation_comes_from_training_rows():
    splits = data.load("caravan", None, [], seed=0)
    assert len(splits.test) == 1000 and splits.test.labels.sum() == 59  # ISLR §4.6.6
    assert len(splits.train) + len(splits.validation) == 4822
    assert splits.train.labels.sum() + splits.validation.labels.sum() == 348 - 59
    assert splits.categorical_columns == [] and len(splits.numeric_columns) == 85
    rows = data.training_rows(splits)  # what --refit fits: every training row, once
    assert len(rows) == 4822 and rows.labels.sum() == 348 - 59
    numeric = np.concatenate([splits.train.features["numeric"],
                              splits.validation.features["numeric"]])
    assert len(np.unique(numeric, axis=0)) == len(np.unique(rows.features["numeric"], axis=0))
    default = data.load("islr_default", None, [], seed=0)
    assert default.categorical_columns == ["student"]
    assert set(default.train.features["student"]) == {"Yes", "No"}


def test_creditcard_layout_splits_by_time_and_test_dataset_trains_on_every_row(tmp_path):
    frame = write_creditcard(tmp_path / "creditcard.csv")
    splits = data.load(f"csv:{tmp_path / 'creditcard.csv'}", None, [], seed=3)
    assert splits.label_column == "Class" and "time order" in splits.split
    last = frame.sort_values("Time").iloc[320:]
    assert len(splits.test) == 80 and splits.test.labels.sum() == last["Class"].sum()
    time = splits.numeric_columns.index("Time")
    assert splits.test.features["numeric"][:, time].min() > max(
        splits.train.features["numeric"][:, time].max(),
        splits.validation.features["numeric"][:, time].max())
    write_creditcard(tmp_path / "other.csv", rows=120, seed=9)
    both = data.load(f"csv:{tmp_path / 'creditcard.csv'}", None, [], seed=3,
                     test_dataset=f"csv:{tmp_path / 'other.csv'}")
    assert len(both.train) + len(both.validation) == 400 and len(both.test) == 120


@pytest.mark.parametrize("positive,negative", [("1", "0"), ("true", "false"),
                                               ("Yes", "No")])
def test_labels_and_categorical_columns_by_flag(tmp_path, positive, negative):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"amount": rng.normal(size=300),
                          "channel": rng.choice(["web", "shop", "phone"], size=300),
                          "fraud": np.where(np.arange(300) % 10 == 0, positive, negative)})
    frame.to_csv(tmp_path / "tx.csv", index=False)
    with pytest.raises(ValueError, match="column 'channel' is numeric .*row 1: 'phone'"):
        data.load(f"csv:{tmp_path / 'tx.csv'}", "fraud", [], seed=0)  # not declared
    splits = data.load(f"csv:{tmp_path / 'tx.csv'}", "fraud", ["channel"], seed=0)
    assert splits.numeric_columns == ["amount"] and splits.categorical_columns == ["channel"]
    # Stratified 80 / 20, then 20 % of the training rows validate: 30 positives 19/5/6.
    assert (splits.train.labels.sum(), splits.validation.labels.sum(),
            splits.test.labels.sum()) == (19, 5, 6)
    x_train, _, _ = data.encoded(splits)
    assert x_train.shape[1] == 4 and (x_train[:, 1:].sum(axis=1) == 1).all()  # one-hot


def test_stream_spreads_positives_and_resumes():
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.05).astype(np.int32)
    part = data.Part({"numeric": np.arange(1000, dtype=np.float32).reshape(-1, 1)}, y)
    stream, steps = data.stream(part, 96, seed=7)(0)
    assert steps == 10
    batches = list(stream.take(2 * steps).as_numpy_iterator())
    share = y.sum() / steps
    for epoch in range(2):
        rows = np.concatenate([b[0]["numeric"][:, 0] for b in
                               batches[epoch * steps:(epoch + 1) * steps]]).astype(int)
        assert len(set(rows)) == len(rows) == 960  # no row twice in an epoch
        assert set(np.flatnonzero(y)) <= set(rows)  # every positive, once
        for features, labels in batches[epoch * steps:(epoch + 1) * steps]:
            np.testing.assert_array_equal(labels[:, 0], y[features["numeric"][:, 0].astype(int)])
            assert math.floor(share) <= labels.sum() <= math.ceil(share)
    resumed, _ = data.stream(part, 96, seed=7)(1)
    for ours, theirs in zip(resumed.take(steps).as_numpy_iterator(), batches[steps:]):
        np.testing.assert_array_equal(ours[0]["numeric"], theirs[0]["numeric"])


def test_threshold_hits_and_pr_auc_against_brute_force():
    rng = np.random.default_rng(5)
    for _ in range(20):
        y = (rng.random(200) < 0.1).astype(int)
        y[:2] = 1
        scores = np.round(rng.random(200), 2)  # ties
        target = rng.uniform(0.05, 1.0)
        chosen = evaluate.choose_threshold(y, scores, target)
        recall = {t: ((scores >= t) & (y == 1)).sum() / y.sum() for t in np.unique(scores)}
        assert chosen == max(t for t, r in recall.items() if r >= target)
        k = int(rng.integers(1, 50))
        top = sorted(range(200), key=lambda row: (-scores[row], row))[:k]
        assert evaluate.hits_at_k(y, scores, k) == y[top].sum()
        assert evaluate.average_precision(y, scores)[0] == pytest.approx(
            average_precision_score(y, scores), rel=1e-12)


def test_baselines_choose_by_cross_validation_then_refit_on_every_training_row():
    """C is scikit-learn's GridSearchCV choice on the same repeated stratified folds and
    PR-AUC (its scores too); the validation scores come from that C fitted on the training
    split, the test scores from that C refit on the rows given."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + rng.normal(size=600) > 1.5).astype(int)
    train, validation, test = slice(0, 300), slice(300, 450), slice(450, 600)
    refit = (x[:450], y[:450])
    folds = evaluate.cv_folds(refit[1], repeats=2, seed=7)
    scored, chosen = evaluate.logistic_regression((*refit, folds), x[train], y[train],
                                                  x[validation], x[test], refit)
    search = GridSearchCV(LogisticRegression(max_iter=5000), {"C": evaluate.LOGISTIC_C},
                          scoring="average_precision", cv=RepeatedStratifiedKFold(
                              n_splits=5, n_repeats=2, random_state=7)).fit(*refit)
    assert chosen["chosen"] == search.best_params_["C"] and chosen["folds"] == 10
    np.testing.assert_allclose([row["cv_pr_auc"] for row in chosen["scores"]],
                               search.cv_results_["mean_test_score"], rtol=1e-9)
    np.testing.assert_allclose([row["cv_pr_auc_sd"] for row in chosen["scores"]],
                               search.cv_results_["std_test_score"], rtol=1e-9)
    c = chosen["chosen"]
    first = LogisticRegression(C=c, max_iter=5000).fit(x[train], y[train])
    final = LogisticRegression(C=c, max_iter=5000).fit(*refit)
    np.testing.assert_allclose(scored.validation[:, 0], first.predict_proba(x[validation])[:, 1])
    np.testing.assert_allclose(scored.test[:, 0], final.predict_proba(x[test])[:, 1])
    assert not np.allclose(scored.test[:, 0], first.predict_proba(x[test])[:, 1])


def test_network_cross_validation_equals_a_network_built_afresh(runs):
    """The cross-validation reuses one network per loss, reset between fits: its last
    fold's PR-AUC (after every reset) is that of a network built and trained afresh."""
    record, model_dir = _record(runs, "one_device")
    selection = record["selection"]
    assert set(selection) == {"rule", "network_weighted_bce", "network_bce_soft_precision",
                              "network_precision_at_recall", "logistic_regression",
                              "hist_gradient_boosting"}
    for name, chosen in selection.items():
        if name != "rule":  # same folds: 5 x --cv_repeats=1 (smoke)
            assert chosen["folds"] == 5 and chosen["chosen"] in chosen["grid"], name
            best = max(row["cv_pr_auc"] for row in chosen["scores"])
            assert chosen["cv_pr_auc"] == best, name
    described = {row[0].split(" ")[0]: row[1] for row in record["tables"]["models"]["rows"]}
    assert f"weight decay {selection['network_weighted_bce']['chosen']:g})" in (
        described["network_weighted_bce"])
    # Afresh: the last fold of precision at recall at weight decay 1 (the smoke grid's
    # last value), built from the seed with a plain L2 penalty and trained once.
    flags = record["flags"]
    splits = data.smoke_subset(data.load(flags["dataset"], None, [], flags["seed"]),
                               flags["seed"])
    rows = data.training_rows(splits)
    fit, held = evaluate.cv_folds(rows.labels, 1, flags["seed"])[-1]
    tf.keras.utils.set_random_seed(flags["seed"])
    network = model.build(rows.features, "linear", (), 1.0, 0.0)
    loss = model.make_loss("precision_at_recall", record["pos_weight"],
                           target_recall=flags["target_recall"],
                           dual_learning_rate=flags["dual_learning_rate"])
    trained = model.trainable(network, loss, flags["learning_rate"])
    stream, steps = data.stream(rows.subset(fit), flags["global_batch_size"], flags["seed"])(0)
    trained.fit(stream, steps_per_epoch=steps, epochs=flags["epochs"], verbose=0)
    fresh = evaluate.average_precision(
        rows.labels[held], model.predict(network, rows.subset(held).features))[0]
    cached = json.loads((model_dir / "cv_networks.json").read_text())
    assert cached["precision_at_recall/1/4"] == pytest.approx(fresh, abs=1e-6)


def test_bad_inputs_are_refused_in_one_line_before_anything_is_written(tmp_path, bad_inputs):
    """Each bad input of issues 11 and 20, in this process (`bad_inputs`): refused at the
    parse (1) or by the recipe (2: the files of issue 11, with --publish) in one line
    naming the flag, file or column, with no --model_dir made and nothing published."""
    good = tmp_path / "good.csv"
    frame = write_creditcard(good)  # 400 rows: the last 80 in time test
    for name, column, row, value in (("huge.csv", "V3", 7, "1e308"),
                                     # float64 holds these; the network's float32 cannot
                                     ("minus_1e30.csv", "V7", 4, "-1e30"),
                                     ("spread.csv", "Amount", 2, "1e19")):
        bad = frame.astype({column: object})
        bad.loc[row, column] = value
        bad.to_csv(tmp_path / name, index=False)
    duplicated = tmp_path / "duplicated.csv"
    duplicated.write_text("a,a,c,Class\n" + "".join(
        f"{row},{row % 7},{row % 3},{int(row % 5 == 0)}\n" for row in range(200)))
    dataset = f"--dataset=csv:{good}"
    cases = {  # name -> (argv, what the message must name)
        "label_as_categorical": ([dataset, "--categorical_columns=V2,Class"],
                                 "--categorical_columns: 'Class' is the label column"),
        "caravan_label_as_categorical": (["--categorical_columns=Purchase"],
                                         "--categorical_columns: 'Purchase'"),
        "hidden_units_zero": (["--model=mlp", "--hidden_units=0"], "--hidden_units"),
        "hidden_units_empty": (["--model=mlp", "--hidden_units="], "--hidden_units"),
        "hidden_units_gap": (["--model=mlp", "--hidden_units=64,,16"], "--hidden_units"),
        "hidden_units_negative": (["--model=mlp", "--hidden_units=-3"], "--hidden_units"),
        "duplicated_header": ([f"--dataset=csv:{duplicated}"],
                              f"{duplicated}: column 'a' appears 2 times in the header"),
        "duplicated_header_of_test_file": ([dataset, f"--test_dataset=csv:{duplicated}"],
                                           f"--test_dataset=csv:{duplicated}: column 'a'"),
        "top_k_above_test_rows": ([dataset, "--top_k=81"],
                                  "--top_k=81 is larger than the test set (80 rows)"),
        "cell_1e308": ([f"--dataset=csv:{tmp_path / 'huge.csv'}"],
                       "huge.csv: column 'V3' has 1 cell(s) beyond ±1e+18 (row 8: '1e308')"),
        "cell_minus_1e30_in_test_file": (
            [dataset, f"--test_dataset=csv:{tmp_path / 'minus_1e30.csv'}"],
            "minus_1e30.csv: column 'V7' has 1 cell(s) beyond ±1e+18 (row 5: '-1e30')"),
        "cell_1e19": ([f"--dataset=csv:{tmp_path / 'spread.csv'}"],
                      "spread.csv: column 'Amount' has 1 cell(s) beyond ±1e+18 (row 3: "
                      "'1e19')"),
        "dual_learning_rate_1e30": (["--dual_learning_rate=1e30"], "--dual_learning_rate"),
        "weight_decays_inf": (["--weight_decays=inf"], "--weight_decays"),
        "weight_decays_nan": (["--weight_decays=0.1,nan"], "--weight_decays"),
        "weight_decays_empty": (["--weight_decays="], "--weight_decays"),
        "weight_decays_not_a_number": (["--weight_decays=0.1,x"], "--weight_decays"),
        "cv_repeats_zero": (["--cv_repeats=0"], "--cv_repeats"),
        "precision_weight_1e30": (["--precision_weight=1e30"], "--precision_weight"),
        "pos_weight_inf": (["--pos_weight=inf"], "--pos_weight"),
        "focal_gamma_1e30": (["--focal_gamma=1e30"], "--focal_gamma"),
        "focal_alpha_nan": (["--focal_alpha=nan"], "--focal_alpha"),
        "target_recall_nan": (["--target_recall=nan"], "--target_recall"),
        "target_precision_above_1": (["--target_precision=1.5"], "--target_precision"),
    }
    for kind, expected in BAD_INPUTS.items():
        folder = tmp_path / f"input_{kind}"
        folder.mkdir()
        cases[kind] = ([*_bad(kind, folder), "--publish"], expected)
    published = published_state()
    outcomes = bad_inputs(RECIPE, {name: ["--smoke", *argv]
                                   for name, (argv, _) in cases.items()})
    for name, (_, expected) in cases.items():
        outcome = outcomes[name]
        assert outcome["status"] in ((2,) if name in BAD_INPUTS else (1, 2)), (
            name, outcome["status"], outcome["stderr"][-2000:])
        lines = outcome["stderr"].strip().splitlines()
        assert lines and expected in lines[-1], (name, lines[-3:])
        assert "Traceback" not in outcome["stderr"], (name, outcome["stderr"][-2000:])
        assert not (tmp_path / "runs" / name).exists(), (name, outcome["written"])
    assert published_state() == published


def test_the_command_line_refuses_a_bad_file_with_status_2_and_one_line(tmp_path):
    """The real process: exit status 2, one "error:" line, no traceback, no run directory,
    nothing published (the in-process cases above stand for the rest)."""
    args = _bad("directory", tmp_path)
    published = published_state()
    completed = subprocess.run(
        [sys.executable, str(TRAIN_PY), *args, "--smoke", "--publish",
         f"--model_dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
        timeout=600)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and BAD_INPUTS["directory"] in lines[-1], lines[-3:]
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()
    assert published_state() == published
