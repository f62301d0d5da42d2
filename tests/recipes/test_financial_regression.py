"""Tests of recipes/financial_regression: the real command on tiny data under one device
and two mirrored replicas, the no-look-ahead property of the features, the CSV mode with
the ISLR2 NYSE columns, the OHLC loader, and every bad input of the issue.

Independent references: brute-force NumPy loops for the features and lags, scikit-learn's
LinearRegression and r2_score for the least-squares baselines.
"""

import concurrent.futures
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from recipes.financial_regression import data

RECIPE = "financial_regression"
REPOSITORY = Path(__file__).resolve().parents[2]
RESULTS = REPOSITORY / "results" / RECIPE
ISLR2_FLAGS = ("--target=log_volume", "--features=DJ_return,log_volume,log_volatility",
               "--lags=5", "--date_column=date")


@pytest.fixture(scope="module")
def sp500():
    return data.load_sp500()


def synthetic_ohlc(days=400, seed=0) -> pd.DataFrame:
    """A random-walk price with persistent (GARCH-like) daily ranges, some High == Low days."""
    rng = np.random.default_rng(seed)
    log_vol = np.zeros(days)
    for t in range(1, days):
        log_vol[t] = 0.95 * log_vol[t - 1] + 0.3 * rng.standard_normal()
    sigma = 0.01 * np.exp(log_vol / 2)
    close = 100 * np.exp(np.cumsum(sigma * rng.standard_normal(days)))
    high = close * np.exp(sigma * np.abs(rng.standard_normal(days)))
    low = close * np.exp(-sigma * np.abs(rng.standard_normal(days)))
    flat = rng.random(days) < 0.05
    high[flat] = low[flat]
    return pd.DataFrame({
        "Date": pd.bdate_range("2000-01-03", periods=days).strftime("%Y-%m-%d"),
        "Open": close, "High": high, "Low": low, "Close": close, "Adj Close": close,
        "Volume": rng.integers(1_000_000, 2_000_000, days),
    })


def islr2_table(rows=500, seed=0) -> pd.DataFrame:
    """A small table with the ISLR2 NYSE columns: an AR(1) log volume."""
    rng = np.random.default_rng(seed)
    log_volume = np.zeros(rows)
    for t in range(1, rows):
        log_volume[t] = 0.7 * log_volume[t - 1] + 0.2 * rng.standard_normal()
    dates = pd.bdate_range("1978-06-01", periods=rows)  # test rows from 1980-01-02 on
    return pd.DataFrame({
        "date": dates.strftime("%Y-%m-%d"),
        "day_of_week": dates.strftime("%a").str.lower(),
        "DJ_return": 0.01 * rng.standard_normal(rows),
        "log_volume": log_volume,
        "log_volatility": -12 + 0.5 * rng.standard_normal(rows),
        "train": dates < "1980-01-02",
    })


def test_docstring_command_is_the_default_and_configs_parse():
    """The first command of the docstring is the bare default; every config file parses."""
    source = (REPOSITORY / "recipes" / RECIPE / "train.py").read_text()
    docstring = source.split('"""')[1]
    commands = [line.strip() for line in docstring.splitlines()
                if line.strip().startswith("python ")]
    assert commands[0] == f"python recipes/{RECIPE}/train.py"
    configs = sorted((REPOSITORY / "recipes" / RECIPE / "configs").glob("*.cfg"))
    assert {c.stem for c in configs} >= {"default", "robustness"}
    for config in configs:  # the command in each config's top comment names that config
        assert f"--flagfile=recipes/{RECIPE}/configs/{config.name}" in config.read_text()
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); configs = sys.argv[2:]\n"
        f"from recipes.{RECIPE} import train\n"
        "from common import flags\n"
        "for config in configs:\n"
        "    flags.parse([f'--flagfile={config}'])\n"
        "    print(config, flags.FLAGS.robustness_rates, flags.FLAGS.dataset)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(REPOSITORY), *map(str, configs)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "['0', '0.01', '0.05'] sp500" in completed.stdout


