"""The results record: fingerprint, atomic JSON write and load, compare, published()."""

import json
import math
import platform
import re
import subprocess

from common import results

import numpy as np
import pytest
import tensorflow as tf

# --- fingerprint ---------------------------------------------------------------------

def test_fingerprint_is_16_hex_digits_and_equal_for_equal_arrays():
    first = np.arange(6, dtype=np.int64).reshape(2, 3)
    second = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64)
    assert re.fullmatch(r"[0-9a-f]{16}", results.fingerprint(first))
    assert results.fingerprint(first) == results.fingerprint(second)
    assert results.fingerprint(first, "x") == results.fingerprint(second, "x")


def test_fingerprint_depends_on_values_not_memory_layout():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert results.fingerprint(np.asfortranarray(array)) == results.fingerprint(array)
    strided = array[:, ::2]
    assert not strided.flags.c_contiguous
    assert results.fingerprint(strided) == results.fingerprint(strided.copy())


def test_fingerprint_changes_with_value_dtype_or_shape():
    base = np.zeros((2, 3), dtype=np.int32)
    changed = base.copy()
    changed[1, 2] = 1
    # float32 zeros have the same bytes as int32 zeros; (3, 2) the same bytes as (2, 3).
    variants = [changed, base.astype(np.float32), base.reshape(3, 2), base.astype(np.int64)]
    prints = {results.fingerprint(base), *(results.fingerprint(v) for v in variants)}
    assert len(prints) == 1 + len(variants)
    # Which array is which matters too.
    assert results.fingerprint(base, changed) != results.fingerprint(changed, base)


def test_fingerprint_of_strings_keeps_item_boundaries():
    assert results.fingerprint("rating 1\nrating 2\n", "rating 3\n") != results.fingerprint(
        "rating 1\n", "rating 2\nrating 3\n"
    )


# --- write and load ------------------------------------------------------------------

