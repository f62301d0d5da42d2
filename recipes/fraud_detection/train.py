"""Fraud / rare-event detection: precision where it is asked for, on imbalanced data.

    python recipes/fraud_detection/train.py

Trains, from --num_seeds seeds each, a network per loss of --losses on ISLR `Caravan`
(CoIL 2000: 5,822 customers, 348 buy caravan insurance; ISLR's protocol, the first
1,000 rows test): weighted BCE, focal, BCE + soft precision, and Eban et al.'s
constrained objectives, precision at recall ≥ --target_recall and recall at precision ≥
--target_precision (`common.losses.constrained`, Lagrange multiplier trained by
gradient ascent). Beside them, on the same rows: logistic regression and
HistGradientBoostingClassifier (scikit-learn). Settings and thresholds are chosen on a
validation split of the training rows; then (--refit, the default) every model is refit
on all training rows with them. It reports test precision and recall at the threshold
chosen on validation for --target_recall, hits@k and precision@k of the k
highest-scored test rows (--top_k, 33 as ISLR), PR-AUC, and paired differences against
weighted BCE and logistic regression. The headline network (--loss, first seed) is
saved as model.keras and a SavedModel that scores raw feature columns.

Other data: --dataset=islr_default (ISLR Default), --dataset=csv:PATH (Kaggle
creditcard.csv layout by default, any CSV with --label_column), --test_dataset=csv:PATH
(train on every row of --dataset, test on the file).
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from absl import flags

from common import flags as common_flags
from common import results, training
from recipes.fraud_detection import data, evaluate, model, report

RECIPE = "fraud_detection"
FLAGS = flags.FLAGS
SMOKE = {"epochs": 2, "num_seeds": 1, "global_batch_size": 128,
         "losses": ["weighted_bce", "bce_soft_precision", "precision_at_recall"]}
SMOKE_RESAMPLES = 200  # bootstrap resamples under --smoke (1,000 otherwise)
COMPARISONS = ("network_weighted_bce", "logistic_regression")

common_flags.set_defaults(epochs=30, global_batch_size=256, learning_rate=3e-3,
                          dataset="caravan")
flags.DEFINE_enum("loss", "precision_at_recall", model.LOSSES,
                  "The headline network's loss (always trained, saved as model.keras).")
flags.DEFINE_list("losses", ["weighted_bce", "focal", "bce_soft_precision",
                             "precision_at_recall", "recall_at_precision"],
                  "Losses of the networks trained and compared in the same record.")
flags.DEFINE_enum("model", "linear", ("linear", "mlp"), "Network: one linear layer (logistic-"
                  "regression shaped), or an MLP.")
flags.DEFINE_list("hidden_units", ["32"], "Hidden layer widths of the MLP.")
# 1.0: on Caravan's training rows (5-fold cross-validation, no test row) every loss gained
# from a strong penalty, as logistic regression does from a small C (README).
flags.DEFINE_float("weight_decay", 1.0, "L2 penalty on the kernels.")
# Focal loss ends ~40x smaller than weighted BCE on Caravan (0.03 against 1.2): the same
# penalty flattens its network to a near-constant score; 0.01 was its best (README).
flags.DEFINE_float("focal_weight_decay", 0.01, "L2 penalty on the focal network's kernels "
                   "(--weight_decay for the others).")
flags.DEFINE_string("label_column", None, "Binary label column (0/1, true/false, yes/no); "
                    "default: Purchase (Caravan), default (ISLR Default), Class (a CSV).")
flags.DEFINE_list("categorical_columns", [], "Feature columns to one-hot encode (default: "
                  "student for ISLR Default, none otherwise: every other column is numeric).")
flags.DEFINE_string("test_dataset", None, "csv:PATH: test on this file (same columns); "
                    "every row of --dataset then trains (validation carved from them).")
flags.DEFINE_float("target_recall", 0.2, "Recall the operating point must reach on "
                   "validation, and precision_at_recall's constraint (0.2: ISLR's Caravan "
                   "logistic regression flags 33 and catches 11 of 59 buyers, 19 %).")
flags.DEFINE_float("target_precision", 0.1, "recall_at_precision's constraint.")
flags.DEFINE_integer("top_k", 33, "k of hits@k and precision@k (ISLR: 33).", lower_bound=1)
flags.DEFINE_float("pos_weight", None, "Weight of positives in weighted BCE (default: "
                   "negatives / positives of the training split).")
flags.DEFINE_float("precision_weight", 1.0, "λ of the soft-precision term.")
flags.DEFINE_float("focal_alpha", 0.25, "Focal loss weight of positives.")
flags.DEFINE_float("focal_gamma", 2.0, "Focal loss focusing exponent.")
flags.DEFINE_float("dual_learning_rate", 0.1, "Step of the ascent on the Lagrange "
                   "multiplier of the constrained losses.")
flags.DEFINE_enum("surrogate", "hinge", ("hinge", "logistic"), "Bound of the constrained "
                  "losses' counts.")
flags.DEFINE_bool("refit", True, "Refit every model (networks and baselines) on every "
                  "training row, validation's included, with the settings and threshold "
                  "chosen on validation, and score the test rows with the refit models.")
flags.DEFINE_integer("num_seeds", 3, "Train every network from seeds seed..seed+n-1.",
                     lower_bound=1)
# Finite, and the upper bounds only refuse what can be nothing but a typo: the losses are
# O(1) per row, so a penalty or term weight above 1e3 buries them (1.0 is the strong
# default penalty), as a multiplier step 1e4x the default throws λ about; (1 - p)^γ with
# γ > 20 zeroes every gradient but the worst rows'; no usable training split has
# a million negatives per positive.
for name in ("weight_decay", "focal_weight_decay", "precision_weight",
             "dual_learning_rate"):
    common_flags.check_range(name, 0.0, 1e3)
common_flags.check_range("focal_gamma", 0.0, 20.0)
common_flags.check_range("focal_alpha", 0.0, 1.0)
common_flags.check_range("pos_weight", 0.0, 1e6, low_open=True, optional=True)
for name in ("target_recall", "target_precision"):
    common_flags.check_range(name, 0.0, 1.0, low_open=True)
common_flags.check_widths("hidden_units")
flags.register_validator("losses", lambda values: set(values) <= set(model.LOSSES),
                         message=f"--losses must be among {', '.join(model.LOSSES)}")
flags.register_validator("test_dataset", lambda value: value is None or value.startswith(
    "csv:"), message="--test_dataset must be csv:PATH")


def weight_decay(loss_name: str) -> float:
    """The L2 penalty of `loss_name`'s network."""
    return FLAGS.focal_weight_decay if loss_name == "focal" else FLAGS.weight_decay


