"""Depth estimation + semantic segmentation: one U-Net, two heads, a weighted multi-task loss.

    python recipes/depth_segmentation/train.py

Trains a U-Net with a shared encoder and two decoders (class probabilities and depth) on
procedurally rendered rooms, with the per-task losses weighted `--weighting=static`
(fixed `--seg_weight`, `--depth_weight`), `uncertainty` (learned, Kendall et al. 2018) or
`dwa` (Dynamic Weight Average, Liu et al. 2019). Segmentation loss: per-image soft Dice
(+ `--cross_entropy_weight` x cross-entropy); depth loss `--depth_loss` l1, berhu or
silog, invalid depth (0) masked. With `--baselines` (default) the same run trains the two
single-task networks of the same size, and the record says, with paired bootstrap
intervals over test images, whether sharing the encoder helped.
`--dataset=nyuv2:PATH` reads the NYUv2 labelled set (13 classes); `npz:PATH` your own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import common  # noqa: E402,F401  (Keras 2 before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from common import flags as common_flags  # noqa: E402
from common import results, training  # noqa: E402
from recipes.depth_segmentation import data, metrics, model, scenes  # noqa: E402

RECIPE = Path(__file__).resolve().parent.name
FLAGS = flags.FLAGS

flags.DEFINE_enum("weighting", "static", model.WEIGHTINGS, "How the two task losses combine.")
flags.DEFINE_float("seg_weight", 1.0, "static: weight of the segmentation loss.", lower_bound=0)
flags.DEFINE_float("depth_weight", 1.0, "static: weight of the depth loss.", lower_bound=0)
flags.DEFINE_float("dwa_temperature", 2.0, "dwa: temperature T.", lower_bound=1e-3)
flags.DEFINE_enum("depth_loss", "l1", list(model.DEPTH_LOSSES), "Depth loss (invalid masked).")
flags.DEFINE_float("cross_entropy_weight", 1.0,
                   "Weight of pixel cross-entropy added to the Dice loss (0: Dice alone).",
                   lower_bound=0)
flags.DEFINE_bool("baselines", True, "Also train the single-task networks of the same size.")
flags.DEFINE_integer("num_classes", None, "Classes (default: the dataset's own).", lower_bound=1)
flags.DEFINE_integer("base_filters", 12, "U-Net width: filters of the first level.",
                     lower_bound=1)
flags.DEFINE_integer("levels", 3, "U-Net depth: poolings in the encoder.", lower_bound=1)
flags.DEFINE_integer("train_images", 768, "synthetic: rooms rendered for training.",
                     lower_bound=1)
flags.DEFINE_integer("test_images", 256, "synthetic: rooms rendered for testing.", lower_bound=1)
flags.DEFINE_integer("image_size", 64, "synthetic: image height and width.", lower_bound=16)
flags.DEFINE_integer("downsample", 8, "nyuv2: shrink the 480x640 images by this factor.",
                     lower_bound=1)
flags.DEFINE_float("test_fraction", 0.45, "nyuv2/npz: share of images held out for testing "
                   "(0.45 ~ the official 654 of 1449).", lower_bound=0.01, upper_bound=0.99)
flags.register_validator(
    "dataset", lambda value: value is None or value == "synthetic"
    or (value.split(":", 1)[0] in ("nyuv2", "npz") and len(value.split(":", 1)) == 2
        and value.split(":", 1)[1] != ""),
    message="--dataset must be synthetic, nyuv2:PATH or npz:PATH")

common_flags.set_defaults(epochs=6, global_batch_size=32, learning_rate=2e-3,
                          dataset="synthetic")

# LibMTL's NYUv2 table (DeepLabV3+ on ResNet-50, full resolution, official split): context
# for a nyuv2: run, not a target, and not comparable with the synthetic rooms.
REFERENCES = [
    {"name": f"LibMTL NYUv2 13-class, {method} weighting", "metric": metric, "value": value,
     "source": "LibMTL documentation (Lin & Zhang 2023), NYUv2 results table"}
    for method, metric, value in [("equal", "miou", 0.5410), ("equal", "abs_rel", 0.1596),
                                  ("uncertainty", "miou", 0.5402),
                                  ("uncertainty", "abs_rel", 0.1573)]
]
SEG_METRICS, DEPTH_METRICS = ("miou", "pixel_accuracy"), ("abs_rel", "rmse", "delta1")


def load_data() -> tuple[dict, dict, str, tuple]:
    """(train, test, dataset name, class names); arrays as data.py describes them."""
    kind, _, path = FLAGS.dataset.partition(":")
    if kind == "synthetic":
        train_count, test_count = ((4 * FLAGS.global_batch_size, 32) if FLAGS.smoke
                                   else (FLAGS.train_images, FLAGS.test_images))
        size = FLAGS.image_size
        if size % 2 ** (FLAGS.levels + 1):
            raise ValueError(f"--image_size={size} must be a multiple of 2**(--levels+1) = "
                             f"{2 ** (FLAGS.levels + 1)}")
        train = scenes.synthetic(train_count, size, seed=FLAGS.seed)
        test = scenes.synthetic(test_count, size, seed=FLAGS.seed + 1_000_003)
        return train, test, f"synthetic rooms {size}x{size}", scenes.SCENE_CLASSES
    if kind == "nyuv2":
        arrays = data.load_nyuv2(path, FLAGS.downsample, multiple=2 ** (FLAGS.levels + 1))
        names = data.NYU13_CLASSES
    else:
        arrays = data.load_npz(path)
        names = tuple(f"class{i}" for i in range(int(arrays["labels"].max()) + 1))
    data.validate(arrays["images"], arrays["depths"], arrays["labels"],
                  FLAGS.num_classes or len(names), path)
    height, width = arrays["images"].shape[1:3]
    if height % 2 ** (FLAGS.levels + 1) or width % 2 ** (FLAGS.levels + 1):
        raise ValueError(f"{path}: images {height}x{width} must be multiples of "
                         f"2**(--levels+1) = {2 ** (FLAGS.levels + 1)}")
    order = np.random.default_rng(FLAGS.seed).permutation(len(arrays["images"]))
    if FLAGS.smoke:
        order = order[:48]
    cut = len(order) - max(1, int(round(FLAGS.test_fraction * len(order))))
    if cut < 1:
        raise ValueError(f"{path}: {len(order)} images cannot be split into train and test")
    pick = lambda index: {key: value[index] for key, value in arrays.items()}  # noqa: E731
    return pick(order[:cut]), pick(order[cut:]), f"{kind}:{Path(path).name}", names


def as_dataset(arrays: dict) -> tf.data.Dataset:
    """Unbatched (image uint8 [H, W, 3], {"labels": [H, W], "depth": [H, W]})."""
    return tf.data.Dataset.from_tensor_slices(
        (arrays["images"], {"labels": arrays["labels"], "depth": arrays["depths"]}))


def model_history(run, name: str) -> list[dict]:
    """The logged epochs of model `name`, in order, the last record of each epoch kept."""
    entries = {entry["epoch"]: entry for entry in training.history(run)
               if entry.get("model") == name}
    return [entries[epoch] for epoch in sorted(entries)]


def predict(network, images, batch_size: int = 64) -> dict:
    """Outputs of `network` on all `images`, in chunks: {task: array [N, H, W(, C)]}."""
    chunks = [network(images[i:i + batch_size], training=False)
              for i in range(0, len(images), batch_size)]
    return {task: np.concatenate([chunk[task].numpy() for chunk in chunks])
            for task in chunks[0]}


def train_one(run, name: str, tasks: tuple, train: dict, num_classes: int) -> dict:
    """Builds, trains and evaluates one network; returns its per-image test statistics."""
    tf.keras.utils.set_random_seed(FLAGS.seed)
    valid_depth = train["depths"][train["depths"] > 0]
    with run.strategy.scope():
        network = model.build(
            num_classes, tasks, base_filters=FLAGS.base_filters, levels=FLAGS.levels,
            depth_scale=float(np.median(valid_depth)) if valid_depth.size else 1.0,
            weighting=FLAGS.weighting, static_weights=(FLAGS.seg_weight, FLAGS.depth_weight),
            depth_loss=FLAGS.depth_loss, cross_entropy_weight=FLAGS.cross_entropy_weight)
        network.compile(optimizer=tf.keras.optimizers.Adam(FLAGS.learning_rate),
                        jit_compile=FLAGS.jit_compile)
    callbacks = []
    if network.weighting == "dwa":
        # A resumed run replays the logged epochs, so DWA continues with the λ and the
        # loss history an uninterrupted run would have.
        for entry in model_history(run, name)[:training.saved_epoch(run, name)]:
            network.dwa.on_epoch_end(entry["epoch"] - 1, entry)
        callbacks.append(network.dwa)
    stream, steps = training.training_stream(as_dataset(train), run, name=name)
    started = time.perf_counter()
    training.fit(run, network, stream, steps_per_epoch=steps, callbacks=callbacks, name=name,
                 epochs=min(FLAGS.epochs, 3) if FLAGS.smoke else FLAGS.epochs)
    return {"network": network, "seconds": time.perf_counter() - started,
            "parameters": network.count_params()}


def evaluate(trained: dict, test: dict, num_classes: int) -> dict:
    outputs = predict(trained["network"], test["images"])
    stats = {}
    if "segmentation" in outputs:
        predicted = outputs["segmentation"].argmax(-1)
        stats["confusion"] = metrics.per_image_confusion(test["labels"], predicted, num_classes)
        trained["predicted_labels"] = predicted
    if "depth" in outputs:
        stats["depth"] = metrics.per_image_depth_sums(test["depths"], outputs["depth"])
        trained["predicted_depth"] = outputs["depth"]
    trained["stats"] = stats
    found = {}
    if "confusion" in stats:
        found.update({k: v for k, v in metrics.segmentation_metrics(
            stats["confusion"].sum(0)).items() if k in SEG_METRICS})
    if "depth" in stats:
        found.update(metrics.depth_metrics(stats["depth"]))
    return found


def compare(multi: dict, single: dict, found: dict) -> None:
    """Adds multi-task minus single-task, `<metric>_gain`, with a paired bootstrap
    interval over test images; positive = multi-task better (AbsRel, RMSE negated)."""
    for key, names, function in (("confusion", SEG_METRICS, metrics.segmentation_metrics),
                                 ("depth", DEPTH_METRICS, metrics.depth_metrics)):
        if key not in single["stats"]:
            continue
        first, second = multi["stats"][key], single["stats"][key]
        for metric in names:
            def score(sums, metric=metric, function=function):
                return (-1 if metric in ("abs_rel", "rmse") else 1) * function(sums)[metric]
            found[f"{metric}_gain"] = score(first.sum(0)) - score(second.sum(0))
            found[f"{metric}_gain_ci_low"], found[f"{metric}_gain_ci_high"] = (
                metrics.paired_bootstrap(first, second, score, seed=FLAGS.seed,
                                         samples=200 if FLAGS.smoke else 1000))


def plot(run, test: dict, trained: dict, class_names) -> list[Path]:
    """Predictions on four test images, and the task losses and weights per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    multi = trained["multi_task"]
    count, cmap = min(4, len(test["images"])), plt.get_cmap("tab20", len(class_names))
    figure, axes = plt.subplots(count, 5, figsize=(11, 2.3 * count), squeeze=False)
    depth_max = float(test["depths"][:count].max()) or 1.0
    for row in range(count):
        panels = [(test["images"][row], "RGB", {}),
                  (test["labels"][row], "true classes", {"cmap": cmap}),
                  (multi["predicted_labels"][row], "predicted classes", {"cmap": cmap}),
                  (test["depths"][row], "true depth (0 = invalid)", {"cmap": "magma_r"}),
                  (multi["predicted_depth"][row], "predicted depth", {"cmap": "magma_r"})]
        for axis, (image, title, style) in zip(axes[row], panels):
            if "classes" in title:
                style = {**style, "vmin": -0.5, "vmax": len(class_names) - 0.5}
            elif "depth" in title:
                style = {**style, "vmin": 0, "vmax": depth_max}
            axis.imshow(image, interpolation="nearest", **style)
            axis.set_axis_off()
            if row == 0:
                axis.set_title(title, fontsize=9)
    figure.suptitle(f"multi-task U-Net, {FLAGS.weighting} weighting: test images", fontsize=10)
    figure.tight_layout()
    paths = [run.model_dir / "predictions.png"]
    figure.savefig(paths[0], dpi=90)
    plt.close(figure)

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name in trained:
        rows = model_history(run, name)
        for task in ("segmentation", "depth"):
            if rows and f"{task}_loss" in rows[0]:
                left.plot([r["epoch"] for r in rows], [r[f"{task}_loss"] for r in rows],
                          marker="o", label=f"{name}: {task}")
        if name == "multi_task":
            for task in ("segmentation", "depth"):
                right.plot([r["epoch"] for r in rows], [r[f"weight_{task}"] for r in rows],
                           marker="o", label=f"weight of {task} loss")
    left.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="task losses")
    right.set(xlabel="epoch", ylabel="effective weight",
              title=f"{FLAGS.weighting} weighting of the multi-task model")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.tight_layout()
    paths.append(run.model_dir / "training.png")
    figure.savefig(paths[1], dpi=90)
    plt.close(figure)
    return paths


