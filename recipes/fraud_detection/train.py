"""Fraud / rare-event detection: precision where it is asked for, on imbalanced data.

    .venv/bin/python recipes/fraud_detection/train.py

Trains, from --num_seeds seeds each, a network per loss of --losses on ISLR `Caravan`
(CoIL 2000: 5,822 customers, 348 buy caravan insurance; ISLR's protocol, the first
1,000 rows test): weighted BCE, focal, BCE + soft precision, and Eban et al.'s
constrained objectives, precision at recall ≥ --target_recall and recall at precision ≥
--target_precision (`common.losses.constrained`, Lagrange multiplier trained by
gradient ascent). Beside them, on the same rows: logistic regression and
HistGradientBoostingClassifier (scikit-learn). Every model's regularisation is chosen by
repeated stratified 5-fold cross-validation over all training rows (the same folds for
all, PR-AUC), its threshold on a validation split; then (--refit, the default) every
model is refit on all training rows with them. It reports test precision and recall at
the threshold chosen on validation for --target_recall, hits@k and precision@k of the k
highest-scored test rows (--top_k, 33 as ISLR), PR-AUC, and paired differences against
weighted BCE and logistic regression. The headline network (--loss, first seed) is
saved as model.keras and a SavedModel that scores raw feature columns.

Other data: --dataset=islr_default (ISLR Default), --dataset=csv:PATH (Kaggle
creditcard.csv layout by default, any CSV with --label_column), --test_dataset=csv:PATH
(train on every row of --dataset, test on the file).
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import cli, intervals, results, training

import numpy as np
import tensorflow as tf

from recipes.fraud_detection import data, evaluate, model, report
from recipes.fraud_detection.config import Config

RECIPE = "fraud_detection"
COMPARISONS = ("network_weighted_bce", "logistic_regression")


def _network(config: Config, rows: data.Part, loss_name: str, weight_decay,
             pos_weight: float):
    """(network, its compiled trainable model) for `loss_name`, standardised on `rows`."""
    positives = int(rows.labels.sum())
    network = model.build(
        rows.features, config.model, config.hidden_units, weight_decay,
        model.prior_logit(loss_name, positives, len(rows) - positives, pos_weight,
                          config.focal_alpha))
    loss = model.make_loss(
        loss_name, pos_weight, precision_weight=config.precision_weight,
        focal_alpha=config.focal_alpha, focal_gamma=config.focal_gamma,
        target_recall=config.target_recall, target_precision=config.target_precision,
        dual_learning_rate=config.dual_learning_rate, surrogate=config.surrogate)
    return network, model.trainable(network, loss, config.learning_rate, config.jit_compile)


def cross_validate_networks(run, config: Config, rows: data.Part, folds: list, losses: list,
                            pos_weight: float) -> dict:
    """{loss: evaluate.selection of its weight decay}, on the folds of every model.

    One seed, --epochs, the same batches as the final fits. One network per loss is built
    and traced once (weight decay a variable, standardised on every training row) and
    reset to its initial weights, optimizer state and λ for each (value, fold): rebuilding
    costs ~2 s a fit, 30 epochs ~0.3 s. Each held-out PR-AUC is kept in cv_networks.json,
    so a killed run resumes the cross-validation where it stopped.
    """
    grid = list(config.weight_decays)
    if len(grid) == 1:
        return {loss_name: {"grid": grid, "chosen": grid[0], "folds": 0,
                            "note": "one value given: not cross-validated"}
                for loss_name in losses}
    path = run.path("cv_networks.json")
    done = results.load(path) if path.exists() else {}
    chosen = {}
    for loss_name in losses:
        tf.keras.utils.set_random_seed(config.seed)
        with run.strategy.scope():
            decay = tf.Variable(0.0, trainable=False, dtype=tf.float32)
            network, trained = _network(config, rows, loss_name, decay, pos_weight)
        initial = trained.get_weights()
        for value in grid:
            for index, (fit, held) in enumerate(folds):
                key = f"{loss_name}/{value:g}/{index}"
                if key in done:
                    continue
                decay.assign(value)
                trained.set_weights(initial)
                for variable in trained.optimizer.variables:  # Adam's moments and step
                    variable.assign(tf.zeros_like(variable))
                stream, steps = data.stream(rows.subset(fit), run.global_batch_size,
                                            config.seed)(0)
                trained.fit(stream, steps_per_epoch=steps, epochs=config.epochs, verbose=0)
                done[key] = float(evaluate.average_precision(
                    rows.labels[held], model.predict(network, rows.subset(held).features))[0])
                if not np.isfinite(done[key]):
                    raise FloatingPointError(f"cross-validation of {loss_name} at weight "
                                             f"decay {value:g} gave non-finite scores: check "
                                             "the learning rate and the data")
                results.write(done, path)
        chosen[loss_name] = evaluate.selection(grid, {value: [
            done[f"{loss_name}/{value:g}/{index}"] for index in range(len(folds))]
            for value in grid})
        print(f"[{RECIPE}] {loss_name}: weight decay {chosen[loss_name]['chosen']:g} "
              f"(cross-validated PR-AUC {chosen[loss_name]['cv_pr_auc']:.4f})", flush=True)
    return chosen


def fit_network(run, config: Config, rows: data.Part, loss_name: str, weight_decay: float,
                seed: int, pos_weight: float, name: str):
    """Trains one network on `rows` (resumable; loaded if this run already finished it).

    The networks of one seed start from the same hidden weights and see the same
    stratified batches: only the loss (and the prior bias it implies) differs.
    Returns the network and its final Lagrange multiplier (NaN for other losses).
    """
    tf.keras.utils.set_random_seed(seed)
    with run.strategy.scope():
        network, trained = _network(config, rows, loss_name, weight_decay, pos_weight)
    training.fit(run, trained, epochs=config.epochs, name=name,
                 stream=data.stream(rows, run.global_batch_size, seed))
    multiplier = getattr(trained, "multiplier", None)
    return network, float("nan") if multiplier is None else float(multiplier.numpy())


def train(config: Config) -> dict:
    run = training.start(RECIPE, config)
    # The data is checked in full before anything is written, then cut down for --smoke.
    splits = data.load(config.dataset, config.label_column, config.categorical_columns,
                       config.seed, config.test_dataset)
    if config.smoke:
        splits = data.smoke_subset(splits, config.seed)
    if config.top_k > len(splits.test):
        raise ValueError(f"--top_k={config.top_k} is larger than the test set "
                         f"({len(splits.test)} rows)")
    positives = int(splits.train.labels.sum())
    pos_weight = config.pos_weight or (len(splits.train) - positives) / positives
    print(f"[{RECIPE}] {splits.name}: {splits.sizes()}; pos_weight={pos_weight:.2f}",
          flush=True)

    seeds = [config.seed + index for index in range(config.num_seeds)]
    losses = list(dict.fromkeys([*config.losses, config.loss]))
    # Regularisation is chosen first, by cross-validation over every training row (the
    # same folds for networks and baselines); the threshold is then chosen on validation.
    rows = data.training_rows(splits)
    folds = evaluate.cv_folds(rows.labels, config.cv_repeats, config.seed)
    chosen = {f"network_{loss_name}": value for loss_name, value in cross_validate_networks(
        run, config, rows, folds, losses, pos_weight).items()}
    decay = {loss_name: chosen[f"network_{loss_name}"]["chosen"] for loss_name in losses}
    # Every network first fits the training split: its validation scores set its threshold.
    # With --refit the same settings (epochs, seed, pos_weight) then fit every training row
    # and those networks score the test rows at that threshold (as scikit-learn's
    # TunedThresholdClassifierCV does): the 20 % held out for choosing is not lost to the
    # final models, which are fitted as ISLR fits its own (on every training row).
    fits = {(loss_name, seed): fit_network(run, config, splits.train, loss_name,
                                           decay[loss_name], seed, pos_weight,
                                           f"network_{loss_name}_seed{seed}")
            for loss_name in losses for seed in seeds}
    validation = {key: model.predict(network, splits.validation.features)
                  for key, (network, _) in fits.items()}
    if config.refit:
        fits = {(loss_name, seed): fit_network(run, config, rows, loss_name,
                                               decay[loss_name], seed, pos_weight,
                                               f"network_{loss_name}_seed{seed}_refit")
                for loss_name, seed in fits}
    test = {key: model.predict(network, splits.test.features)
            for key, (network, _) in fits.items()}
    scored = [evaluate.Scored(f"network_{loss_name}", f"{loss_name} ({config.model}, weight "
                              f"decay {decay[loss_name]:g})",
                              np.stack([validation[loss_name, seed] for seed in seeds], 1),
                              np.stack([test[loss_name, seed] for seed in seeds], 1))
              for loss_name in losses]
    multipliers = {loss_name: [fits[loss_name, seed][1] for seed in seeds]
                   for loss_name in losses}
    headline_network = fits[config.loss, seeds[0]][0]
    headline_scores = test[config.loss, seeds[0]]
    x_train, x_validation, x_test = data.encoded(splits)
    y_train, y_validation = splits.train.labels, splits.validation.labels
    # The baselines' folds are the networks' (rows in the same order), standardised with
    # every training row as the networks in the cross-validation and the refit.
    x_rows, _, x_refit_test = data.encoded(splits, rows)
    cv = (x_rows, rows.labels, folds)
    refit = (x_rows, rows.labels) if config.refit else None
    baseline_test = x_refit_test if config.refit else x_test
    for baseline, selected in (
            evaluate.logistic_regression(cv, x_train, y_train, x_validation, baseline_test,
                                         refit),
            evaluate.gradient_boosting(cv, x_train, y_train, x_validation, baseline_test,
                                       config.seed, refit, config.SMOKE_BOOSTING_GRID
                                       if config.smoke else evaluate.BOOSTING_GRID)):
        scored.append(baseline)
        chosen[baseline.name] = selected
    values = evaluate.evaluate(
        scored, y_validation, splits.test.labels, config.target_recall, config.top_k,
        COMPARISONS, config.seed,
        resamples=config.SMOKE_RESAMPLES if config.smoke else evaluate.RESAMPLES)
    per_seed = {f"network_{loss_name}": evaluate.seed_points(
        scores, y_validation, splits.test.labels, config.target_recall, config.top_k,
        multipliers[loss_name]) for loss_name, scores in zip(losses, scored)}
    training.save_model(run, headline_network, serving=model.serving(headline_network))
    np.save(run.path("test_scores.npy"), headline_scores)
    headline_model = f"network_{config.loss}"
    return training.finish(
        run,
        metrics=values[headline_model],
        baselines={name: value for name, value in values.items() if name != headline_model},
        dataset={"name": splits.name, "label_column": splits.label_column,
                 "split": splits.split, "numeric_columns": splits.numeric_columns,
                 "categorical_columns": splits.categorical_columns,
                 "fingerprint": results.fingerprint(x_train, y_train, x_test,
                                                    splits.test.labels),
                 **splits.sizes()},
        model=headline_network,
        # A hit is one customer; a precision moves by ~0.01 when one of the ~80 flagged
        # rows changes: the floors of the seed spread.
        tolerances=intervals.seed_tolerances(
            {metric: [point[metric] for point in per_seed[headline_model].values()]
             for metric in ("pr_auc", "precision", "hits_at_k")},
            one_seed={"pr_auc": 0.03, "precision": 0.03, "hits_at_k": 2},
            floors={"precision": 0.01, "hits_at_k": 1.0}),
        references=report.references(config.dataset, splits.numeric_columns),
        tables={"models": report.models_table(values, {m.name: m.what for m in scored},
                                              headline_model),
                "paired_differences": report.differences_table(values[headline_model],
                                                               headline_model),
                "seeds": report.seeds_table(per_seed, seeds)},
        artifacts=[report.plot_pr_curves(run.path("pr_curve.png"), splits.test.labels,
                                         scored, values, headline_model)],
        headline="precision",
        extra={
            "selection": {
                "rule": f"RepeatedStratifiedKFold(n_splits={evaluate.FOLDS}, n_repeats="
                        f"{config.cv_repeats}, random_state={config.seed}) over every "
                        f"training row ({len(rows)}), the same folds for every model; each "
                        "grid value scored by its mean held-out PR-AUC (SD: over the folds); "
                        f"networks: seed {config.seed}, {config.epochs} epochs, as the final "
                        "fits",
                **chosen},
            "operating_point_rule": "largest threshold reaching recall "
                                    f"{config.target_recall} on the validation split",
            "refit": "every model refit on every training row (validation's included) with "
                     "the cross-validated settings and the threshold chosen on validation; "
                     "the refit models score the test rows" if config.refit else
                     "none: the models fitted on the training split score the test rows",
            "top_k": config.top_k, "pos_weight": pos_weight,
            "seed_rule": "each network metric is the mean over its seeds; intervals "
                         "bootstrap the test rows (paired across models)"},
    )


if __name__ == "__main__":
    cli.main(Config, train)
