"""The evaluation protocols: how ratings are split and turned into training and test lists.

- `latest` (default): each user's latest ratings held out; a test list is those movies
  among movies the user never rated (label 0).
- `tfrs_listwise`: the TFRS listwise tutorial: ratings split 80/20 at random, lists of 5
  rated movies (50 per user for training, 1 per user for test).
- `keras_rs_listwise`: the KerasRS listwise example: ratings rescaled to [0, 1]
  ((r - 1) / 4 on a 1-5 scale), shuffled once and split 70 / 15 / 15 % into training,
  validation and test, lists of 5 as above.

With `validation=True` the test lists come from ratings carved out of the training
ratings (KerasRS: its own validation part), so hyper-parameters are chosen without
the test split.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from recipes.ranking.data import Lists

PROTOCOLS = ("latest", "tfrs_listwise", "keras_rs_listwise")


@dataclasses.dataclass
class Split:
    train_table: pd.DataFrame  # the ratings the model and the baselines learn from
    train_lists: Lists
    test_lists: Lists
    liked: float = 4.0  # the label of a 4-star rating: MRR counts the first movie this good


def make(protocol: str, table: pd.DataFrame, *, num_list_per_user: int,
         num_examples_per_list: int, negatives_per_list: int, test_negatives: int,
         holdout_per_user: int, test_fraction: float, validation: bool, seed: int) -> Split:
    """Training and test lists of `protocol` from the ratings `table`."""
    if protocol == "latest":
        train, test = latest_split(table, holdout_per_user)
        if validation:
            train, test = latest_split(train, holdout_per_user)
        if test.empty:
            raise ValueError(f"no user has 2 x --holdout_per_user={holdout_per_user} ratings")
        pool = np.unique(train.movie.to_numpy())
        train_lists = lists_with_unrated(train, rated_movies_by_user(train), pool,
                                         num_list_per_user, num_examples_per_list,
                                         negatives_per_list, seed)
        # Test negatives are movies the user never rated anywhere in the data.
        test_lists = lists_with_unrated(test, rated_movies_by_user(table), pool, 1, None,
                                        test_negatives, seed + 1)
        return Split(train, train_lists, test_lists)
    low, high = table.rating.min(), table.rating.max()
    if protocol == "tfrs_listwise":
        train, test = random_split(table, (1 - test_fraction, test_fraction), seed)
        if validation:
            train, test = random_split(train, (1 - test_fraction, test_fraction), seed + 1)
    elif protocol == "keras_rs_listwise":
        # KerasRS's (r - 1) / 4 on a 1-5 scale: the lowest rating gains 0 in NDCG.
        table = table.assign(rating=((table.rating - low) / (high - low)).astype(np.float32))
        train, held_validation, test = random_split(table, (0.7, 0.15, 0.15), seed)
        test = held_validation if validation else test
    else:
        raise ValueError(f"--protocol={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    liked = (4.0 - low) / (high - low) if protocol == "keras_rs_listwise" else 4.0
    return Split(train, sample_lists(train, num_list_per_user, num_examples_per_list, seed),
                 sample_lists(test, 1, num_examples_per_list, seed), liked)


def random_split(table: pd.DataFrame, fractions: tuple[float, ...], seed: int):
    """Ratings shuffled once with `seed`, cut into consecutive parts of these fractions."""
    order = np.random.RandomState(seed).permutation(len(table))
    cuts = np.round(np.cumsum(fractions)[:-1] * len(table)).astype(int)
    return [table.iloc[part] for part in np.split(order, cuts)]


def latest_split(table: pd.DataFrame, holdout_per_user: int):
    """Each user's latest `holdout_per_user` ratings (by timestamp) held out.

    Users with fewer than 2 x holdout_per_user ratings stay whole in training.
    """
    table = table.assign(row=np.arange(len(table)))
    table = table.sort_values(["user", "timestamp", "row"], kind="stable")
    rank_from_end = table.groupby("user").cumcount(ascending=False)
    counts = table.groupby("user").user.transform("size")
    held_out = (rank_from_end < holdout_per_user) & (counts >= 2 * holdout_per_user)
    return table[~held_out].drop(columns="row"), table[held_out].drop(columns="row")


def sample_lists(table: pd.DataFrame, num_list_per_user: int, num_examples_per_list: int,
                 seed: int) -> Lists:
    """Lists of a user's rated movies as `tfrs.examples.movielens.sample_listwise` draws them.

    Same users in the same order, same random draws; users with fewer ratings than
    `num_examples_per_list` are dropped. NumPy instead of TFRS's per-list eager ops,
    which take minutes for MovieLens.
    """
    random_state = np.random.RandomState(seed)
    users, movies, labels = [], [], []
    for user, group in table.groupby("user", sort=False):
        user_movies, user_ratings = group.movie.to_numpy(), group.rating.to_numpy()
        if len(user_movies) < num_examples_per_list:
            continue
        for _ in range(num_list_per_user):
            chosen = random_state.choice(len(user_movies), size=num_examples_per_list,
                                         replace=False)
            users.append(user)
            movies.append(user_movies[chosen])
            labels.append(user_ratings[chosen])
    if not users:
        raise ValueError(f"no user has {num_examples_per_list} ratings to make a list")
    return Lists(np.asarray(users, np.int32), np.asarray(movies, np.int32),
                 np.asarray(labels, np.float32))


def lists_with_unrated(table: pd.DataFrame, rated_by_user: dict, pool: np.ndarray,
                       num_list_per_user: int, positives_per_list: int | None,
                       negatives_per_list: int, seed: int) -> Lists:
    """Lists of rated movies (label = rating) and unrated ones (label 0) per user.

    `positives_per_list` None takes all of the user's ratings in `table` (test lists);
    a number samples that many without replacement, padding with -1 when a user has
    fewer. Unrated movies are drawn uniformly, without replacement within a list, from
    the movies of `pool` the user never rated (`rated_by_user`). Items are shuffled
    within each list.
    """
    rng = np.random.default_rng(seed)
    users, movies, labels = [], [], []
    groups = list(table.groupby("user", sort=True))
    width = (max(len(g) for _, g in groups) if positives_per_list is None
             else positives_per_list) + negatives_per_list
    in_pool = np.zeros(max(pool.max(), table.movie.max()) + 1, bool)
    in_pool[pool] = True
    for user, group in groups:
        user_movies, user_ratings = group.movie.to_numpy(), group.rating.to_numpy()
        allowed = in_pool.copy()
        allowed[rated_by_user[user][rated_by_user[user] < len(allowed)]] = False
        unrated = np.flatnonzero(allowed)
        if len(unrated) < negatives_per_list:
            raise ValueError(f"user {user} has rated all but {len(unrated)} movies of the pool")
        negatives = _distinct_rows(rng, unrated, num_list_per_user, negatives_per_list)
        take = len(user_movies) if positives_per_list is None else min(positives_per_list,
                                                                        len(user_movies))
        # Row-wise sampling without replacement: the first `take` of a random order.
        chosen = rng.random((num_list_per_user, len(user_movies))).argsort(axis=1)[:, :take]
        count = take + negatives_per_list
        item_movies = np.concatenate([user_movies[chosen], negatives], axis=1)
        item_labels = np.concatenate(
            [user_ratings[chosen], np.zeros_like(negatives, np.float32)], axis=1)
        shuffle = rng.random((num_list_per_user, count)).argsort(axis=1)
        padding = ((0, 0), (0, width - count))
        movies.append(np.pad(np.take_along_axis(item_movies, shuffle, 1), padding))
        labels.append(np.pad(np.take_along_axis(item_labels, shuffle, 1), padding,
                             constant_values=-1.0))
        users.append(np.full(num_list_per_user, user))
    return Lists(np.concatenate(users).astype(np.int32),
                 np.concatenate(movies).astype(np.int32),
                 np.concatenate(labels).astype(np.float32))


def _distinct_rows(rng: np.random.Generator, values: np.ndarray, rows: int, size: int):
    """[rows, size] uniform draws from `values`, distinct within each row.

    Redraws the rows that hold a repeat, far cheaper than a permutation of `values` per
    row when size << len(values); small pools take the permutation.
    """
    if 2 * size > len(values):
        return np.stack([rng.permutation(values)[:size] for _ in range(rows)])
    draws = rng.integers(0, len(values), (rows, size))
    while True:
        ordered = np.sort(draws, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not repeated.any():
            return values[draws]
        draws[repeated] = rng.integers(0, len(values), (int(repeated.sum()), size))


def rated_movies_by_user(table: pd.DataFrame) -> dict:
    return {user: group.movie.to_numpy() for user, group in table.groupby("user")}
