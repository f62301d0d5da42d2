"""Next-day volatility regression on the S&P 500 with a Huber loss (fixed or learned δ).

    python recipes/financial_regression/train.py

Forecasts tomorrow's log Parkinson variance from HAR-style features (daily, weekly and
monthly past volatility, past returns, detrended log volume) with an MLP trained on the
Huber density's negative log-likelihood, δ and scale learned (`--loss=adaptive_huber`).
The same record holds the closed-form baselines (HAR and full linear AR by least
squares), the same network trained with MSE, and the robustness experiment: each loss
trained again with 1 % of the training targets corrupted by large heavy-tailed errors
(`--robustness_rates`), its test R² beside the clean one. Own data:
`--dataset=ohlc:PATH` (any daily OHLC CSV) or `--dataset=csv:PATH` with `--target`,
`--features`, `--lags`, `--split_date` (e.g. `configs/nyse_islr2.cfg`, ISLR2 §10.5).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import common  # noqa: E402,F401  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from common import flags as common_flags  # noqa: E402
from common import results, training  # noqa: E402
from recipes.financial_regression import data, model, report  # noqa: E402

RECIPE = Path(__file__).resolve().parent.name
FLAGS = flags.FLAGS

flags.DEFINE_enum("loss", "adaptive_huber", model.LOSSES,
                  "mse; huber (fixed --huber_delta); adaptive_huber (δ and scale learned "
                  "through the Huber NLL, δ starting at --huber_delta).")
flags.DEFINE_float("huber_delta", 1.0, "Huber δ in standardized target units (> 0).")
flags.DEFINE_float("delta_learning_rate", 0.05,
                   "adaptive_huber: Adam learning rate of δ and scale (softplus-raw).")
flags.DEFINE_enum("model", "mlp", model.MODELS, "mlp, or linear (the AR model, same loop).")
flags.DEFINE_string("date_column", "date", "csv: the date column.")
flags.DEFINE_string("target", None, "csv: the column to predict one row ahead.")
flags.DEFINE_list("features", None, "csv: columns whose lags are the features.")
flags.DEFINE_integer("lags", 5, "csv: lags 1..L of each feature column.", lower_bound=1)
flags.DEFINE_bool("day_of_week", False, "csv: add the target day's weekday (one-hot).")
flags.DEFINE_string("split_date", None, "First target date of the test split (YYYY-MM-DD). "
                    "Default: 2008-01-01 for sp500, else the date at 80 % of the rows.")
flags.DEFINE_float("validation_fraction", 0.1,
                   "Latest share of the days before --split_date held out for validation.")
flags.DEFINE_float("train_outlier_rate", 0.0,
                   "Share of training targets corrupted with large heavy-tailed errors.")
flags.DEFINE_float("outlier_scale", 10.0,
                   "Corruption size: ±scale·|t₂| in units of the target's standard deviation.")
flags.DEFINE_list("robustness_rates", ["0", "0.01"],
                  "Train every loss at each of these corruption rates and tabulate test R² "
                  "(empty: skip the experiment).")
flags.DEFINE_integer("robustness_seeds", 1, "Seeds per cell of the robustness table.",
                     lower_bound=1)

flags.register_validator("huber_delta", lambda v: v > 0, message="--huber_delta must be > 0")
flags.register_validator("delta_learning_rate", lambda v: v > 0,
                         message="--delta_learning_rate must be > 0")
flags.register_validator("validation_fraction", lambda v: 0 <= v < 1,
                         message="--validation_fraction must be in [0, 1)")
flags.register_validator("train_outlier_rate", lambda v: 0 <= v < 0.5,
                         message="--train_outlier_rate must be in [0, 0.5)")
flags.register_validator("outlier_scale", lambda v: v > 0, message="--outlier_scale must be > 0")
flags.register_validator(
    "dataset", lambda v: v == "sp500" or v.startswith(("csv:", "ohlc:")),
    message="--dataset must be sp500, csv:PATH or ohlc:PATH")
flags.register_validator(
    "robustness_rates", lambda rates: all(_is_rate(r) for r in rates),
    message="--robustness_rates must be numbers in [0, 0.5), e.g. 0,0.01")

common_flags.set_defaults(epochs=15, global_batch_size=256, learning_rate=1e-3,
                          dataset="sp500")

ISLR2_FEATURES = {"DJ_return", "log_volume", "log_volatility"}
ISLR2_SOURCE = "James et al., An Introduction to Statistical Learning, 2nd ed. (2021), §10.5"


def _is_rate(text: str) -> bool:
    try:
        return 0 <= float(text) < 0.5
    except ValueError:
        return False


def load_frame() -> tuple[data.Frame, str]:
    """The examples of --dataset, and the dataset's name. Raises ValueError on bad input."""
    kind, _, path = FLAGS.dataset.partition(":")
    csv_flags = [name for name in ("target", "features") if FLAGS[name].present]
    if kind != "csv" and csv_flags:
        raise ValueError(f"--{csv_flags[0]} applies to --dataset=csv:PATH only")
    if kind == "sp500":
        return data.volatility_frame(data.load_sp500(), "sp500"), "openintro/sp500_1950_2018"
    if kind == "ohlc":
        return data.volatility_frame(data.read_csv(path, list(data.OHLC_COLUMNS[1:]), "Date"),
                                     path), path
    if not FLAGS.target or not FLAGS.features:
        raise ValueError("--dataset=csv:PATH needs --target and --features")
    table = data.read_csv(path, list(dict.fromkeys([FLAGS.target, *FLAGS.features])),
                          FLAGS.date_column)
    return data.lagged_frame(table, FLAGS.date_column, FLAGS.target, FLAGS.features,
                             FLAGS.lags, FLAGS.day_of_week), path