def test_smoke_one_device_and_mirrored(run_recipe, sp500):
    """The real command on tiny data: metrics beat a bar, the baselines equal scikit-learn,
    the robustness table is there, and two mirrored replicas train the same model."""
    one = run_recipe(RECIPE, "--smoke", "--global_batch_size=64", timeout=600)
    assert one.returncode == 0, one
    record = one.record
    assert record["strategy"]["replicas"] == 1
    metrics, baselines = record["metrics"], record["baselines"]
    assert metrics["test_r2"] > 0.3 and baselines["mlp_mse"]["test_r2"] > 0.3
    assert 0.01 < metrics["learned_delta"] < 10 and 0.01 < metrics["learned_scale"] < 10

    # The least-squares baselines, redone with scikit-learn on the same smoke split.
    frame = data.volatility_frame(sp500, "sp500")
    splits = data.split(frame, "2008-01-01", 0.1)
    train, test = splits["train"][-1500:], splits["test"][:250]
    assert record["dataset"]["train_examples"] == 1500
    for name, columns in (("linear_lstsq", slice(None)), ("har_lstsq", slice(0, 3))):
        fitted = LinearRegression().fit(frame.features[train][:, columns], frame.target[train])
        expected = r2_score(frame.target[test], fitted.predict(frame.features[test][:, columns]))
        assert baselines[name]["test_r2"] == pytest.approx(expected, abs=1e-6), name

    table = record["tables"]["robustness"]
    assert [row[0] for row in table["rows"]] == ["linear_lstsq", "mse", "huber", "adaptive_huber"]
    assert metrics["r2_drop_mse_0.01"] > metrics["r2_drop_huber_0.01"]
    assert metrics["r2_drop_mse_minus_huber_0.01"] == pytest.approx(
        metrics["r2_drop_mse_0.01"] - metrics["r2_drop_huber_0.01"])
    assert record["adaptive_huber_history"]
    assert (one.model_dir / "predictions.png").exists() and (one.model_dir / "delta.png").exists()

    mirrored = run_recipe(RECIPE, "--smoke", "--global_batch_size=64", "--strategy=mirrored",
                          "--num_cpu_devices=2", "--robustness_rates=", timeout=600)
    assert mirrored.returncode == 0, mirrored
    assert mirrored.record["strategy"]["replicas"] == 2
    # Same global batches and an exact global-batch loss: the same model up to float error.
    assert mirrored.record["metrics"]["test_r2"] == pytest.approx(metrics["test_r2"], abs=0.01)
    assert mirrored.record["metrics"]["learned_delta"] == pytest.approx(
        metrics["learned_delta"], rel=0.02)


def test_volatility_features_brute_force_and_no_look_ahead(sp500):
    """Each feature equals a NumPy loop over past days; changing every row from a date on
    changes no feature of the examples that predict up to that date."""
    ohlc = sp500[["Date", "High", "Low", "Close", "Volume"]]
    frame = data.volatility_frame(ohlc, "sp500")
    valid = ohlc[ohlc.High != ohlc.Low].reset_index(drop=True)
    assert len(frame.target) == len(valid) - data.VOLUME_TREND_DAYS  # 99 warm-up days + the last
    assert str(frame.dates[0])[:4] == "1962"  # before 1962 High == Low every day

    high, low = valid.High.to_numpy(), valid.Low.to_numpy()
    close, volume = valid.Close.to_numpy(), valid.Volume.to_numpy(float)
    rv = np.log(high / low) ** 2 / (4 * np.log(2))
    dates = pd.to_datetime(valid.Date).to_numpy()
    rng = np.random.default_rng(0)
    for i in rng.choice(len(frame.target), 20, replace=False):
        t = int(np.searchsorted(dates, frame.dates[i])) - 1  # the last day the features see
        expected = [
            np.log(rv[t]), np.log(np.mean(rv[t - 4:t + 1])), np.log(np.mean(rv[t - 21:t + 1])),
            np.log(close[t] / close[t - 1]), min(np.log(close[t] / close[t - 1]), 0.0),
            np.mean([np.log(close[s] / close[s - 1]) for s in range(t - 4, t + 1)]),
            np.log(volume[t]) - np.mean(np.log(volume[t - 99:t + 1])),
        ]
        np.testing.assert_allclose(frame.features[i], expected, rtol=1e-9, atol=1e-12)
        assert frame.target[i] == pytest.approx(np.log(rv[t + 1]))

    for cut in ("1987-10-19", "2008-09-15", "2018-01-02"):
        future = pd.to_datetime(ohlc.Date) >= cut
        changed = ohlc.copy()
        changed.loc[future, ["High", "Low", "Close"]] *= rng.uniform(0.5, 2.0, (future.sum(), 1))
        highest = changed.loc[future, ["High", "Low", "Close"]].max(axis=1)
        changed.loc[future, "High"] = highest * 1.01
        changed.loc[future, "Volume"] = 1
        other = data.volatility_frame(changed, "changed")
        up_to = frame.dates <= np.datetime64(cut)
        assert up_to.sum() > 1000
        np.testing.assert_array_equal(other.dates[: up_to.sum()], frame.dates[up_to])
        np.testing.assert_array_equal(other.features[: up_to.sum()], frame.features[up_to])


