"""Evaluation and plots of the recipe: test metrics, predictions over time, learned δ."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def evaluate(target, prediction, volatility: bool, smearing: float) -> dict:
    """Test R², MAE, RMSE of `prediction` `[N]` against `target` `[N]`; for a log-variance
    target also QLIKE = σ̂²/h − log(σ̂²/h) − 1 with h = exp(target) and
    σ̂² = exp(prediction)·smearing (Duan's retransformation of a log forecast)."""
    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    if target.shape != prediction.shape:
        raise ValueError(f"target {target.shape} and prediction {prediction.shape} differ")
    error = target - prediction
    result = {
        "test_r2": float(1 - np.sum(error**2) / np.sum((target - target.mean()) ** 2)),
        "test_mae": float(np.mean(np.abs(error))),
        "test_rmse": float(np.sqrt(np.mean(error**2))),
    }
    if volatility:
        ratio = np.exp(prediction - target) * smearing
        result["test_qlike"] = float(np.mean(ratio - np.log(ratio) - 1))
    return result


def plots(dates, target, target_name: str, predictions: dict, delta_logs: dict,
          out_dir: Path) -> list[Path]:
    """predictions.png: the test-period target and each model's predictions (whole period,
    and the 180 days around its largest target); delta.png: δ and scale per epoch of each
    adaptive Huber run (`delta_logs`: name → rows [epoch, δ, scale])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = int(np.argmax(target))
    zoom = slice(max(0, centre - 90), centre + 90)
    figure, axes = plt.subplots(2, 1, figsize=(11, 7))
    for axis, part in zip(axes, (slice(None), zoom)):
        axis.plot(dates[part], target[part], color="0.6", lw=0.6, label=target_name)
        for index, (label, values) in enumerate(predictions.items()):
            axis.plot(dates[part], values[part], color=f"C{index + 1}", lw=0.9, label=label)
        axis.set_ylabel(target_name)
    axes[0].set_title("Test period: next-day target and one-step-ahead predictions")
    axes[1].set_title("Zoom on the 180 days around the largest test-period target")
    axes[0].legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    paths = [Path(out_dir) / "predictions.png"]
    figure.savefig(paths[0], dpi=110)
    plt.close(figure)
    if delta_logs:
        # One colour per run configuration (seeds of one configuration share it).
        groups = sorted({name.rsplit(", seed", 1)[0] for name in delta_logs})
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name, rows in sorted(delta_logs.items()):
            rows, group = np.asarray(rows), name.rsplit(", seed", 1)[0]
            colour = f"C{groups.index(group)}"
            first = name == min(n for n in delta_logs if n.startswith(group))
            axes[0].plot(rows[:, 0], rows[:, 1], color=colour, label=group if first else None)
            axes[1].plot(rows[:, 0], rows[:, 2], color=colour)
        axes[0].set_ylabel("δ (in units of the scale)")
        axes[1].set_ylabel("scale (in target standard deviations)")
        for axis in axes:
            axis.set_xlabel("epoch")
        axes[0].legend(fontsize=8)
        figure.suptitle("Adaptive Huber: δ and scale learned through the NLL (one line per seed)")
        figure.tight_layout()
        paths.append(Path(out_dir) / "delta.png")
        figure.savefig(paths[-1], dpi=110)
        plt.close(figure)
    return paths
