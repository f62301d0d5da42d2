"""Tests of the fraud-detection recipe: smoke runs (one device and 2-replica mirrored),
the loaders on small files written here, the stratified batches, the operating point,
and every bad input of the issue.

train.py defines absl flags at import, so it only ever runs as a subprocess; data.py,
model.py and report.py are imported in-process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from recipes.fraud_detection import data, model

RECIPE = "fraud_detection"
REPOSITORY = Path(__file__).resolve().parents[2]
TRAIN_PY = REPOSITORY / "recipes" / RECIPE / "train.py"
PUBLISHED = REPOSITORY / "results" / RECIPE


def default_command() -> list[str]:
    """The command on the first line after the title of train.py's docstring."""
    lines = TRAIN_PY.read_text().split('"""')[1].strip().splitlines()
    command = next(line.strip() for line in lines[1:] if line.strip())
    assert command == f"python recipes/{RECIPE}/train.py", command
    return command.split()[2:]


SMOKE_RUNS = {"one_device": [], "mirrored": ["--strategy=mirrored", "--num_cpu_devices=2"]}
BAD_INPUTS = {
    "missing_label": "--label_column=Class: no such column",
    "not_binary": "label column 'Class' is not binary",
    "no_training_positives": "no positives in the training split",
    "nan_feature": "NaN features in column(s) ['V3']",
    "does_not_parse": "does not parse as CSV",
    "recall_zero": "--target_recall must be in (0, 1]",
    "recall_above_one": "--target_recall must be in (0, 1]",
}


class Finished:
    """What one `python recipes/fraud_detection/train.py ...` process did."""

    def __init__(self, returncode: int, model_dir: Path):
        self.returncode = returncode
        self.stdout = (model_dir / "stdout.txt").read_text()
        self.stderr = (model_dir / "stderr.txt").read_text()
        results = model_dir / "results.json"
        self.record = json.loads(results.read_text()) if results.exists() else None
        self.model_dir = model_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every recipe process of this file, started at once, and results/ before and after.

    The processes are independent and spend most of their time importing TensorFlow
    (single-threaded): run side by side they take a fraction of the wall time. Each is
    the real command line in a fresh process, as conftest's `run_recipe` runs it.
    """
    jobs = {f"smoke_{name}": [*default_command(), "--smoke", *extra]
            for name, extra in SMOKE_RUNS.items()}
    for kind in BAD_INPUTS:
        folder = tmp_path_factory.mktemp(kind)
        jobs[kind] = [*_write_bad(kind, folder / "bad.csv"), "--smoke", "--publish"]
    before = _published_state()
    processes = {}
    for name, args in jobs.items():
        model_dir = tmp_path_factory.mktemp(f"run_{name}")
        with open(model_dir / "stdout.txt", "w") as out, open(model_dir / "stderr.txt",
                                                               "w") as err:
            processes[name] = (subprocess.Popen(
                [sys.executable, str(TRAIN_PY), *args, f"--model_dir={model_dir}"],
                cwd=model_dir, stdout=out, stderr=err, env=dict(os.environ)), model_dir)
    finished = {name: Finished(process.wait(timeout=600), model_dir)
                for name, (process, model_dir) in processes.items()}
    return finished, before, _published_state()


@pytest.fixture(scope="module")
def smoke_records(runs):
    finished = runs[0]
    records = {}
    for name in SMOKE_RUNS:
        result = finished[f"smoke_{name}"]
        assert result.returncode == 0, result.stderr[-3000:]
        records[name] = (result.record, result.model_dir)
    return records


@pytest.mark.parametrize("name", ["one_device", "mirrored"])
def test_smoke_run_reaches_a_real_bar(smoke_records, name):
    record, model_dir = smoke_records[name]
    metrics, dataset = record["metrics"], record["dataset"]
    assert record["strategy"]["replicas"] == (2 if name == "mirrored" else 1)
    # Balance alone separates ISLR Default well (the book's logistic fit: AUC 0.95).
    assert metrics["roc_auc"] > 0.85 and metrics["pr_auc"] > 0.4, metrics
    assert metrics["tp"] + metrics["fn"] == dataset["test_positives"]
    assert sum(metrics[k] for k in ("tp", "fp", "fn", "tn")) == dataset["test_rows"]
    assert metrics["val_recall"] >= 0.8  # the threshold was chosen for it on validation
    assert set(record["baselines"]) == {"logistic_regression", "network_bce",
                                        "network_weighted_bce"}
    assert record["baselines"]["logistic_regression"]["roc_auc"] > 0.9
    assert (model_dir / "pr_curve.png").stat().st_size > 10_000
    assert (model_dir / "confusion_matrix.png").stat().st_size > 5_000
    # The reproduction of ISLR's own fits on the data: the book's figures, to rounding.
    for _, _, metric, book, ours in record["tables"]["islr_check"]["rows"]:
        assert abs(book - ours) < (0.005 if metric != "error rate" else 0.0005), metric


def test_mirrored_loss_is_the_one_device_loss(smoke_records):
    """The soft-precision term is over the global batch under 2 replicas (gathered): the
    training loss and the result match one device. A per-replica precision term would not."""
    one, _ = smoke_records["one_device"]
    two, _ = smoke_records["mirrored"]
    for model_name in ("network_bce", "network_weighted_bce", "network_bce_soft_precision"):
        losses_one = [e["loss"] for e in one["history"] if e.get("model") == model_name]
        losses_two = [e["loss"] for e in two["history"] if e.get("model") == model_name]
        assert losses_one and len(losses_one) == len(losses_two)
        np.testing.assert_allclose(losses_two, losses_one, rtol=1e-4, err_msg=model_name)
    assert abs(one["metrics"]["pr_auc"] - two["metrics"]["pr_auc"]) < 2e-3
    assert abs(one["metrics"]["precision"] - two["metrics"]["precision"]) < 0.02


def write_creditcard(path: Path, rows: int = 500, seed: int = 0, fraud_times=None) -> pd.DataFrame:
    """A small file in the Kaggle creditcard.csv layout, rows not in time order."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"Time": rng.permutation(rows) * 3.0})
    for i in range(1, 29):
        frame[f"V{i}"] = rng.normal(size=rows)
    frame["Amount"] = rng.exponential(80.0, size=rows)
    frame["Class"] = (rng.random(rows) < 0.1).astype(int) if fraud_times is None else (
        fraud_times(frame["Time"].to_numpy())).astype(int)
    frame.to_csv(path, index=False)
    return frame


