"""Next-day volatility regression on the S&P 500 with a Huber loss (fixed or learned δ).

    python recipes/financial_regression/train.py
    python recipes/financial_regression/train.py --dataset=close:prices.csv --close_column=Close

Forecasts tomorrow's log variance from HAR features (daily, weekly, monthly past
volatility), past returns and detrended volume with an ensemble over seeds of MLPs (a
linear unit plus a dropout ReLU layer, weight decay), trained on the Huber loss or on the
Huber density's NLL with δ and scale learned (`--loss=adaptive_huber`), stopped on the
validation loss. The record holds, on the same days: least squares (HAR and all features),
the recipe's own linear model (its convergence check), the network trained with MSE, and
optionally the robustness experiment (`--robustness_rates`). Own data: `ohlc:PATH`,
`close:PATH` or `csv:PATH` with `--target`, `--features`, `--lags` (configs/nyse_islr2.cfg).
"""

import common  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from absl import flags

from common import flags as common_flags
from common import results, training
from recipes.financial_regression import data, evaluate, model, report

RECIPE = "financial_regression"
FLAGS = flags.FLAGS

flags.DEFINE_enum("loss", "huber", model.LOSSES, "mse; huber (fixed --huber_delta); "
                  "adaptive_huber (δ and scale learned through the Huber NLL).")
flags.DEFINE_float("huber_delta", 1.0, "Huber δ in standardized target units (> 0).")
flags.DEFINE_float("delta_learning_rate", 0.05, "adaptive_huber: Adam rate of δ and scale.")
flags.DEFINE_enum("model", "mlp", model.MODELS, "mlp, or linear (the AR model, same loop).")
flags.DEFINE_list("hidden_units", ["32"], "mlp: widths of the ReLU layers.")
flags.DEFINE_float("dropout", 0.2, "mlp: dropout after each ReLU layer.")
flags.DEFINE_float("weight_decay", 1e-4, "mlp: L2 penalty on the ReLU layers' kernels.")
flags.DEFINE_integer("ensemble_size", 5, "Networks (seeds) averaged into the model.")
flags.DEFINE_integer("patience", 20, "Stop after this many epochs without a validation "
                     "gain; --epochs is the budget.")
flags.DEFINE_float("stopping_tolerance", 1e-6, "Smallest validation-loss gain that counts.")
flags.DEFINE_string("date_column", "date", "csv:, close: the date column.")
flags.DEFINE_string("close_column", "close", "close: the closing-price column.")
flags.DEFINE_string("target", None, "csv: the column to predict one row ahead.")
flags.DEFINE_list("features", None, "csv: columns whose lags are the features.")
flags.DEFINE_integer("lags", 5, "csv: lags 1..L of each feature column.")
flags.DEFINE_bool("day_of_week", False, "csv: add the target day's weekday (one-hot).")
flags.DEFINE_string("split_date", None, "First target date of the test split (YYYY-MM-DD). "
                    "Default: 2008-01-01 for sp500, else the date at 80 % of the rows.")
flags.DEFINE_float("validation_fraction", 0.1, "Latest share of the days before "
                   "--split_date held out for stopping and choices.")
flags.DEFINE_float("train_outlier_rate", 0.0, "Share of training targets corrupted with "
                   "large heavy-tailed errors.")
flags.DEFINE_float("outlier_scale", 10.0, "Corruption size: ±scale·|t₂| target sds.")
flags.DEFINE_list("robustness_rates", [], "Train every loss at each corruption rate "
                  "(e.g. 0,0.01) and tabulate test R²; empty: no experiment.")
flags.DEFINE_integer("robustness_seeds", 1, "Seeds per robustness cell.")
flags.register_validator("robustness_rates", lambda rates: all(
    r.replace(".", "", 1).isdigit() and float(r) < 0.5 for r in rates),
    message="--robustness_rates must be numbers in [0, 0.5), e.g. 0,0.01")
common_flags.check_widths("hidden_units")
# Upper bounds: the loss and targets are in standardized units (sd 1), so a δ, penalty or
# tolerance far above 1 is a typo, and a huge one overflows float32 (δ² in the loss,
# scale·|t₂| in the corrupted targets). Counts are capped where a run could never finish.
common_flags.check_range("huber_delta", 1e-6, 1e3)  # beyond 1e3 Huber is MSE
common_flags.check_range("delta_learning_rate", 0, 10, low_open=True)  # as --learning_rate
common_flags.check_range("dropout", 0, 0.95)
common_flags.check_range("weight_decay", 0, 10)
common_flags.check_range("ensemble_size", 1, 100)
common_flags.check_range("patience", 1, 10_000)
common_flags.check_range("stopping_tolerance", 0, 1)
common_flags.check_range("lags", 1, 1_000)
common_flags.check_range("validation_fraction", 0.01, 0.9)
common_flags.check_range("train_outlier_rate", 0, 0.49)
common_flags.check_range("outlier_scale", 1e-6, 1e3)
common_flags.check_range("robustness_seeds", 1, 100)

