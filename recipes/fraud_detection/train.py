"""Fraud detection: weighted BCE plus a differentiable soft-precision term, rare positives.

    python recipes/fraud_detection/train.py

Trains an MLP on ISLR `Default` (10,000 card holders, 333 defaults) with the loss
weighted BCE + λ·(1 − soft precision) (`common.losses.BCEWithSoftPrecision`), chooses the
threshold on the validation split for `--target_recall`, and reports on the test split
what a fraud team looks at: PR-AUC, ROC-AUC, and frauds caught (TP), missed (FN), good
customers flagged (FP) at that operating point. In the same run, as baselines: logistic
regression (scikit-learn) and the same network trained with plain BCE and with weighted
BCE alone (the headline loss without its precision term), all on the same split, batches
and initial weights.

Other data: `--dataset=csv:creditcard.csv` (Kaggle layout, split by time order),
`--dataset=csv:PATH --label_column=NAME` (any CSV), `--dataset=synthetic`.
Other losses: `--loss=bce|weighted_bce|focal|bce_soft_precision`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import common  # noqa: E402  (Keras 2 before TensorFlow)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from common import flags as common_flags  # noqa: E402
from common import results, training  # noqa: E402
from recipes.fraud_detection import data, model, report  # noqa: E402

RECIPE = Path(__file__).resolve().parent.name
FLAGS = flags.FLAGS
SMOKE_EPOCHS = 3
BASELINE_LOSSES = ("bce", "weighted_bce")


def _is_non_negative_number(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


common_flags.set_defaults(epochs=20, global_batch_size=512, learning_rate=3e-3,
                          dataset="default")
flags.DEFINE_enum("loss", "bce_soft_precision", model.LOSSES, "Training loss of the network.")
flags.DEFINE_string("label_column", None,
                    "Binary label column (default: `default` for ISLR Default, `Class` for "
                    "a CSV, as in Kaggle's creditcard.csv).")
flags.DEFINE_float("target_recall", 0.8,
                   "Choose the threshold on the validation split to reach this recall.")
flags.DEFINE_float("threshold", None,
                   "A fixed score threshold in [0, 1] instead of --target_recall.")
flags.DEFINE_float("pos_weight", None,
                   "Weight of positives in weighted BCE (default: negatives / positives "
                   "of the training split).")
flags.DEFINE_float("precision_weight", 1.0, "λ of the soft-precision term.", lower_bound=0.0)
flags.DEFINE_integer("num_seeds", 3,
                     "Train every network from seeds seed..seed+n-1 (1 under --smoke); the "
                     "headline metrics are seed's, the record adds the mean and spread.",
                     lower_bound=1)
flags.DEFINE_list("sweep_precision_weights", [],
                  "Also train bce_soft_precision networks with these λ (every seed), for "
                  "the record's sweep table; λ = 0 is weighted BCE, already a baseline.")
flags.DEFINE_float("focal_alpha", 0.25, "Focal loss weight of positives.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("focal_gamma", 2.0, "Focal loss focusing exponent.", lower_bound=0.0)
flags.register_validator("target_recall", lambda value: 0.0 < value <= 1.0,
                         message="--target_recall must be in (0, 1]")
flags.register_validator("threshold", lambda value: value is None or 0.0 <= value <= 1.0,
                         message="--threshold must be in [0, 1]")
flags.register_validator("pos_weight", lambda value: value is None or value > 0,
                         message="--pos_weight must be > 0")
flags.register_validator(
    "sweep_precision_weights",
    lambda values: all(_is_non_negative_number(value) for value in values),
    message="--sweep_precision_weights must be numbers >= 0, e.g. 5,20")
flags.register_validator(
    "dataset",
    lambda value: value in ("default", "synthetic") or str(value).startswith("csv:"),
    message="--dataset must be default, synthetic or csv:PATH")


def train_network(run, splits, name: str, loss_name: str, precision_weight: float,
                  pos_weight: float, epochs: int, seed: int) -> tf.keras.Model:
    """Trains the MLP with `loss_name` on stratified batches (resumable, own backup).

    The networks of one seed share initial hidden weights and see the same batches:
    only the loss (and the prior bias it implies) differs.
    """
    name += f"_seed{seed}" if seed != FLAGS.seed else ""
    tf.keras.utils.set_random_seed(seed)
    positives = int(splits.y_train.sum())
    negatives = len(splits.y_train) - positives
    with run.strategy.scope():
        net = model.build_model(
            splits.x_train.shape[1],
            initial_bias=model.prior_logit(loss_name, positives, negatives, pos_weight,
                                           FLAGS.focal_alpha))
        net.compile(
            optimizer=tf.keras.optimizers.Adam(FLAGS.learning_rate),
            loss=model.make_loss(loss_name, pos_weight, precision_weight,
                                 FLAGS.focal_alpha, FLAGS.focal_gamma),
            metrics=[tf.keras.metrics.AUC(curve="PR", from_logits=True, name="pr_auc")],
            jit_compile=FLAGS.jit_compile)
    stream, steps = data.stratified_batches(
        splits.x_train, splits.y_train, FLAGS.global_batch_size, seed,
        first_epoch=training.saved_epoch(run, name))
    validation = tf.data.Dataset.from_tensor_slices(
        (splits.x_val, splits.y_val.reshape(-1, 1).astype(np.float32))
    ).batch(FLAGS.global_batch_size)
    training.fit(run, net, stream, steps_per_epoch=steps, validation_data=validation,
                 epochs=epochs, name=name)
    return net


def evaluate(splits, val_scores, test_scores) -> dict:
    """Operating point on test at the threshold chosen on validation (or --threshold)."""
    if FLAGS.threshold is not None:
        threshold = FLAGS.threshold
    else:
        threshold = model.choose_threshold(splits.y_val, val_scores, FLAGS.target_recall)
    point = model.operating_point(splits.y_test, test_scores, threshold)
    on_validation = model.operating_point(splits.y_val, val_scores, threshold)
    point["val_recall"] = on_validation["recall"]
    point["val_precision"] = on_validation["precision"]
    return point


def train() -> dict:
    if FLAGS.smoke and FLAGS.global_batch_size > 128:
        FLAGS.global_batch_size = 128  # the smoke split has ~1,800 training rows
    # Data first: it is NumPy only, and bad input stops here before a run directory exists.
    splits = data.load(FLAGS.dataset, FLAGS.label_column, FLAGS.seed, smoke=FLAGS.smoke)
    positives = int(splits.y_train.sum())
    pos_weight = FLAGS.pos_weight or (len(splits.y_train) - positives) / positives
    steps = len(splits.y_train) // FLAGS.global_batch_size
    if FLAGS.loss == "bce_soft_precision" and positives < steps:
        raise ValueError(
            f"the training split has {positives} positives for {steps} steps per epoch: the "
            "soft-precision term needs one in every batch; raise --global_batch_size to "
            f"at least {len(splits.y_train) // positives + 1}")
    epochs = min(FLAGS.epochs, SMOKE_EPOCHS) if FLAGS.smoke else FLAGS.epochs
    sweep = [float(weight) for weight in FLAGS.sweep_precision_weights]
    if sweep and FLAGS.loss != "bce_soft_precision":
        raise ValueError("--sweep_precision_weights needs --loss=bce_soft_precision")

    run = training.start(RECIPE)
    print(f"[{RECIPE}] {splits.name}: {splits.sizes()}; pos_weight={pos_weight:.2f}",
          flush=True)
    seeds = [FLAGS.seed + index for index in range(1 if FLAGS.smoke else FLAGS.num_seeds)]
    headline = f"network_{FLAGS.loss}"
    # (name, loss, λ): baselines, the λ sweep, and the headline last (the record's step
    # timing is the last model's).
    networks = [(f"network_{b}", b, 0.0) for b in BASELINE_LOSSES if b != FLAGS.loss]
    networks += [(f"network_bce_soft_precision_lambda{weight:g}", "bce_soft_precision", weight)
                 for weight in sweep if weight != FLAGS.precision_weight]
    networks += [(headline, FLAGS.loss, FLAGS.precision_weight)]
    scored = {}  # name -> (loss, validation scores, test scores) of the first seed
    per_seed = {name: [] for name, _, _ in networks}  # test operating points per seed
    for seed in seeds:
        for name, loss_name, weight in networks:
            net = train_network(run, splits, name, loss_name, weight, pos_weight, epochs,
                                seed)
            val, test = (model.probabilities(net, splits.x_val),
                         model.probabilities(net, splits.x_test))
            per_seed[name].append(evaluate(splits, val, test))
            if seed == FLAGS.seed and "_lambda" not in name:
                scored[name] = (loss_name, val, test)
            if seed == FLAGS.seed and name == headline:
                headline_net = net
    logistic = LogisticRegression(max_iter=2000).fit(splits.x_train, splits.y_train)
    scored["logistic_regression"] = ("log loss (scikit-learn)",
                                     logistic.predict_proba(splits.x_val)[:, 1],
                                     logistic.predict_proba(splits.x_test)[:, 1])

    points = {name: evaluate(splits, val, test) for name, (_, val, test) in scored.items()}
    metrics = {key: points[headline][key] for key in
               ("pr_auc", "roc_auc", "precision", "recall", "tp", "fp", "fn", "tn",
                "threshold", "val_recall", "val_precision")}
    baselines = {name: {key: point[key] for key in metrics}
                 for name, point in points.items() if name != headline}
    if len(seeds) > 1:  # training noise: the same networks from other seeds
        for name, points_of_seeds in per_seed.items():
            target = metrics if name == headline else baselines.setdefault(name, {})
            for key in ("precision", "recall", "fp", "pr_auc"):
                values = [point[key] for point in points_of_seeds]
                target[f"{key}_seed_mean"] = float(np.mean(values))
                target[f"{key}_seed_std"] = float(np.std(values, ddof=1))
    differences = report.paired_differences(splits.y_test, scored, points, headline,
                                            FLAGS.seed)
    for name, by_metric in differences.items():
        for metric, (value, low, high) in by_metric.items():
            metrics[f"{metric}_minus_{name}"] = value
            metrics[f"{metric}_minus_{name}_ci_low"] = low
            metrics[f"{metric}_minus_{name}_ci_high"] = high
    tables = {"operating_point": report.operating_point_table(scored, points, headline),
              "paired_differences": report.differences_table(differences, headline)}
    if len(seeds) > 1:
        tables["seeds"] = report.seeds_table(per_seed, seeds)
    if sweep:
        tables["precision_weight_sweep"] = report.sweep_table(
            per_seed, headline, FLAGS.precision_weight, FLAGS.loss)
    if FLAGS.dataset == "default":
        tables["islr_check"] = report.islr_check_table(data.islr_default())
    artifacts = [
        report.plot_pr_curves(run.model_dir / "pr_curve.png", splits.y_test, scored, points,
                              headline, None if FLAGS.threshold is not None
                              else FLAGS.target_recall),
        report.plot_confusion(run.model_dir / "confusion_matrix.png", points[headline],
                              f"{headline} on the test split"),
    ]
    return training.finish(
        run,
        metrics=metrics,
        dataset={"name": splits.name, "label_column": splits.label_column,
                 "split": splits.split, "features": splits.feature_names,
                 "fingerprint": results.fingerprint(splits.x_train, splits.y_train,
                                                    splits.x_val, splits.y_val,
                                                    splits.x_test, splits.y_test),
                 **splits.sizes()},
        model=headline_net,
        tolerances={"pr_auc": 0.03, "roc_auc": 0.01, "precision": 0.05, "recall": 0.05},
        baselines=baselines,
        references=report.references(FLAGS.dataset, splits.feature_names),
        tables=tables,
        artifacts=artifacts,
        extra={"headline": "precision",
               "operating_point_rule": (
            f"fixed threshold {FLAGS.threshold}" if FLAGS.threshold is not None else
            f"largest threshold reaching recall {FLAGS.target_recall} on the validation "
            "split"),
            "pos_weight": pos_weight,
            "batches": "stratified: every global batch holds the training split's share "
                       "of positives (± 1), each positive once per epoch"},
    )


def run(argv: list[str]) -> dict:
    common_flags.parse(argv)
    return train()


if __name__ == "__main__":
    training.cli(train)