def test_creditcard_layout_needs_no_flag_and_splits_by_time(tmp_path):
    frame = write_creditcard(tmp_path / "creditcard.csv")
    splits = data.load(f"csv:{tmp_path / 'creditcard.csv'}", None, seed=3)
    assert splits.label_column == "Class" and splits.feature_names[0] == "Time"
    assert len(splits.feature_names) == 30 and "time order" in splits.split
    # Independent: the last 20 % of rows by Time are the test split.
    last = frame.sort_values("Time").iloc[400:]
    assert len(splits.y_test) == 100 and splits.y_test.sum() == last["Class"].sum()
    assert splits.x_test[:, 0].min() > max(splits.x_train[:, 0].max(), splits.x_val[:, 0].max())
    # Standardised with statistics of the training rows only: recover the affine map
    # from the test rows' raw Amount, and find which raw rows x_train came from.
    raw_test = last.sort_index().Amount.to_numpy()
    slope, intercept = np.polyfit(raw_test, splits.x_test[:, -1], 1)
    mean, std = -intercept / slope, 1 / slope
    train_amount = splits.x_train[:, -1] * std + mean
    first = frame.sort_values("Time").iloc[:400].Amount.to_numpy()
    matched = [np.argmin(abs(first - value)) for value in train_amount]
    assert len(set(matched)) == len(splits.y_train) == 300
    np.testing.assert_allclose(first[matched], train_amount, rtol=1e-4)
    assert mean == pytest.approx(first[matched].mean(), rel=1e-4)
    assert mean != pytest.approx(first.mean(), rel=1e-3)  # not train + validation
    assert std == pytest.approx(first[matched].std(), rel=1e-4)
    assert splits.y_train.sum() + splits.y_val.sum() + splits.y_test.sum() == frame.Class.sum()


def test_any_csv_with_text_columns_and_yes_no_labels(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"amount": rng.normal(size=300),
                          "channel": rng.choice(["web", "shop", "phone"], size=300),
                          "fraud": np.where(np.arange(300) % 10 == 0, "Yes", "No")})
    frame.to_csv(tmp_path / "tx.csv", index=False)
    splits = data.load(f"csv:{tmp_path / 'tx.csv'}", "fraud", seed=0)
    assert splits.feature_names == ["amount", "channel=phone", "channel=shop", "channel=web"]
    assert splits.split.startswith("stratified")
    # Stratified 60 / 20 / 20: 30 positives split 18 / 6 / 6.
    assert (splits.y_train.sum(), splits.y_val.sum(), splits.y_test.sum()) == (18, 6, 6)
    assert (splits.x_train[:, 1:].sum(axis=1) == 1).all()  # one-hot