def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(constant):
        raise ValueError(f"non-JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def test_write_converts_numpy_and_non_finite_values(tmp_path):
    record = {
        "metrics": {
            "ndcg": np.float32(0.5),
            "count": np.int64(3),
            "nan": float("nan"),
            "inf": np.float64("inf"),
            "minus_inf": -math.inf,
            "flag": np.bool_(True),
        },
        "array": np.array([1.5, np.nan]),
        "pair": (1, 2),
        7: "integer key",
    }
    path = results.write(record, tmp_path / "deep" / "er" / "results.json")
    assert path == tmp_path / "deep" / "er" / "results.json"
    written = _strict_json(path.read_text())
    metrics = written["metrics"]
    assert metrics["ndcg"] == 0.5 and type(metrics["ndcg"]) is float
    assert metrics["count"] == 3 and type(metrics["count"]) is int
    assert metrics["flag"] is True
    assert (metrics["nan"], metrics["inf"], metrics["minus_inf"]) == ("nan", "inf", "-inf")
    assert written["array"] == [1.5, "nan"]
    assert written["pair"] == [1, 2]
    assert written["7"] == "integer key"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no .tmp left


def test_load_round_trips_a_json_record(tmp_path):
    record = {
        "recipe": "ranking", "config": "default",
        "metrics": {"ndcg": 0.912345678901234, "rmse": 1.0},
        "tolerances": {"ndcg": 0.01},
        "references": [{"name": "tfrs", "metric": "ndcg", "value": 0.9103, "source": "x"}],
        "git_commit": None, "seed": 42, "publish": False,
    }
    assert results.load(results.write(record, tmp_path / "r.json")) == record


def test_write_replaces_an_old_record_and_a_failed_write_keeps_it(tmp_path):
    path = tmp_path / "results.json"
    results.write({"metrics": {"a": 1.0}}, path)
    results.write({"metrics": {"a": 2.0}}, path)
    assert results.load(path) == {"metrics": {"a": 2.0}}
    with pytest.raises(TypeError):
        results.write({"metrics": {"a": object()}}, path)
    assert results.load(path) == {"metrics": {"a": 2.0}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_versions_match_the_running_interpreter_and_packages(monkeypatch):
    found = results.versions()
    assert found["python"] == platform.python_version()
    assert found["tensorflow"] == tf.__version__
    assert found["numpy"] == np.__version__
    monkeypatch.setattr(results, "KEY_PACKAGES", ("no-such-package-for-this-test",))
    assert results.versions()["no-such-package-for-this-test"] is None


def test_git_commit_is_a_commit_or_none_outside_a_repository(monkeypatch, tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", results.git_commit() or "")
    monkeypatch.setattr(results, "REPOSITORY", tmp_path)
    assert results.git_commit() is None


# --- compare -------------------------------------------------------------------------

REFERENCE = {
    "metrics": {"ndcg": 0.5, "rmse": 1.0, "mrr": 0.25},
    "tolerances": {"ndcg": 0.25, "rmse": 0.125},  # mrr has none: not checked
}


def _rows(metrics: dict) -> dict:
    return {row["metric"]: row for row in results.compare({"metrics": metrics}, REFERENCE)}


@pytest.mark.parametrize(
    "ndcg, rmse, ok",
    [
        (0.75, 1.125, (True, True)),      # exactly at the tolerance above
        (0.25, 0.875, (True, True)),      # exactly at the tolerance below
        (0.75 + 2**-20, 1.0, (False, True)),  # just beyond
        (0.5, 0.875 - 2**-20, (True, False)),
    ],
)
def test_compare_at_the_tolerance_edge(ndcg, rmse, ok):
    rows = _rows({"ndcg": ndcg, "rmse": rmse, "mrr": 99.0})
    assert set(rows) == {"ndcg", "rmse"}  # only metrics with a tolerance
    assert (rows["ndcg"]["ok"], rows["rmse"]["ok"]) == ok
    assert rows["ndcg"]["published"] == 0.5 and rows["ndcg"]["reproduced"] == ndcg
    assert rows["rmse"]["tolerance"] == 0.125


def test_compare_missing_or_non_finite_metric_is_not_ok():
    rows = _rows({"ndcg": float("nan")})
    assert rows["ndcg"]["ok"] is False
    assert rows["rmse"]["ok"] is False and rows["rmse"]["reproduced"] is None
    # A NaN stored by write() is the string "nan": never ok either.
    stored = {**REFERENCE, "metrics": {**REFERENCE["metrics"], "ndcg": "nan"}}
    rows = {r["metric"]: r for r in results.compare({"metrics": {"ndcg": 0.5}}, stored)}
    assert rows["ndcg"]["ok"] is False


# --- published -----------------------------------------------------------------------

def test_published_lists_records_and_ignores_benchmarks(monkeypatch, tmp_path):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    records = [tmp_path / "ranking" / "default.json", tmp_path / "ranking" / "tfrs_listwise.json",
               tmp_path / "fraud_detection" / "default.json"]
    others = [tmp_path / "benchmarks" / "ranking.json", tmp_path / "ranking" / "notes.txt",
              tmp_path / "table.json"]
    for path in records + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert results.published() == sorted(records)
    assert results.published("ranking") == sorted(records[:2])
    assert results.published("benchmarks") == []
    assert results.published_path("ranking", "default") == records[0]


def test_git_commit_names_the_code_and_ignores_published_records(tmp_path, monkeypatch):
    repository = tmp_path / "repo"
    (repository / "results").mkdir(parents=True)
    (repository / "code.py").write_text("x = 1\n")
    (repository / "results" / "r.json").write_text("{}\n")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=repository, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "one")
    monkeypatch.setattr(results, "REPOSITORY", repository)
    clean = results.git_commit()
    assert len(clean) == 40
    (repository / "results" / "r.json").write_text('{"republished": 1}\n')
    assert results.git_commit() == clean  # a record written by a run: still the code's commit
    (repository / "code.py").write_text("x = 2\n")
    assert results.git_commit() == clean + "+dirty"