class Experiment:
    """The data of one run, split and standardized, and the models trained on it."""

    def __init__(self, run, frame: data.Frame, splits: dict):
        self.run, self.frame, self.splits = run, frame, splits
        self.fit_rows = splits["train"]
        self.x_scaler = data.Standardizer.fit(frame.features[self.fit_rows])
        self.y_scaler = data.Standardizer.fit(frame.target[self.fit_rows])
        self.x = {part: self.x_scaler.transform(frame.features[rows])
                  for part, rows in splits.items()}
        self.y = {part: self.y_scaler.transform(frame.target[rows])
                  for part, rows in splits.items()}
        self.delta_logs: dict[str, list] = {}
        self.predictions: dict[str, np.ndarray] = {}

    def train_target(self, rate: float) -> tuple[np.ndarray, int]:
        """Standardized training targets with a share `rate` corrupted (same rows for
        every loss at one rate); validation and test targets are never corrupted."""
        if rate == 0:
            return self.y["train"], 0
        return data.corrupt(self.y["train"], rate, FLAGS.outlier_scale, FLAGS.seed + 7)

    def score(self, name: str, predict) -> dict:
        """Metrics of `predict` (standardized features → standardized target) on test."""
        def original(part):
            return self.y_scaler.inverse(np.reshape(predict(self.x[part]), -1))

        test = original("test")
        self.predictions[name] = test
        part = "validation" if len(self.splits["validation"]) else "train"
        smearing = float(np.mean(np.exp(self.frame.target[self.splits[part]] - original(part))))
        return report.evaluate(self.frame.target[self.splits["test"]], test,
                               self.frame.volatility, smearing)

    def least_squares(self, name: str, columns: list[int], rate: float = 0.0) -> dict:
        target, _ = self.train_target(rate)
        fitted = model.least_squares(self.x["train"][:, columns], target)
        return self.score(name, lambda x: fitted(x[:, columns]))

    def network(self, name: str, loss: str, rate: float, seed: int) -> dict:
        """Trains the network with `loss` on targets corrupted at `rate`; test metrics."""
        tf.keras.utils.set_random_seed(seed)  # same initial weights whatever ran before
        target, _ = self.train_target(rate)
        with self.run.strategy.scope():
            network = model.build(FLAGS.model, self.x["train"].shape[1], loss,
                                  FLAGS.huber_delta, FLAGS.learning_rate,
                                  FLAGS.delta_learning_rate, FLAGS.jit_compile)
        examples = tf.data.Dataset.from_tensor_slices((self.x["train"], target[:, None]))
        stream, steps = training.training_stream(examples, self.run, name=name)
        validation = None
        if len(self.splits["validation"]):
            validation = tf.data.Dataset.from_tensor_slices(
                (self.x["validation"], self.y["validation"][:, None])
            ).batch(FLAGS.global_batch_size)
        delta_log = model.DeltaLog()
        training.fit(self.run, network, stream, steps_per_epoch=steps,
                     validation_data=validation, callbacks=[delta_log], name=name)
        if delta_log.rows:
            self.delta_logs[f"{FLAGS.model}, {rate:.0%} corrupted, seed {seed}"] = delta_log.rows
        self.last_model = network
        return self.score(name, lambda x: network.predict(x, batch_size=1024, verbose=0))