def test_synthetic_has_its_positive_rate():
    frame = data.synthetic(rows=5000, seed=2)
    assert abs(frame["label"].mean() - data.SYNTHETIC_POSITIVE_RATE) < 0.005


def test_stratified_batches_spread_positives_and_resume():
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.05).astype(np.int32)
    x = np.arange(1000, dtype=np.float32).reshape(-1, 1)  # x identifies the row
    stream, steps = data.stratified_batches(x, y, 96, seed=7)
    assert steps == 10
    batches = list(stream.take(2 * steps).as_numpy_iterator())
    share = y.sum() / steps
    for epoch in range(2):
        rows = np.concatenate([b[0][:, 0] for b in batches[epoch * steps:(epoch + 1) * steps]])
        assert len(set(rows)) == len(rows) == 960  # no row twice in an epoch
        assert set(np.flatnonzero(y)) <= set(rows.astype(int))  # every positive, once
        for features, labels in batches[epoch * steps:(epoch + 1) * steps]:
            np.testing.assert_array_equal(labels[:, 0], y[features[:, 0].astype(int)])
            assert math.floor(share) <= labels.sum() <= math.ceil(share)
    assert not np.array_equal(batches[0][0], batches[steps][0])  # reshuffled per epoch
    resumed, _ = data.stratified_batches(x, y, 96, seed=7, first_epoch=1)
    for ours, theirs in zip(resumed.take(steps).as_numpy_iterator(), batches[steps:]):
        np.testing.assert_array_equal(ours[0], theirs[0])


def test_threshold_and_operating_point_against_brute_force():
    rng = np.random.default_rng(5)
    for _ in range(20):
        y = (rng.random(200) < 0.1).astype(int)
        y[:2] = 1
        scores = np.round(rng.random(200), 2)  # ties
        target = rng.uniform(0.05, 1.0)
        chosen = model.choose_threshold(y, scores, target)
        recall = {t: ((scores >= t) & (y == 1)).sum() / y.sum() for t in np.unique(scores)}
        assert chosen == max(t for t, r in recall.items() if r >= target)
        point = model.operating_point(y, scores, chosen)
        flagged = scores >= chosen
        assert point["tp"] == int((flagged & (y == 1)).sum())
        assert point["fp"] == int((flagged & (y == 0)).sum())
        assert point["fn"] == int((~flagged & (y == 1)).sum())
        assert point["tn"] == int((~flagged & (y == 0)).sum())
        assert point["precision"] == pytest.approx(point["tp"] / flagged.sum())
        assert point["pr_auc"] == pytest.approx(average_precision_score(y, scores))
        assert point["roc_auc"] == pytest.approx(roc_auc_score(y, scores))


def _published_state() -> dict:
    if not PUBLISHED.exists():
        return {}
    return {path.name: path.stat().st_mtime_ns for path in PUBLISHED.iterdir()}


def _write_bad(kind: str, path: Path) -> list[str]:
    """A bad input of the issue: the file it needs and the flags that feed it."""
    if kind == "recall_zero":
        return ["--target_recall=0"]
    if kind == "recall_above_one":
        return ["--target_recall=1.5"]
    if kind == "does_not_parse":
        path.write_text('Time,V1,Class\n1,2,0\n2,"3,1\n4,5,6,7,8\n')
        return [f"--dataset=csv:{path}"]
    frame = write_creditcard(path, rows=200, seed=4)
    if kind == "missing_label":
        frame = frame.rename(columns={"Class": "label"})
    elif kind == "not_binary":
        frame.loc[:5, "Class"] = 2
    elif kind == "nan_feature":
        frame.loc[7, "V3"] = np.nan
    elif kind == "no_training_positives":  # frauds only in the last 10 % of time
        frame["Class"] = (frame["Time"] >= frame["Time"].quantile(0.9)).astype(int)
    frame.to_csv(path, index=False)
    return [f"--dataset=csv:{path}"]


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_fails_clearly_and_publishes_nothing(runs, kind):
    finished, published_before, published_after = runs
    result = finished[kind]
    assert result.returncode != 0
    assert BAD_INPUTS[kind] in result.stderr, result.stderr[-2000:]
    assert result.record is None
    assert published_after == published_before  # every bad run had --publish
