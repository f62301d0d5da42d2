"""Input checks that run before a run directory exists: each raises a ValueError whose
one line names what is wrong (flag, file, column, row, value), which `common.cli`
prints with exit status 2. Rows are counted as a user sees them in the file: the first
data row is row 1 (the header, if any, not counted).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

_SHOWN = 3  # examples named in an error message


def file(path, flag: str = "--dataset") -> Path:
    """`path` as a Path, if it names an existing regular file."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        raise ValueError(f"{flag}: {path} is a directory; expected a file")
    if not path.is_file():
        raise ValueError(f"{flag}: no such file: {path}")
    return path


def directory(path, flag: str = "--dataset") -> Path:
    """`path` as a Path, if it names an existing directory."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_file():
        raise ValueError(f"{flag}: {path} is a file; expected a directory")
    if not path.is_dir():
        raise ValueError(f"{flag}: no such directory: {path}")
    return path


def columns(frame: pd.DataFrame, required, source: str) -> None:
    """Every column of `required` is in `frame`."""
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; it has {list(frame.columns)}")


def numeric(frame: pd.DataFrame, names, source: str) -> pd.DataFrame:
    """`frame` with the columns `names` as float64; an unparsable cell is named by
    column, row and value. Empty cells are left as NaN for `finite` to report."""
    frame = frame.copy()
    for name in names:
        column = frame[name]
        parsed = pd.to_numeric(column, errors="coerce")
        bad = parsed.isna() & column.notna() & (column.astype(str).str.strip() != "")
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())[:_SHOWN]
            cells = ", ".join(f"row {row + 1}: {column.iloc[row]!r}" for row in rows)
            raise ValueError(f"{source}: column {name!r} is numeric but has "
                             f"{int(bad.sum())} cell(s) that are not numbers ({cells})")
        frame[name] = parsed.astype(np.float64)
    return frame


def finite(values, names=None, source: str = "data") -> None:
    """No NaN, inf or empty cell in the columns `names` of a DataFrame (all columns by
    default), or anywhere in an array [N, ...] (rows are its first axis)."""
    if isinstance(values, pd.DataFrame):
        for name in names if names is not None else values.columns:
            column = pd.to_numeric(values[name], errors="coerce").to_numpy(np.float64)
            bad = ~np.isfinite(column)
            if bad.any():
                rows = np.flatnonzero(bad)[:_SHOWN]
                cells = ", ".join(f"row {row + 1}: {values[name].iloc[row]!r}" for row in rows)
                raise ValueError(f"{source}: column {name!r} has {int(bad.sum())} missing or "
                                 f"non-finite cell(s) ({cells})")
        return
    array = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        index = np.argwhere(bad)[0]
        raise ValueError(f"{source}: {int(bad.sum())} non-finite value(s), the first at "
                         f"index {tuple(int(i) for i in index)}")


def not_constant(values, name: str) -> None:
    """`values` [N] take at least two distinct values (a constant target teaches nothing
    and makes R² undefined)."""
    values = np.asarray(values)
    if values.size == 0:
        raise ValueError(f"{name} is empty")
    if np.all(values == values.flat[0]):
        raise ValueError(f"{name} is constant ({values.flat[0]!r} in all {values.size} rows)")


def two_classes(labels, name: str) -> None:
    """Binary `labels` [N] hold both classes."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    if present.size < 2:
        raise ValueError(f"{name} has a single class ({present.tolist()} in all "
                         f"{labels.size} rows); both classes are needed")
