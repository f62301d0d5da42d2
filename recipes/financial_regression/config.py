"""Every setting of the financial_regression recipe: its flags, defaults, help and checks,
and what --smoke changes. `python recipes/financial_regression/train.py --help` lists them."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from common import config

from recipes.financial_regression.model import LOSSES, MODELS


@dataclasses.dataclass(frozen=True)
class Config(config.Shared):
    # Two networks of a few epochs on data.SMOKE_ROWS days: the whole path in seconds.
    SMOKE: ClassVar[dict] = {"epochs": 4, "global_batch_size": 64, "learning_rate": 0.01,
                             "ensemble_size": 2, "patience": 2}

    epochs: int = config.shared("epochs", 300)
    global_batch_size: int = config.shared("global_batch_size", 128)
    learning_rate: float = config.shared("learning_rate", 0.01)
    dataset: str = config.shared("dataset", "sp500")

    # Upper bounds: the loss and targets are in standardized units (sd 1), so a δ, penalty
    # or tolerance far above 1 is a typo, and a huge one overflows float32 (δ² in the loss,
    # scale·|t₂| in the corrupted targets). Counts are capped where a run could never finish.
    loss: str = config.setting("huber", "mse; huber (fixed --huber_delta); adaptive_huber (δ "
                               "and scale learned through the Huber NLL).",
                               choices=LOSSES)
    # Beyond 1e3 Huber is MSE.
    huber_delta: float = config.setting(1.0, "Huber δ in standardized target units (> 0).",
                                        low=1e-6, high=1e3)
    # As --learning_rate.
    delta_learning_rate: float = config.setting(0.05, "adaptive_huber: Adam rate of δ and "
                                                "scale.", low=0.0, high=10.0, low_open=True)
    model: str = config.setting("mlp", "mlp, or linear (the AR model, same loop).",
                                choices=MODELS)
    hidden_units: tuple[int, ...] = config.setting((32,), "mlp: widths of the ReLU layers.",
                                                   widths=True)
    dropout: float = config.setting(0.2, "mlp: dropout after each ReLU layer.", low=0.0,
                                    high=0.95)
    weight_decay: float = config.setting(1e-4, "mlp: L2 penalty on the ReLU layers' kernels.",
                                         low=0.0, high=10.0)
    ensemble_size: int = config.setting(5, "Networks (seeds) averaged into the model.",
                                        low=1, high=100)
    patience: int = config.setting(20, "Stop after this many epochs without a validation "
                                   "gain; --epochs is the budget.", low=1, high=10_000)
    stopping_tolerance: float = config.setting(1e-6, "Smallest validation-loss gain that "
                                               "counts.", low=0.0, high=1.0)
    date_column: str = config.setting("date", "csv:, close: the date column.")
    close_column: str = config.setting("close", "close: the closing-price column.")
    target: str | None = config.setting(None, "csv: the column to predict one row ahead.")
    features: tuple[str, ...] | None = config.setting(
        None, "csv: columns whose lags are the features.")
    lags: int = config.setting(5, "csv: lags 1..L of each feature column.", low=1, high=1_000)
    day_of_week: bool = config.setting(False, "csv: add the target day's weekday (one-hot).")
    split_date: str | None = config.setting(
        None, "First target date of the test split (YYYY-MM-DD). Default: 2008-01-01 for "
        "sp500, else the date at 80 % of the rows.")
    validation_fraction: float = config.setting(
        0.1, "Latest share of the days before --split_date held out for stopping and "
        "choices.", low=0.01, high=0.9)
    train_outlier_rate: float = config.setting(
        0.0, "Share of training targets corrupted with large heavy-tailed errors.", low=0.0,
        high=0.49)
    outlier_scale: float = config.setting(10.0, "Corruption size: ±scale·|t₂| target sds.",
                                          low=1e-6, high=1e3)
    # Strings, as the command line gives them: the record and run.json keep "0.01", not
    # the float's "0.01" re-printed (check() reads them as numbers).
    robustness_rates: tuple[str, ...] = config.setting(
        (), "Train every loss at each corruption rate (e.g. 0,0.01) and tabulate test R²; "
        "empty: no experiment.")
    robustness_seeds: int = config.setting(1, "Seeds per robustness cell.", low=1, high=100)

    def check(self) -> None:
        for rate in self.robustness_rates:
            try:
                value = float(rate)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and 0 <= value < 0.5):
                raise ValueError(f"--robustness_rates must be numbers in [0, 0.5), e.g. "
                                 f"0,0.01, not {rate!r}")

    @property
    def rates(self) -> list[float]:
        """--robustness_rates as sorted distinct numbers."""
        return sorted({float(rate) for rate in self.robustness_rates})
