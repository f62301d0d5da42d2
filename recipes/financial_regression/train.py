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

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import cli, results, stream, training

import numpy as np
import tensorflow as tf

from recipes.financial_regression import data, evaluate, model, report
from recipes.financial_regression.config import Config

RECIPE = "financial_regression"


@dataclasses.dataclass
class Days:
    """The networks' inputs on each split ("train", "validation", "test"): raw features
    `x[part]` [N, F] float32, and targets `y[part]` [N] float32 standardized with the
    training days' `mean` and `std`."""

    x: dict
    y: dict
    mean: float
    std: float


def days_of(frame: data.Frame, splits: dict) -> Days:
    mean = float(frame.target[splits["train"]].mean())
    std = float(frame.target[splits["train"]].std())
    return Days(x={part: frame.features[rows].astype(np.float32)
                   for part, rows in splits.items()},
                y={part: ((frame.target[rows] - mean) / std).astype(np.float32)
                   for part, rows in splits.items()}, mean=mean, std=std)


def train_target(days: Days, rate: float, outlier_scale: float,
                 seed: int) -> tuple[np.ndarray, int]:
    """Standardized training targets [N_train], a share `rate` corrupted (the same rows for
    every loss), and how many; validation and test targets are never corrupted."""
    if rate == 0:
        return days.y["train"], 0
    return data.corrupt(days.y["train"], rate, outlier_scale, seed + 7)


class Fitted(NamedTuple):
    """A trained network, its offset (standardized units), and its training model."""

    network: tf.keras.Model
    offset: float
    regressor: model.Regressor


def fit_network(run, config: Config, days: Days, name: str, kind: str, loss: str,
                rate: float = 0.0, seed: int = 0) -> Fitted:
    """Trains network `name` on training targets corrupted at `rate`, from seed
    --seed + `seed`, stopped on the validation loss (or loads it, if a killed run had
    finished it)."""
    tf.keras.utils.set_random_seed(config.seed + seed)  # same start whatever ran before
    with run.strategy.scope():
        network = model.build(kind, days.x["train"].astype(np.float64), config.hidden_units,
                              config.dropout, config.weight_decay, name)
        regressor = model.regressor(network, loss, config.huber_delta, config.learning_rate,
                                    config.delta_learning_rate, config.jit_compile)
    target = train_target(days, rate, config.outlier_scale, config.seed)[0]
    examples = tf.data.Dataset.from_tensor_slices((days.x["train"], target[:, None]))
    validation = tf.data.Dataset.from_tensor_slices(
        (days.x["validation"], days.y["validation"][:, None])).batch(4096)
    stop = model.ValidationStopping(
        str(run.path("best") / name / "weights"), report.val_losses(run, name),
        config.patience, config.stopping_tolerance, config.learning_rate,
        keep_best=kind == "mlp")
    training.fit(run, regressor, examples, epochs=config.epochs, validation_data=validation,
                 callbacks=[stop], name=name)
    # A Huber fit estimates a robust centre of skewed residuals, not their mean: the
    # mean validation residual moves it to the mean, which R² and MSE reward.
    offset = 0.0 if loss == "mse" else float(np.mean(
        days.y["validation"] - network(days.x["validation"]).numpy()[:, 0]))
    return Fitted(network, offset, regressor)


def serving(days: Days, fitted: list[Fitted]):
    """`model.serving` of the networks `fitted` (averaged): (served model, signature)."""
    return model.serving([one.network for one in fitted], days.mean, days.std,
                         [one.offset for one in fitted])


def predictions(served: tf.keras.Model, days: Days) -> dict:
    """Predictions in target units on validation and test: {part: [N]}."""
    return {part: model.predict(served, days.x[part]) for part in ("validation", "test")}


def ensemble(run, config: Config, days: Days, name: str, kind: str, loss: str, size: int,
             rate: float = 0.0):
    """`size` networks over seeds: the served ensemble and its signature, its predictions,
    the members' test predictions, and the first member's training model."""
    fitted = [fit_network(run, config, days, f"{name}_seed{seed}", kind, loss, rate, seed)
              for seed in range(size)]
    served, signature = serving(days, fitted)
    members = [model.predict(serving(days, [one])[0], days.x["test"]) for one in fitted]
    return served, signature, predictions(served, days), members, fitted[0].regressor


def cell_name(config: Config, loss: str, rate: float, seed: int) -> str:
    """The network of a robustness cell; a cell the run trains anyway (the model's loss or
    MSE at --train_outlier_rate) has that network's name, so `fit_network` loads it."""
    if rate == config.train_outlier_rate and loss == config.loss:
        return f"{config.model}_seed{seed}"
    if rate == config.train_outlier_rate and loss == "mse":
        return f"{config.model}_mse_seed{seed}"
    return f"robust_{loss}_{rate:g}_seed{seed}"