def train() -> dict:
    run = training.start(RECIPE)
    train_arrays, test, dataset_name, class_names = load_data()
    num_classes = FLAGS.num_classes or len(class_names)
    for split, arrays in (("train", train_arrays), ("test", test)):
        data.validate(arrays["images"], arrays["depths"], arrays["labels"], num_classes,
                      f"{dataset_name} {split} split")
    if num_classes > len(class_names):
        class_names = tuple(class_names) + tuple(f"class{i}" for i in
                                                 range(len(class_names), num_classes))
    print(f"[{RECIPE}] {dataset_name}: {len(train_arrays['images'])} train / "
          f"{len(test['images'])} test images, {num_classes} classes", flush=True)

    setups = {"multi_task": model.TASKS}
    if FLAGS.baselines:
        setups.update(segmentation_only=("segmentation",), depth_only=("depth",))
    trained, found = {}, {}
    for name, tasks in setups.items():
        trained[name] = train_one(run, name, tasks, train_arrays, num_classes)
        found[name] = evaluate(trained[name], test, num_classes)
        print(f"[{RECIPE}] {name}: " + "  ".join(f"{k}={v:.4f}" for k, v in
                                                  found[name].items()), flush=True)
    headline = dict(found["multi_task"])
    for name in ("segmentation_only", "depth_only"):
        if name in trained:
            compare(trained["multi_task"], trained[name], headline)
    multi_rows = model_history(run, "multi_task")
    for task in model.TASKS:
        headline[f"final_weight_{task}"] = multi_rows[-1][f"weight_{task}"]

    columns = ["model", *SEG_METRICS, *DEPTH_METRICS, "parameters", "train seconds"]
    rows = [[f"{name} ({FLAGS.weighting})" if name == "multi_task" else name,
             *[found[name].get(metric) for metric in (*SEG_METRICS, *DEPTH_METRICS)],
             trained[name]["parameters"], round(trained[name]["seconds"], 1)]
            for name in trained]
    weights = [[row["epoch"], *[row[f"weight_{task}"] for task in model.TASKS],
                *[row[f"{task}_loss"] for task in model.TASKS]] for row in multi_rows]
    iou = metrics.segmentation_metrics(trained["multi_task"]["stats"]["confusion"].sum(0))
    tables = {
        "multi-task vs single-task": {"columns": columns, "rows": rows},
        "task weights per epoch": {
            "columns": ["epoch", "weight seg", "weight depth", "seg loss", "depth loss"],
            "rows": weights},
        "per-class IoU (multi-task)": {
            "columns": ["class", "IoU"],
            "rows": [[name, None if np.isnan(v) else float(v)]
                     for name, v in zip(class_names, iou["iou_per_class"])]},
    }
    return training.finish(
        run,
        metrics=headline,
        tolerances={"miou": 0.03, "pixel_accuracy": 0.03, "abs_rel": 0.02, "delta1": 0.03},
        baselines={name: found[name] for name in trained if name != "multi_task"},
        references=REFERENCES if dataset_name.startswith("nyuv2") else [],
        tables=tables,
        dataset={"name": dataset_name, "classes": list(class_names),
                 "fingerprint": results.fingerprint(*train_arrays.values(), *test.values()),
                 "train_images": len(train_arrays["images"]),
                 "test_images": len(test["images"]),
                 "image_size": list(test["images"].shape[1:3])},
        model=trained["multi_task"]["network"],
        artifacts=plot(run, test, trained, class_names),
        extra={"headline": "miou"},
    )


def run(argv: list[str]) -> dict:
    """Parses `argv` as the command line would, trains, and returns the results record."""
    common_flags.parse(argv)
    return train()


if __name__ == "__main__":
    training.cli(train)