common_flags.set_defaults(epochs=300, global_batch_size=128, learning_rate=0.01,
                          dataset="sp500")
SMOKE = {"epochs": 4, "global_batch_size": 64, "learning_rate": 0.01, "ensemble_size": 2,
         "patience": 2}


class Networks:
    """Trains and scores the networks of one run on one split, each under its own name."""

    def __init__(self, run, frame: data.Frame, splits: dict):
        self.run, self.frame, self.splits = run, frame, splits
        self.target_mean = float(frame.target[splits["train"]].mean())
        self.target_std = float(frame.target[splits["train"]].std())
        self.x = {part: frame.features[rows].astype(np.float32) for part, rows in splits.items()}
        self.y = {part: ((frame.target[rows] - self.target_mean) / self.target_std)
                  .astype(np.float32) for part, rows in splits.items()}

    def train_target(self, rate: float) -> tuple[np.ndarray, int]:
        """Standardized training targets, a share `rate` corrupted (the same rows for every
        loss); validation and test targets are never corrupted."""
        if rate == 0:
            return self.y["train"], 0
        return data.corrupt(self.y["train"], rate, FLAGS.outlier_scale, FLAGS.seed + 7)

    def fit(self, name: str, kind: str, loss: str, rate: float = 0.0, seed: int = 0):
        """Trains network `name` (or loads it, if a killed run had finished it); returns
        (network, its offset, the training model)."""
        tf.keras.utils.set_random_seed(FLAGS.seed + seed)  # same start whatever ran before
        with self.run.strategy.scope():
            network = model.build_network(kind, self.x["train"].astype(np.float64),
                                          [int(u) for u in FLAGS.hidden_units],
                                          FLAGS.dropout, FLAGS.weight_decay, name)
            regressor = model.build(network, loss, FLAGS.huber_delta, FLAGS.learning_rate,
                                    FLAGS.delta_learning_rate, FLAGS.jit_compile)
        examples = tf.data.Dataset.from_tensor_slices(
            (self.x["train"], self.train_target(rate)[0][:, None]))
        validation = tf.data.Dataset.from_tensor_slices(
            (self.x["validation"], self.y["validation"][:, None])).batch(4096)
        stop = model.ValidationStopping(
            str(self.run.path("best") / name / "weights"), report.val_losses(self.run, name),
            FLAGS.patience, FLAGS.stopping_tolerance, FLAGS.learning_rate,
            keep_best=kind == "mlp")
        training.fit(self.run, regressor, examples, epochs=FLAGS.epochs,
                     validation_data=validation, callbacks=[stop], name=name)
        # A Huber fit estimates a robust centre of skewed residuals, not their mean: the
        # mean validation residual moves it to the mean, which R² and MSE reward.
        offset = 0.0 if loss == "mse" else float(np.mean(
            self.y["validation"] - network(self.x["validation"]).numpy()[:, 0]))
        return network, offset, regressor

    def served(self, fitted: list) -> tf.keras.Model:
        return model.served([f[0] for f in fitted], self.target_mean, self.target_std,
                            [f[1] for f in fitted])

    def predict(self, served: tf.keras.Model) -> dict:
        """Predictions in target units on validation and test: {part: [N]}."""
        return {part: served(self.x[part]).numpy()[:, 0].astype(np.float64)
                for part in ("validation", "test")}

    def ensemble(self, name: str, kind: str, loss: str, size: int, rate: float = 0.0):
        """`size` networks over seeds: the served ensemble, its predictions, the members'
        test predictions, and the first member's training model."""
        fitted = [self.fit(f"{name}_seed{seed}", kind, loss, rate, seed) for seed in range(size)]
        served = self.served(fitted)
        members = [self.predict(self.served([f]))["test"] for f in fitted]
        return served, self.predict(served), members, fitted[0][2]


def cell_name(loss: str, rate: float, seed: int) -> str:
    """The network of a robustness cell; a cell the run trains anyway (the model's loss or
    MSE at --train_outlier_rate) has that network's name, so `fit` loads it."""
    if rate == FLAGS.train_outlier_rate and loss == FLAGS.loss:
        return f"{FLAGS.model}_seed{seed}"
    if rate == FLAGS.train_outlier_rate and loss == "mse":
        return f"{FLAGS.model}_mse_seed{seed}"
    return f"robust_{loss}_{rate:g}_seed{seed}"