def robustness(experiment: Experiment, main: dict, baseline_mse: dict) -> tuple[dict, dict]:
    """Each loss (and least squares) at each corruption rate: the table, and the test R²
    each loses from the clean rate (0, when listed) to every other rate.

    Every cell starts from the same initial weights and batch order for a given seed,
    and every loss sees the same corrupted rows at a given rate: the differences are
    paired. Cells the main run or the MSE baseline already trained are reused.
    """
    rates = sorted({float(rate) for rate in FLAGS.robustness_rates})
    if not rates:
        return {}, {}
    seeds = range(FLAGS.seed, FLAGS.seed + FLAGS.robustness_seeds)
    cells = {(FLAGS.loss, FLAGS.train_outlier_rate, FLAGS.seed): main["test_r2"]}
    if baseline_mse:
        cells[("mse", FLAGS.train_outlier_rate, FLAGS.seed)] = baseline_mse["test_r2"]
    all_columns = list(range(experiment.x["train"].shape[1]))
    corrupted = [rate for rate in rates if rate > 0] if rates[0] == 0 else []
    rows, drops = [], {}
    for loss in ["linear_lstsq", *model.LOSSES]:
        r2 = {}  # rate → test R² per seed
        for rate in rates:
            if loss == "linear_lstsq":  # closed form: one value, no seed
                r2[rate] = [experiment.least_squares(f"lstsq_outliers{rate:g}", all_columns,
                                                     rate)["test_r2"]]
                continue
            for seed in seeds:
                if (loss, rate, seed) not in cells:
                    cells[(loss, rate, seed)] = experiment.network(
                        f"{loss}_outliers{rate:g}_seed{seed}", loss, rate, seed)["test_r2"]
            r2[rate] = [cells[(loss, rate, seed)] for seed in seeds]
        row = [loss]
        for rate in rates:
            values = r2[rate]
            row.append(f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
                       if len(values) > 1 else values[0])
        for rate in corrupted:
            drop = float(np.mean(np.subtract(r2[0.0], r2[rate])))
            drops[f"r2_drop_{loss}_{rate:g}"] = drop
            row.append(drop)
        rows.append(row)
    for rate in corrupted:
        for loss in ("huber", "adaptive_huber"):
            drops[f"r2_drop_mse_minus_{loss}_{rate:g}"] = (
                drops[f"r2_drop_mse_{rate:g}"] - drops[f"r2_drop_{loss}_{rate:g}"])
    spread = " (mean ± sd over seeds)" if len(seeds) > 1 else ""
    columns = (["loss"] + [f"test R², {rate:.0%} corrupted{spread}" for rate in rates]
               + [f"R² lost at {rate:.0%}" for rate in corrupted])
    return {"columns": columns, "rows": rows}, drops


