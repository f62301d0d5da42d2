"""Intervals: the one type, the one way to compute them, the one way to print them.

Every interval in a record, a console summary or a README table is an `Interval` built
here with SciPy's bootstrap (seeded, so a rerun gives the same interval), and printed by
`show`. Two models scored on the same rows are compared with a paired bootstrap (the rows
are resampled together), which is far tighter than comparing two separate intervals.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000
# The BCa jackknife holds `batch` resamples of the data at once: bounded memory at any N.
_BATCH = 64
# BCa's jackknife costs O(N²); past this many rows the percentile interval is used (with
# so many rows the two agree to well within the bootstrap's own noise).
BCA_MAX_ROWS = 5000


@dataclasses.dataclass(frozen=True)
class Interval:
    """A value with its confidence interval [low, high]."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return show(self.value, self.low, self.high)

    def __contains__(self, other: float) -> bool:
        return self.low <= other <= self.high


def show(value, low=None, high=None, digits: int = 4) -> str:
    """"value [low, high]" with `digits` significant digits (whole numbers from 10,000
    on); "–" for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, Interval):
        value, low, high = value.value, value.low, value.high
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return str(value)
    if isinstance(value, (int, np.integer)) and low is None:
        return str(value)
    def number(x) -> str:
        x = float(x)
        return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.{digits}g}"

    if low is None or high is None:
        return number(value)
    return f"{number(value)} [{number(low)}, {number(high)}]"


def _rows(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-row values, "
                         f"got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds non-finite values")
    return values


def mean(values, *, seed: int, confidence: float = CONFIDENCE) -> Interval:
    """Mean of per-row values `[N]` with its BCa bootstrap interval (resampling rows;
    percentile past `BCA_MAX_ROWS` rows)."""
    values = _rows(values, "values")
    centre = float(values.mean())
    if values.size < 2 or np.all(values == values[0]):
        return Interval(centre, centre, centre)  # no spread: the bootstrap is degenerate
    result = stats.bootstrap(
        (values,), np.mean, confidence_level=confidence, n_resamples=RESAMPLES,
        method="BCa" if values.size <= BCA_MAX_ROWS else "percentile",
        random_state=np.random.default_rng(seed), batch=_BATCH, vectorized=True,
    )
    low, high = result.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa undefined: use percentiles
        return statistic(np.mean, values, seed=seed, confidence=confidence)
    return Interval(centre, float(low), float(high))


def paired_difference(first, second, *, seed: int, confidence: float = CONFIDENCE) -> Interval:
    """Mean of `first - second` over rows `[N]` scored by both, paired bootstrap interval."""
    first, second = _rows(first, "first"), _rows(second, "second")
    if first.shape != second.shape:
        raise ValueError(f"paired values must align row for row: {first.shape} vs "
                         f"{second.shape}")
    return mean(first - second, seed=seed, confidence=confidence)


def statistic(fn: Callable[..., float], *samples, seed: int, confidence: float = CONFIDENCE,
              n_resamples: int = 1000) -> Interval:
    """`fn(*samples)` with a percentile bootstrap interval, the rows of all samples
    resampled together (so a difference of two models on the same rows is paired).

    For statistics that are not means of rows: PR-AUC, mIoU from per-image confusion
    counts, identification error over queries. Each sample is `[N, ...]` with one N.
    """
    arrays = [np.asarray(sample) for sample in samples]
    sizes = {len(array) for array in arrays}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"samples must share one non-zero number of rows, got {sorted(sizes)}")
    size = sizes.pop()
    centre = float(fn(*arrays))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for index in range(n_resamples):
        rows = rng.integers(0, size, size)
        draws[index] = fn(*(array[rows] for array in arrays))
    return _percentile_interval(centre, draws, confidence)


def _percentile_interval(centre: float, draws: np.ndarray, confidence: float) -> Interval:
    """`centre` with the percentile interval of its finite bootstrap `draws`."""
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        raise ValueError("the statistic is not finite on any bootstrap resample")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(centre, float(low), float(high))


def over_seeds_and_rows(fn: Callable[..., float], per_seed: list[tuple], *, seed: int,
                        confidence: float = CONFIDENCE, n_resamples: int = 1000) -> Interval:
    """The mean over S seeds of `fn(*per_seed[s])`, with a percentile interval from a
    two-level bootstrap: each resample draws S seeds with replacement, then N rows with
    replacement (the same rows for every seed: the test set is shared), so the interval
    covers both the seed's and the test rows' variation.

    `per_seed[s]` holds the samples of seed s, each `[N, ...]` with one N for all.
    """
    arrays = [[np.asarray(sample) for sample in samples] for samples in per_seed]
    sizes = {len(array) for samples in arrays for array in samples}
    if not arrays or len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every seed's samples must share one non-zero number of rows, got "
                         f"{sorted(sizes)} over {len(arrays)} seeds")
    size, seeds = sizes.pop(), len(arrays)
    centre = float(np.mean([fn(*samples) for samples in arrays]))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for index in range(n_resamples):
        chosen, rows = rng.integers(0, seeds, seeds), rng.integers(0, size, size)
        draws[index] = np.mean([fn(*(array[rows] for array in arrays[s])) for s in chosen])
    return _percentile_interval(centre, draws, confidence)


def seed_tolerances(per_seed: dict, one_seed: dict, floors: dict | None = None) -> dict:
    """{name: tolerance} of a record: `seed_tolerance` of each name's per-seed values
    (`per_seed` {name: [S]}, floored at `floors` {name: grain}) when S >= 2; with one seed
    there is no spread to measure, and the hand-set `one_seed` {name: tolerance} holds."""
    if min(len(values) for values in per_seed.values()) < 2:
        return dict(one_seed)
    return {name: seed_tolerance(values, (floors or {}).get(name, 0.0))
            for name, values in per_seed.items()}


def seed_tolerance(per_seed_values, floor: float = 0.0) -> float:
    """How far a reproduction of the mean over these seeds may land from it: three
    standard errors of that mean, 3 s / sqrt(S) with s the sample standard deviation of
    the per-seed values `[S]` (S >= 2), and at least `floor`.

    A rerun elsewhere repeats the same seeds, but float arithmetic that differs between
    machines sends each seed's training along another path, by about as much as another
    seed does (the depth default's ΔM, one seed, was -3.62 here and -2.19 on another
    2-core machine); three standard errors keep a false alarm rare (< 1 %).
    """
    values = np.asarray(per_seed_values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"seed_tolerance needs >= 2 finite per-seed values, got {values!r}")
    return max(float(3.0 * values.std(ddof=1) / np.sqrt(values.size)), floor)


def flatten(named: dict) -> dict:
    """{name: Interval | number} -> {name, name_ci_low, name_ci_high}: the record's keys."""
    flat = {}
    for name, value in named.items():
        if isinstance(value, Interval):
            flat[name] = value.value
            flat[f"{name}_ci_low"] = value.low
            flat[f"{name}_ci_high"] = value.high
        else:
            flat[name] = value
    return flat


def from_record(values: dict, name: str):
    """`values[name]` as an Interval when its `_ci_low` / `_ci_high` are recorded."""
    value = values.get(name)
    low, high = values.get(f"{name}_ci_low"), values.get(f"{name}_ci_high")
    if value is None or low is None or high is None:
        return value
    return Interval(value, low, high)