def train() -> dict:
    run = training.start(RECIPE, common_flags.settings())
    frame, name = data.load(FLAGS.dataset, date_column=FLAGS.date_column,
                            close_column=FLAGS.close_column, target=FLAGS.target,
                            features=FLAGS.features, lags=FLAGS.lags,
                            day_of_week=FLAGS.day_of_week, data_dir=FLAGS.data_dir)
    split_date = FLAGS.split_date or ("2008-01-01" if FLAGS.dataset == "sp500" else None)
    splits = data.split(frame, split_date, FLAGS.validation_fraction)
    if FLAGS.smoke:  # after the checks of the full data
        splits = data.smoke_subset(splits)
    if len(splits["train"]) < FLAGS.global_batch_size:
        raise ValueError(f"--global_batch_size={FLAGS.global_batch_size} is larger than the "
                         f"{len(splits['train'])} training days")
    print(f"[{RECIPE}] {name}: {len(frame.target)} days, {len(frame.feature_names)} features,"
          f" target {frame.target_name}; {data.describe(frame, splits)}", flush=True)

    nets, rate = Networks(run, frame, splits), FLAGS.train_outlier_rate
    lstsq = evaluate.least_squares(frame, splits, nets.train_target(rate)[0] * nets.target_std
                                   + nets.target_mean)
    served, predictions, members, first = nets.ensemble(
        FLAGS.model, FLAGS.model, FLAGS.loss, FLAGS.ensemble_size, rate)
    metrics = evaluate.model_metrics(frame, splits, predictions, members, lstsq, FLAGS.seed)
    if FLAGS.loss == "adaptive_huber":
        metrics["learned_delta"], metrics["learned_scale"] = first.delta_and_scale()
    baselines = {key: value["scores"] for key, value in lstsq.items()}
    plotted = {f"{FLAGS.model}, {FLAGS.loss}": predictions["test"]}
    comparisons = {"linear": 1}  # the linear model under MSE: does the loop converge?
    if FLAGS.loss != "mse":
        comparisons[FLAGS.model] = FLAGS.ensemble_size
    elif FLAGS.model == "linear":
        comparisons = {}
    for kind, size in comparisons.items():  # the same loop under MSE: linear (convergence), network
        _, other, other_members, _ = nets.ensemble(f"{kind}_mse", kind, "mse", size, rate)
        baselines[f"{kind}_mse"] = evaluate.model_metrics(frame, splits, other,
                                                          other_members, lstsq, FLAGS.seed)
        plotted[f"{kind}, mse"] = other["test"]

    rates = sorted({float(r) for r in FLAGS.robustness_rates})
    robustness = {(loss, r, seed): evaluate.scores(
        frame.target[splits["test"]], nets.predict(nets.served([nets.fit(
            cell_name(loss, r, seed), FLAGS.model, loss, r, seed)]))["test"])["test_r2"]
        for loss in model.LOSSES for r in rates for seed in range(FLAGS.robustness_seeds)}
    lstsq_robust = {r: evaluate.least_squares(
        frame, splits, nets.train_target(r)[0] * nets.target_std + nets.target_mean)[
            "linear_lstsq"]["scores"]["test_r2"] for r in rates}
    tables, drops = report.robustness(robustness, lstsq_robust)
    metrics.update(drops)

    training.save_model(run, served, serving=model.serving(served))
    np.savez(run.path("test_predictions.npz"), features=nets.x["test"],
             target=frame.target[splits["test"]], prediction=predictions["test"])
    convergence = report.convergence(run, FLAGS.epochs, FLAGS.patience, FLAGS.stopping_tolerance)
    metrics.update(report.stopping_metrics(convergence, FLAGS.model))
    return training.finish(
        run, metrics=metrics, baselines=baselines, model=served,
        tolerances=report.tolerances(metrics),
        references=report.references(frame, FLAGS.flag_values_dict(), split_date),
        tables={**report.convergence_table(convergence), **tables},
        dataset={"name": name, "target": frame.target_name, "features": frame.feature_names,
                 "fingerprint": results.fingerprint(frame.dates.astype(np.int64),
                                                    frame.features, frame.target),
                 "splits": data.describe(frame, splits), "train_outlier_rate": rate,
                 "corrupted_training_targets": nets.train_target(rate)[1]},
        artifacts=[report.plot(run.path("predictions.png"), frame.dates[splits["test"]],
                               frame.target[splits["test"]], frame.target_name, plotted)],
        extra={"convergence": convergence})


if __name__ == "__main__":
    training.cli(train, smoke=SMOKE)