def train_network(run, rows: data.Part, loss_name: str, seed: int, pos_weight: float,
                  name: str):
    """Trains one network on `rows` (resumable; loaded if this run already finished it).

    The networks of one seed start from the same hidden weights and see the same
    stratified batches: only the loss (and the prior bias it implies) differs.
    Returns the network and its final Lagrange multiplier (NaN for other losses).
    """
    tf.keras.utils.set_random_seed(seed)
    positives = int(rows.labels.sum())
    with run.strategy.scope():
        network = model.build_network(
            rows.features, FLAGS.model, [int(units) for units in FLAGS.hidden_units],
            weight_decay(loss_name), model.prior_logit(loss_name, positives,
                                                       len(rows) - positives, pos_weight,
                                                       FLAGS.focal_alpha))
        loss = model.make_loss(
            loss_name, pos_weight, precision_weight=FLAGS.precision_weight,
            focal_alpha=FLAGS.focal_alpha, focal_gamma=FLAGS.focal_gamma,
            target_recall=FLAGS.target_recall, target_precision=FLAGS.target_precision,
            dual_learning_rate=FLAGS.dual_learning_rate, surrogate=FLAGS.surrogate)
        trained = model.trainable(network, loss, FLAGS.learning_rate, FLAGS.jit_compile)
    training.fit(run, trained, epochs=FLAGS.epochs, name=name,
                 stream=lambda first: data.stratified_batches(
                     rows, run.global_batch_size, seed, first_epoch=first))
    multiplier = getattr(trained, "multiplier", None)
    return network, float("nan") if multiplier is None else float(multiplier.numpy())