def train() -> dict:
    frame, name = load_frame()  # bad input fails here, before any TensorFlow set-up
    split_date = FLAGS.split_date or ("2008-01-01" if FLAGS.dataset == "sp500" else None)
    splits = data.split(frame, split_date, FLAGS.validation_fraction)
    if FLAGS.smoke:  # the last 1500 training days, 100 validation and 250 test days
        splits = {"train": splits["train"][-1500:], "validation": splits["validation"][-100:],
                  "test": splits["test"][:250]}
        FLAGS.epochs = min(FLAGS.epochs, 3)
    if len(splits["train"]) < FLAGS.global_batch_size or not len(splits["test"]):
        raise ValueError(
            f"--split_date={split_date}: {len(splits['train'])} training and "
            f"{len(splits['test'])} test examples; need at least --global_batch_size="
            f"{FLAGS.global_batch_size} training and 1 test example")
    run = training.start(RECIPE)
    experiment = Experiment(run, frame, splits)
    sizes = {part: len(rows) for part, rows in splits.items()}
    print(f"[{RECIPE}] {name}: {len(frame.target)} examples, {len(frame.feature_names)} "
          f"features, target {frame.target_name}; split {sizes}", flush=True)

    metrics = experiment.network("", FLAGS.loss, FLAGS.train_outlier_rate, FLAGS.seed)
    experiment.predictions["main"] = experiment.predictions.pop("")
    main_model = experiment.last_model
    if FLAGS.loss == "adaptive_huber":
        metrics["learned_delta"], metrics["learned_scale"] = main_model.delta_and_scale()
    rate = FLAGS.train_outlier_rate
    all_columns = list(range(len(frame.feature_names)))
    baselines = {}
    if frame.volatility:
        har_columns = [frame.feature_names.index(name) for name in data.HAR_FEATURES]
        baselines["har_lstsq"] = experiment.least_squares("har_lstsq", har_columns, rate)
    baselines["linear_lstsq"] = experiment.least_squares("linear_lstsq", all_columns, rate)
    if FLAGS.loss != "mse":
        baselines[f"{FLAGS.model}_mse"] = experiment.network(
            f"{FLAGS.model}_mse", "mse", rate, FLAGS.seed)
    table, drops = robustness(experiment, metrics, baselines.get(f"{FLAGS.model}_mse", {}))
    metrics.update(drops)

    tables = {}
    if table:
        tables["robustness"] = table
    if experiment.delta_logs:
        tables["adaptive_huber_delta"] = {
            "columns": ["model", "epochs", "δ start", "δ learned", "scale learned"],
            "rows": [[name, int(rows[-1][0]), rows[0][1],
                      rows[-1][1], rows[-1][2]]
                     for name, rows in sorted(experiment.delta_logs.items())]}
    references = []
    if (not frame.volatility and FLAGS.target == "log_volume" and FLAGS.lags == 5
            and set(FLAGS.features) == ISLR2_FEATURES and split_date == "1980-01-02"):
        references = [
            {"name": "ISLR2 NYSE linear AR" + (" + day of week" if FLAGS.day_of_week else ""),
             "metric": "test_r2", "value": 0.46 if FLAGS.day_of_week else 0.413,
             "source": ISLR2_SOURCE}]
        if FLAGS.day_of_week:
            references.append({"name": "ISLR2 NYSE MLP + day of week", "metric": "test_r2",
                               "value": 0.466, "source": ISLR2_SOURCE})
    lines = [("har_lstsq", "HAR, least squares") if frame.volatility
             else ("linear_lstsq", "linear AR, least squares"),
             (f"{FLAGS.model}_mse", f"{FLAGS.model}, MSE"),
             ("main", f"{FLAGS.model}, {FLAGS.loss}")]
    return training.finish(
        run,
        metrics=metrics,
        tolerances={"test_r2": 0.02, "test_mae": 0.02, "test_rmse": 0.03, "test_qlike": 0.05,
                    **{key: 0.03 for key in drops}},
        baselines=baselines,
        references=references,
        tables=tables,
        dataset={
            "name": name,
            "fingerprint": results.fingerprint(frame.dates.astype(np.int64), frame.features,
                                               frame.target),
            "target": frame.target_name, "features": frame.feature_names,
            **{f"{part}_examples": size for part, size in sizes.items()},
            **{f"{part}_dates": [str(frame.dates[rows[0]])[:10], str(frame.dates[rows[-1]])[:10]]
               for part, rows in splits.items() if len(rows)},
            "train_outlier_rate": rate,
            "corrupted_training_targets": experiment.train_target(rate)[1],
        },
        model=main_model,
        artifacts=report.plots(
            frame.dates[splits["test"]], frame.target[splits["test"]], frame.target_name,
            {label: experiment.predictions[key] for key, label in lines
             if key in experiment.predictions},
            experiment.delta_logs, run.model_dir),
        extra={"adaptive_huber_history": experiment.delta_logs} if experiment.delta_logs else None,
    )


def run(argv: list[str]) -> dict:
    """Parses `argv` as the command line would, trains, and returns the results record."""
    common_flags.parse(argv)
    return train()


if __name__ == "__main__":
    training.cli(train)
