"""Every setting of the fraud_detection recipe: its flags, defaults, help and checks, and
what --smoke changes. `python recipes/fraud_detection/train.py --help` lists them."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from common import config

from recipes.fraud_detection.model import LOSSES


@dataclasses.dataclass(frozen=True)
class Config(config.Shared):
    # One seed of three losses, 2 epochs, two penalties and one 5-fold cross-validation on
    # data.SMOKE_ROWS rows: the whole path in seconds.
    SMOKE: ClassVar[dict] = {"epochs": 2, "num_seeds": 1, "global_batch_size": 128,
                             "losses": ("weighted_bce", "bce_soft_precision",
                                        "precision_at_recall"),
                             "weight_decays": (0.01, 1.0), "cv_repeats": 1}
    SMOKE_RESAMPLES: ClassVar[int] = 200  # bootstrap resamples under --smoke (1,000 otherwise)
    # Gradient boosting's grid under --smoke: 200 rounds x 20 fits took half a smoke run.
    SMOKE_BOOSTING_GRID: ClassVar[tuple] = ((0.1, 20), (0.1, 50))

    epochs: int = config.shared("epochs", 30)
    learning_rate: float = config.shared("learning_rate", 3e-3)
    dataset: str = config.shared("dataset", "caravan")

    # Finite, and the upper bounds only refuse what can be nothing but a typo: the losses
    # are O(1) per row, so a penalty or term weight above 1e3 buries them (1.0 is the
    # strongest penalty of the default grid), as a multiplier step 1e4x the default throws
    # λ about; (1 - p)^γ with γ > 20 zeroes every gradient but the worst rows'; no usable
    # training split has a million negatives per positive.
    loss: str = config.setting("precision_at_recall", "The headline network's loss (always "
                               "trained, saved as model.keras).", choices=LOSSES)
    losses: tuple[str, ...] = config.setting(
        ("weighted_bce", "focal", "bce_soft_precision", "precision_at_recall",
         "recall_at_precision"), "Losses of the networks trained and compared in the same "
        "record.", choices=LOSSES)
    model: str = config.setting("linear", "Network: one linear layer (logistic-regression "
                                "shaped), or an MLP.", choices=("linear", "mlp"))
    hidden_units: tuple[int, ...] = config.setting((32,), "Hidden layer widths of the MLP.",
                                                   widths=True)
    # Decades from 1e-4 (about logistic regression's C = 1 on Caravan's weighted loss) to 1
    # (the old default, about C = 1e-4); focal's loss is ~40x smaller than weighted BCE's,
    # so its best penalty sits lower in the same grid.
    weight_decays: tuple[float, ...] = config.setting(
        (1e-4, 1e-3, 1e-2, 1e-1, 1.0), "Grid of the networks' L2 penalty on the kernels: "
        "each loss's is chosen by cross-validated PR-AUC (one value: no cross-validation).",
        low=0.0, high=1e3)
    cv_repeats: int = config.setting(2, "Repeats of the stratified 5-fold cross-validation "
                                     "that chooses every model's regularisation (same folds "
                                     "for all).", low=1, high=20)
    label_column: str | None = config.setting(
        None, "Binary label column (0/1, true/false, yes/no); default: Purchase (Caravan), "
        "default (ISLR Default), Class (a CSV).")
    categorical_columns: tuple[str, ...] = config.setting(
        (), "Feature columns to one-hot encode (default: student for ISLR Default, none "
        "otherwise: every other column is numeric).")
    test_dataset: str | None = config.setting(
        None, "csv:PATH: test on this file (same columns); every row of --dataset then "
        "trains (validation carved from them).")
    target_recall: float = config.setting(
        0.2, "Recall the operating point must reach on validation, and precision_at_recall's "
        "constraint (0.2: ISLR's Caravan logistic regression flags 33 and catches 11 of 59 "
        "buyers, 19 %).", low=0.0, high=1.0, low_open=True)
    target_precision: float = config.setting(0.1, "recall_at_precision's constraint.",
                                             low=0.0, high=1.0, low_open=True)
    top_k: int = config.setting(33, "k of hits@k and precision@k (ISLR: 33).", low=1)
    pos_weight: float | None = config.setting(
        None, "Weight of positives in weighted BCE (default: negatives / positives of the "
        "training split).", low=0.0, high=1e6, low_open=True)
    precision_weight: float = config.setting(1.0, "λ of the soft-precision term.", low=0.0,
                                             high=1e3)
    focal_alpha: float = config.setting(0.25, "Focal loss weight of positives.", low=0.0,
                                        high=1.0)
    focal_gamma: float = config.setting(2.0, "Focal loss focusing exponent.", low=0.0,
                                        high=20.0)
    dual_learning_rate: float = config.setting(
        0.1, "Step of the ascent on the Lagrange multiplier of the constrained losses.",
        low=0.0, high=1e3)
    surrogate: str = config.setting("hinge", "Bound of the constrained losses' counts.",
                                    choices=("hinge", "logistic"))
    refit: bool = config.setting(
        True, "Refit every model (networks and baselines) on every training row, "
        "validation's included, with the settings and threshold chosen on validation, and "
        "score the test rows with the refit models.")
    num_seeds: int = config.setting(3, "Train every network from seeds seed..seed+n-1.",
                                    low=1)

    def check(self) -> None:
        if not self.weight_decays:
            raise ValueError("--weight_decays must be finite numbers in [0, 1e3], at least one")
        if self.test_dataset is not None and not self.test_dataset.startswith("csv:"):
            raise ValueError(f"--test_dataset={self.test_dataset}: must be csv:PATH")