def test_lagged_frame_brute_force_and_no_look_ahead():
    table = data.check_columns(islr2_table(), ["DJ_return", "log_volume", "log_volatility"],
                               "date", "test")
    columns = ["DJ_return", "log_volume", "log_volatility"]
    frame = data.lagged_frame(table, "date", "log_volume", columns, 5, day_of_week=True)
    values = table[columns].to_numpy()
    for i in (0, 17, len(frame.target) - 1):
        t = i + 5
        lags = [values[t - lag, j] for lag in range(1, 6) for j in range(3)]
        weekday = np.zeros(5)
        weekday[pd.Timestamp(table.date[t]).dayofweek] = 1
        np.testing.assert_array_equal(frame.features[i], np.r_[lags, weekday])
        assert frame.target[i] == values[t, 1] and frame.dates[i] == table.date[t]
    changed = table.copy()
    changed.loc[200:, columns] = 99.0
    other = data.lagged_frame(changed, "date", "log_volume", columns, 5, day_of_week=True)
    np.testing.assert_array_equal(other.features[: 200 - 5 + 1], frame.features[: 200 - 5 + 1])


def test_ohlc_loader_matches_the_sp500_path(tmp_path, sp500):
    """A Yahoo-style CSV of the same days gives the same examples as the shipped data."""
    path = tmp_path / "spx.csv"
    sp500.drop(columns=["rownames"]).iloc[-800:].to_csv(path, index=False)
    from_file = data.volatility_frame(data.read_csv(str(path), ["High", "Low", "Close",
                                                                "Volume"], "Date"), str(path))
    shipped = data.volatility_frame(sp500.iloc[-800:], "sp500")
    np.testing.assert_array_equal(from_file.features, shipped.features)
    np.testing.assert_array_equal(from_file.target, shipped.target)
    synthetic = synthetic_ohlc()
    frame = data.volatility_frame(synthetic, "synthetic")
    assert len(frame.target) == (synthetic.High != synthetic.Low).sum() - data.VOLUME_TREND_DAYS


def test_csv_mode_with_the_islr2_columns(run_recipe, tmp_path):
    """The ISLR2 NYSE set-up on a small file: the least-squares baseline equals scikit-learn
    on a design built by hand, and the ISLR2 references are attached."""
    table = islr2_table()
    path = tmp_path / "NYSE.csv"
    table.to_csv(path, index=False)
    result = run_recipe(RECIPE, f"--dataset=csv:{path}", *ISLR2_FLAGS, "--day_of_week",
                        "--split_date=1980-01-02", "--validation_fraction=0", "--loss=mse",
                        "--robustness_rates=", "--global_batch_size=32", "--epochs=3")
    assert result.returncode == 0, result
    record = result.record
    values = table[["DJ_return", "log_volume", "log_volatility"]].to_numpy()
    design = np.array([[values[t - lag, j] for lag in range(1, 6) for j in range(3)]
                       + list(np.eye(5)[pd.Timestamp(table.date[t]).dayofweek])
                       for t in range(5, len(table))])
    target = values[5:, 1]
    is_test = pd.to_datetime(table.date[5:]).to_numpy() >= np.datetime64("1980-01-02")
    assert 50 < is_test.sum() < 100
    fitted = LinearRegression().fit(design[~is_test], target[~is_test])
    expected = r2_score(target[is_test], fitted.predict(design[is_test]))
    assert record["baselines"]["linear_lstsq"]["test_r2"] == pytest.approx(expected, abs=1e-6)
    assert record["dataset"]["test_examples"] == is_test.sum()
    assert record["metrics"]["test_r2"] > 0.2  # an AR(1) with coefficient 0.7: R² ≈ 0.49
    assert "test_qlike" not in record["metrics"]  # not a volatility target
    assert {ref["value"] for ref in record["references"]} == {0.46, 0.466}
    assert "har_lstsq" not in record["baselines"]