def robustness(run, config: Config, frame: data.Frame, splits: dict,
               days: Days) -> tuple[dict, dict]:
    """The robustness experiment (--robustness_rates): `report.robustness` of the test R²
    of one network per (loss, rate, seed) and of least squares per rate."""
    test = frame.target[splits["test"]]
    cells = {}
    for loss in model.LOSSES:
        for rate in config.rates:
            for seed in range(config.robustness_seeds):
                fitted = fit_network(run, config, days, cell_name(config, loss, rate, seed),
                                     config.model, loss, rate, seed)
                served = serving(days, [fitted])[0]
                cells[loss, rate, seed] = evaluate.scores(
                    test, model.predict(served, days.x["test"]))["test_r2"]
    least_squares = {rate: evaluate.least_squares(frame, splits, original_units(
        days, rate, config))["linear_lstsq"]["scores"]["test_r2"] for rate in config.rates}
    return report.robustness(cells, least_squares)


def original_units(days: Days, rate: float, config: Config) -> np.ndarray:
    """The training targets at corruption `rate`, in the target's own units [N_train]."""
    return (train_target(days, rate, config.outlier_scale, config.seed)[0] * days.std
            + days.mean)


def train(config: Config) -> dict:
    run = training.start(RECIPE, config)
    frame, name = data.load(config.dataset, date_column=config.date_column,
                            close_column=config.close_column, target=config.target,
                            features=config.features, lags=config.lags,
                            day_of_week=config.day_of_week, data_dir=config.data_dir)
    split_date = config.split_date or ("2008-01-01" if config.dataset == "sp500" else None)
    splits = data.split(frame, split_date, config.validation_fraction)
    if config.smoke:  # after the checks of the full data
        splits = data.smoke_subset(splits)
    # Checked here: fit_network writes (best weights) before training.fit would check it.
    stream.steps_per_epoch(len(splits["train"]), config.global_batch_size, "training days")
    print(f"[{RECIPE}] {name}: {len(frame.target)} days, {len(frame.feature_names)} features,"
          f" target {frame.target_name}; {data.describe(frame, splits)}", flush=True)

    days, rate = days_of(frame, splits), config.train_outlier_rate
    lstsq = evaluate.least_squares(frame, splits, original_units(days, rate, config))
    served, signature, predicted, members, first = ensemble(
        run, config, days, config.model, config.model, config.loss, config.ensemble_size, rate)
    metrics = evaluate.evaluate(frame, splits, predicted, members, lstsq, config.seed)
    if config.loss == "adaptive_huber":
        metrics["learned_delta"], metrics["learned_scale"] = first.delta_and_scale()
    baselines = {key: value["scores"] for key, value in lstsq.items()}
    plotted = {f"{config.model}, {config.loss}": predicted["test"]}
    comparisons = {"linear": 1}  # the linear model under MSE: does the loop converge?
    if config.loss != "mse":
        comparisons[config.model] = config.ensemble_size
    elif config.model == "linear":
        comparisons = {}
    for kind, size in comparisons.items():  # the same loop under MSE: linear, network
        _, _, other, other_members, _ = ensemble(run, config, days, f"{kind}_mse", kind,
                                                 "mse", size, rate)
        baselines[f"{kind}_mse"] = evaluate.evaluate(frame, splits, other, other_members,
                                                     lstsq, config.seed)
        plotted[f"{kind}, mse"] = other["test"]
    tables, drops = robustness(run, config, frame, splits, days)
    metrics.update(drops)

    training.save_model(run, served, serving=signature)
    np.savez(run.path("test_predictions.npz"), features=days.x["test"],
             target=frame.target[splits["test"]], prediction=predicted["test"])
    convergence = report.convergence(run, config.epochs, config.patience,
                                     config.stopping_tolerance)
    metrics.update(report.stopping_metrics(convergence, config.model))
    return training.finish(
        run, metrics=metrics, baselines=baselines, model=served, headline="test_r2",
        tolerances=report.tolerances(metrics),
        references=report.references(frame, config.target, config.features, config.lags,
                                     config.day_of_week, split_date),
        tables={**report.convergence_table(convergence), **tables},
        dataset={"name": name, "target": frame.target_name, "features": frame.feature_names,
                 "fingerprint": results.fingerprint(frame.dates.astype(np.int64),
                                                    frame.features, frame.target),
                 "splits": data.describe(frame, splits), "train_outlier_rate": rate,
                 "corrupted_training_targets": train_target(
                     days, rate, config.outlier_scale, config.seed)[1]},
        artifacts=[report.plot(run.path("predictions.png"), frame.dates[splits["test"]],
                               frame.target[splits["test"]], frame.target_name, plotted)],
        extra={"convergence": convergence})


if __name__ == "__main__":
    cli.main(Config, train)
