"""Tables, plots and references, built from what evaluate returns and the run's history."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recipes.depth_segmentation import evaluate

_LIBMTL = "LibMTL documentation (Lin & Zhang 2023), NYUv2 table: DeepLabV3+ / ResNet-50"
_MTAN = ("Nash-MTL (Navon et al. 2022) and FAMO (Liu et al. 2023) papers, NYUv2 table: "
         "SegNet + MTAN, 3 tasks (segmentation, depth, normals)")
# Context for an nyuv2: run, not targets: other networks at full resolution; ΔM of the
# MTAN rows is over three tasks' metrics (normals too).
NYUV2_REFERENCES = [
    *({"name": f"LibMTL, {method} weighting", "metric": metric, "value": value,
       "source": _LIBMTL} for method, metric, value in [
        ("equal", "miou", 0.5410), ("equal", "pixel_accuracy", 0.7578),
        ("equal", "abs_err", 0.3771), ("equal", "abs_rel", 0.1596),
        ("uncertainty", "miou", 0.5402), ("uncertainty", "pixel_accuracy", 0.7566),
        ("uncertainty", "abs_err", 0.3838), ("uncertainty", "abs_rel", 0.1573)]),
    *({"name": f"SegNet+MTAN, {method}", "metric": metric, "value": value, "source": _MTAN}
      for method, metric, value in [
        ("single-task", "miou", 0.3830), ("single-task", "pixel_accuracy", 0.6376),
        ("single-task", "abs_err", 0.68), ("equal weighting", "miou", 0.3929),
        ("equal weighting", "pixel_accuracy", 0.6533), ("equal weighting", "abs_err", 0.55),
        ("equal weighting", "delta_m", 5.46), ("Nash-MTL", "miou", 0.4013),
        ("Nash-MTL", "pixel_accuracy", 0.6593), ("Nash-MTL", "abs_err", 0.53),
        ("Nash-MTL", "delta_m", -4.04), ("FAMO", "delta_m", -4.10)]),
]
METRICS = evaluate.SEGMENTATION_METRICS + evaluate.DEPTH_METRICS


def network_history(history: list[dict], name: str) -> list[dict]:
    return sorted((entry for entry in history if entry.get("model") == name),
                  key=lambda entry: entry["epoch"])


CLAIMED = ("delta_m", "miou_gain", "pixel_accuracy_gain", "abs_rel_gain", "abs_err_gain")


def verdict(name: str, value, tolerance: float) -> str:
    """Whether `value` (an Interval of ΔM or of a gain) is claimed: only when it is wider
    than its tolerance (how far a reproduction may land) and its interval excludes 0."""
    if abs(value.value) <= tolerance or value.low <= 0 <= value.high:
        return "not distinguishable"
    better = value.value < 0 if name == "delta_m" else value.value > 0
    return "multi-task better" if better else "single-task better"


def tables(found: dict, networks: dict, history: list[dict], class_names, weighting: str,
           multi_confusion, seeds: list[int], seed_values: dict, metrics: dict,
           tolerances: dict) -> dict:
    """found {network: {metric: mean over seeds}}, networks {network: {"parameters",
    "seconds" (all seeds)}}, multi_confusion [N, C, C] (first seed), seed_values
    {network: {name: [S]}}, metrics {name: Interval | value}, tolerances {name: float}."""
    first = seeds[0]
    rows = [[f"{name} ({weighting})" if name == "multi_task" else name,
             *[found[name].get(metric) for metric in METRICS],
             networks[name]["parameters"], networks[name]["seconds"]] for name in found]
    multi_rows = network_history(history, "multi_task")  # the first seed's
    tasks = [task for task in ("segmentation", "depth") if f"weight_{task}" in
             (multi_rows[0] if multi_rows else {})]
    weights = [[row["epoch"], *[row[f"weight_{task}"] for task in tasks],
                *[row[f"{task}_loss"] for task in tasks]] for row in multi_rows]
    iou = evaluate.segmentation_metrics(multi_confusion)["iou_per_class"]
    claimed = [name for name in CLAIMED if name in metrics and name in tolerances]
    per_seed = [name for name in ("delta_m", "miou_gain", "abs_rel_gain", "miou", "abs_rel",
                                  "final_weight_segmentation", "final_weight_depth")
                if name in seed_values["multi_task"]]
    return {
        **({"claims (mean over seeds)": {
            "columns": ["quantity", "mean [interval]", "tolerance", "verdict"],
            "rows": [[name, str(metrics[name]), tolerances[name],
                      verdict(name, metrics[name], tolerances[name])] for name in claimed]}}
           if claimed else {}),
        "per seed (multi-task)": {
            "columns": ["seed", *per_seed],
            "rows": [[seed, *[seed_values["multi_task"][name][index] for name in per_seed]]
                     for index, seed in enumerate(seeds)]},
        "multi-task vs single-task (means over seeds)": {
            "columns": ["model", *METRICS, "parameters", "train seconds (all seeds)"],
            "rows": rows},
        f"task weights per epoch (epoch means, seed {first})": {
            "columns": ["epoch", *[f"weight {t}" for t in tasks], *[f"{t} loss" for t in tasks]],
            "rows": weights},
        f"per-class IoU (multi-task, seed {first})": {
            "columns": ["class", "IoU"],
            "rows": [[name, None if np.isnan(value) else float(value)]
                     for name, value in zip(class_names, iou)]},
    }


def plots(folder: Path, test: dict, outputs: dict, history: list[dict], class_names,
          weighting: str) -> list[Path]:
    """Multi-task predictions on four test images; task losses and weights per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count, cmap = min(4, len(test["images"])), plt.get_cmap("tab20", len(class_names))
    figure, axes = plt.subplots(count, 5, figsize=(11, 2.3 * count), squeeze=False)
    depth_max = float(test["depths"][:count].max()) or 1.0
    classes = {"cmap": cmap, "vmin": -0.5, "vmax": len(class_names) - 0.5}
    depth = {"cmap": "magma_r", "vmin": 0, "vmax": depth_max}
    for row in range(count):
        panels = [(test["images"][row], "RGB", {}),
                  (test["labels"][row], "true classes", classes),
                  (outputs["segmentation"][row].argmax(-1), "predicted classes", classes),
                  (test["depths"][row], "true depth (0 = invalid)", depth),
                  (outputs["depth"][row], "predicted depth", depth)]
        for axis, (image, title, style) in zip(axes[row], panels):
            axis.imshow(image, interpolation="nearest", **style)
            axis.set_axis_off()
            if row == 0:
                axis.set_title(title, fontsize=9)
    figure.suptitle(f"multi-task U-Net, {weighting} weighting: test images", fontsize=10)
    figure.tight_layout()
    paths = [folder / "predictions.png"]
    figure.savefig(paths[0], dpi=90)
    plt.close(figure)

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name in ("multi_task", "segmentation_only", "depth_only"):
        rows = network_history(history, name)
        for task in ("segmentation", "depth"):
            if rows and f"{task}_loss" in rows[0]:
                epochs = [r["epoch"] for r in rows]
                left.plot(epochs, [r[f"{task}_loss"] for r in rows], marker="o",
                          label=f"{name}: {task}")
                if name == "multi_task":
                    right.plot(epochs, [r[f"weight_{task}"] for r in rows], marker="o",
                               label=f"weight of {task} loss")
    left.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="task losses")
    right.set(xlabel="epoch", ylabel="loss weight (epoch mean)",
              title=f"{weighting} weighting of the multi-task model")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.tight_layout()
    paths.append(folder / "training.png")
    figure.savefig(paths[1], dpi=90)
    plt.close(figure)
    return paths