def train() -> dict:
    run = training.start(RECIPE, common_flags.settings())
    # The data is checked in full before anything is written, then cut down for --smoke.
    splits = data.load(FLAGS.dataset, FLAGS.label_column, FLAGS.categorical_columns,
                       FLAGS.seed, FLAGS.test_dataset)
    if FLAGS.smoke:
        splits = data.smoke_subset(splits, FLAGS.seed)
    if FLAGS.top_k > len(splits.test):
        raise ValueError(f"--top_k={FLAGS.top_k} is larger than the test set "
                         f"({len(splits.test)} rows)")
    positives = int(splits.train.labels.sum())
    pos_weight = FLAGS.pos_weight or (len(splits.train) - positives) / positives
    print(f"[{RECIPE}] {splits.name}: {splits.sizes()}; pos_weight={pos_weight:.2f}",
          flush=True)

    seeds = [FLAGS.seed + index for index in range(FLAGS.num_seeds)]
    losses = list(dict.fromkeys([*FLAGS.losses, FLAGS.loss]))
    # Every network first fits the training split: its validation scores set its threshold.
    # With --refit the same settings (epochs, seed, pos_weight) then fit every training row
    # and those networks score the test rows at that threshold (as scikit-learn's
    # TunedThresholdClassifierCV does): the 20 % held out for choosing is not lost to the
    # final models, which are fitted as ISLR fits its own (on every training row).
    fits = {(loss_name, seed): train_network(run, splits.train, loss_name, seed, pos_weight,
                                             f"network_{loss_name}_seed{seed}")
            for loss_name in losses for seed in seeds}
    validation = {key: model.scores(network, splits.validation.features)
                  for key, (network, _) in fits.items()}
    if FLAGS.refit:
        rows = data.training_rows(splits)
        fits = {(loss_name, seed): train_network(run, rows, loss_name, seed, pos_weight,
                                                 f"network_{loss_name}_seed{seed}_refit")
                for loss_name, seed in fits}
    test = {key: model.scores(network, splits.test.features)
            for key, (network, _) in fits.items()}
    scored = [evaluate.Scored(f"network_{loss_name}", f"{loss_name} ({FLAGS.model}, weight "
                              f"decay {weight_decay(loss_name):g})",
                              np.stack([validation[loss_name, seed] for seed in seeds], 1),
                              np.stack([test[loss_name, seed] for seed in seeds], 1))
              for loss_name in losses]
    multipliers = {loss_name: [fits[loss_name, seed][1] for seed in seeds]
                   for loss_name in losses}
    headline_network = fits[FLAGS.loss, seeds[0]][0]
    headline_scores = test[FLAGS.loss, seeds[0]]
    x_train, x_validation, x_test = data.encoded(splits)
    y_train, y_validation = splits.train.labels, splits.validation.labels
    refit = None
    if FLAGS.refit:  # the baselines too, standardised with every training row as the networks
        x_rows, _, x_test = data.encoded(splits, rows)
        refit = (x_rows, rows.labels)
    scored.append(evaluate.logistic_regression(x_train, y_train, x_validation, y_validation,
                                               x_test, refit))
    scored.append(evaluate.gradient_boosting(x_train, y_train, x_validation, y_validation,
                                             x_test, FLAGS.seed, refit))
    values = evaluate.evaluate(scored, y_validation, splits.test.labels, FLAGS.target_recall,
                               FLAGS.top_k, COMPARISONS, FLAGS.seed,
                               resamples=SMOKE_RESAMPLES if FLAGS.smoke else evaluate.RESAMPLES)
    per_seed = {f"network_{loss_name}": evaluate.seed_points(
        scores, y_validation, splits.test.labels, FLAGS.target_recall, FLAGS.top_k,
        multipliers[loss_name]) for loss_name, scores in zip(losses, scored)}
    training.save_model(run, headline_network, serving=model.serving(headline_network))
    np.save(run.path("test_scores.npy"), headline_scores)
    headline = f"network_{FLAGS.loss}"
    return training.finish(
        run,
        metrics=values[headline],
        baselines={name: value for name, value in values.items() if name != headline},
        dataset={"name": splits.name, "label_column": splits.label_column,
                 "split": splits.split, "numeric_columns": splits.numeric_columns,
                 "categorical_columns": splits.categorical_columns,
                 "fingerprint": results.fingerprint(x_train, y_train, x_test,
                                                    splits.test.labels),
                 **splits.sizes()},
        model=headline_network,
        tolerances={"pr_auc": 0.03, "precision": 0.03, "hits_at_k": 2},
        references=report.references(FLAGS.dataset, splits.numeric_columns),
        tables={"models": report.models_table(values, {m.name: m.what for m in scored},
                                              headline),
                "paired_differences": report.differences_table(values[headline], headline),
                "seeds": report.seeds_table(per_seed, seeds)},
        artifacts=[report.plot_pr_curves(run.path("pr_curve.png"), splits.test.labels,
                                         scored, values, headline)],
        extra={"headline": "precision",
               "operating_point_rule": "largest threshold reaching recall "
                                       f"{FLAGS.target_recall} on the validation split",
               "refit": "every model refit on every training row (validation's included) "
                        "with the settings and threshold chosen on validation; the refit "
                        "models score the test rows" if FLAGS.refit else
                        "none: the models fitted on the training split score the test rows",
               "top_k": FLAGS.top_k, "pos_weight": pos_weight,
               "seed_rule": "each network metric is the mean over its seeds; intervals "
                            "bootstrap the test rows (paired across models)"},
    )


if __name__ == "__main__":
    training.cli(train, smoke=SMOKE)