def _bad_files(tmp_path) -> dict:
    table = islr2_table(60)
    files = {}
    for name, edit in {
        "text": lambda t: t.assign(log_volume=t.log_volume.astype(object).where(
            t.index != 10, "abc")),
        "missing": lambda t: t.assign(DJ_return=t.DJ_return.where(t.index != 20)),
        "short": lambda t: t.iloc[:4],
        "good": lambda t: t,
    }.items():
        files[name] = tmp_path / f"{name}.csv"
        edit(table).to_csv(files[name], index=False)
    return files


def _published_files() -> list:
    return sorted((p.name, p.stat().st_mtime_ns) for p in RESULTS.glob("*"))


def test_bad_input_fails_clearly_and_publishes_nothing(run_recipe, tmp_path):
    files = _bad_files(tmp_path)
    cases = {
        "unknown column": ([f"--dataset=csv:{files['good']}", "--target=log_volume",
                            "--features=DJ_return,no_such_column"],
                           ["unknown column", "no_such_column"]),
        "non-numeric": ([f"--dataset=csv:{files['text']}", *ISLR2_FLAGS],
                        ["'log_volume'", "non-numeric", "'abc'", "row 10"]),
        "missing value": ([f"--dataset=csv:{files['missing']}", *ISLR2_FLAGS],
                          ["'DJ_return'", "missing", "row 20"]),
        "split date outside": ([f"--dataset=csv:{files['good']}", *ISLR2_FLAGS,
                                "--split_date=2030-01-01"], ["--split_date=2030-01-01", "outside"]),
        "too few rows": ([f"--dataset=csv:{files['short']}", *ISLR2_FLAGS],
                         ["4 rows", "--lags=5"]),
        "huber delta": (["--huber_delta=0"], ["--huber_delta", "> 0"]),
    }
    before = _published_files()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        runs = {name: pool.submit(run_recipe, RECIPE, *args, "--publish",
                                  f"--model_dir={tmp_path / name.replace(' ', '_')}",
                                  timeout=300)
                for name, (args, _) in cases.items()}
    for name, (_, words) in cases.items():
        result = runs[name].result()
        assert result.returncode != 0, name
        assert result.record is None, name
        for word in words:
            assert word in result.stderr, (name, word, result.stderr[-1500:])
    assert _published_files() == before


def test_loader_errors_name_the_problem(tmp_path):
    """The loaders' other errors, in-process (each subprocess costs a TensorFlow import)."""
    with pytest.raises(FileNotFoundError, match="no such file: /no/such.csv"):
        data.read_csv("/no/such.csv", ["x"], "date")
    path = tmp_path / "dates.csv"
    pd.DataFrame({"date": ["2000-01-03", "not a date"], "x": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="'date' has a missing or unparsable date at row 1"):
        data.read_csv(str(path), ["x"], "date")
    ohlc = synthetic_ohlc(150)
    with pytest.raises(ValueError, match="too few"):
        data.volatility_frame(ohlc.iloc[:100], "short")
    with pytest.raises(ValueError, match="'Low' has non-positive"):
        data.volatility_frame(ohlc.assign(Low=ohlc.Low.where(ohlc.index != 5, 0.0)), "zero")
    frame = data.volatility_frame(ohlc, "synthetic")
    with pytest.raises(ValueError, match="not a date"):
        data.split(frame, "someday", 0.1)


def test_corruption_and_least_squares():
    """corrupt() changes exactly round(rate·N) targets, by large errors; least_squares
    equals scikit-learn."""
    target = np.zeros(10_000, np.float32)
    corrupted, count = data.corrupt(target, 0.01, 10.0, seed=3)
    assert count == 100 and np.count_nonzero(corrupted) == 100
    assert np.median(np.abs(corrupted[corrupted != 0])) > 5
    from recipes.financial_regression import model

    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((200, 4)), rng.standard_normal(200)
    np.testing.assert_allclose(model.least_squares(x, y)(x),
                               LinearRegression().fit(x, y).predict(x), atol=1e-10)
