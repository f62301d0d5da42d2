"""What the record shows beside the metrics: how each network stopped, the robustness table,
the published references, tolerances, and the predictions plot."""

from __future__ import annotations

from pathlib import Path

from common import training

import numpy as np

from recipes.financial_regression import data, model

RECIPE = "financial_regression"
ISLR2_FEATURES = {"DJ_return", "log_volume", "log_volatility"}
ISLR2_SOURCE = "James et al., An Introduction to Statistical Learning, 2nd ed. (2021), §10.5"


def val_losses(run, name: str) -> list[float]:
    """Validation losses of network `name` logged before a restart, up to the epoch its
    backup holds (what it resumes from); [] for a fresh network."""
    rows = sorted((line["epoch"], line["val_loss"]) for line in training.history(run)
                  if line.get("model") == name and "val_loss" in line)
    return [loss for epoch, loss in rows if epoch <= training.saved_epoch(run, name)]


def convergence(run, budget: int, patience: int, tolerance: float) -> dict:
    """For every network of the run: the stopping rule replayed on its logged validation
    losses (`model.plateau`) and the budget. Prints a line for each network that used
    the whole budget with its validation loss still falling: it did not converge."""
    names = sorted({line["model"] for line in training.history(run) if line.get("model")})
    out = {}
    for name in names:
        losses = [line["val_loss"] for line in sorted(
            (line for line in training.history(run) if line.get("model") == name),
            key=lambda line: line["epoch"])]
        out[name] = {"budget": budget, **model.plateau(losses, patience, tolerance)}
        if not out[name]["converged"]:
            print(f"[{RECIPE}] WARNING: {name} did not converge: {budget} epochs (--epochs) "
                  f"ran out with the validation loss still falling (best epoch "
                  f"{out[name]['best_epoch']}); raise --epochs", flush=True)
    return out


def stopping_metrics(convergence: dict, kind: str) -> dict:
    """The budget, the main model's last stopping epoch, and how many networks ran out."""
    main = [value for name, value in convergence.items() if name.startswith(f"{kind}_seed")]
    return {"epochs_budget": main[0]["budget"],
            "stopping_epoch": max(value["epochs"] for value in main),
            "best_epoch": max(value["best_epoch"] for value in main),
            "unconverged_networks": sum(not value["converged"]
                                        for value in convergence.values())}


def convergence_table(convergence: dict) -> dict:
    rows = [[name, value["budget"], value["epochs"], value["best_epoch"],
             value["best_val_loss"], value["learning_rate_cuts"],
             "yes" if value["converged"] else "NO: budget ran out"]
            for name, value in convergence.items()]
    return {"convergence": {"columns": ["network", "epoch budget", "stopped at",
                                        "best epoch", "best validation loss",
                                        "learning-rate cuts", "converged"], "rows": rows}}


def robustness(cells: dict, least_squares: dict) -> tuple[dict, dict]:
    """The robustness table from test R² per (loss, rate, seed) and per rate of least
    squares; and the R² each loses from rate 0 to every other rate (`r2_drop_<loss>_<rate>`)
    and by how much MSE loses more than each Huber loss."""
    if not cells:
        return {}, {}
    rates = sorted(least_squares)
    corrupted = [rate for rate in rates if rate > 0] if rates[0] == 0 else []
    rows, drops = [], {}
    for loss in ["linear_lstsq", *model.LOSSES]:
        r2 = {rate: [least_squares[rate]] if loss == "linear_lstsq" else
              [value for (cell_loss, cell_rate, _), value in sorted(cells.items())
               if cell_loss == loss and cell_rate == rate] for rate in rates}
        row = [loss] + [f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" if len(v) > 1
                        else v[0] for v in r2.values()]
        for rate in corrupted:
            drops[f"r2_drop_{loss}_{rate:g}"] = float(np.mean(r2[0.0]) - np.mean(r2[rate]))
            row.append(drops[f"r2_drop_{loss}_{rate:g}"])
        rows.append(row)
    for rate in corrupted:
        for loss in ("huber", "adaptive_huber"):
            drops[f"r2_drop_mse_minus_{loss}_{rate:g}"] = (
                drops[f"r2_drop_mse_{rate:g}"] - drops[f"r2_drop_{loss}_{rate:g}"])
    seeds = len({seed for _, _, seed in cells})
    spread = " (mean ± sd over seeds)" if seeds > 1 else ""
    columns = (["loss"] + [f"test R², {rate:.0%} corrupted{spread}" for rate in rates]
               + [f"R² lost at {rate:.0%}" for rate in corrupted])
    return {"robustness": {"columns": columns, "rows": rows}}, drops


def tolerances(metrics: dict) -> dict:
    """How far a rerun's metric may land from the record (`scripts/reproduce.py`)."""
    fixed = {"test_r2": 0.02, "test_mae": 0.02, "test_rmse": 0.03, "test_qlike": 0.05,
             "test_r2_minus_linear_lstsq": 0.01, "test_r2_single": 0.02}
    return {**{name: value for name, value in fixed.items() if name in metrics},
            **{name: 0.03 for name in metrics if name.startswith("r2_drop_")}}


def references(frame: data.Frame, target: str | None, features, lags: int,
               day_of_week: bool, split_date: str | None) -> list:
    """ISLR2's NYSE numbers, when the run is the book's set-up (whatever its flagfile)."""
    if (frame.volatility or target != "log_volume" or lags != 5
            or set(features or ()) != ISLR2_FEATURES or split_date != "1980-01-02"):
        return []
    if not day_of_week:
        return [{"name": "ISLR2 NYSE linear AR", "metric": "test_r2", "value": 0.413,
                 "source": ISLR2_SOURCE}]
    return [{"name": "ISLR2 NYSE linear AR + day of week", "metric": "test_r2",
             "value": 0.46, "source": ISLR2_SOURCE},
            {"name": "ISLR2 NYSE MLP + day of week", "metric": "test_r2", "value": 0.466,
             "source": ISLR2_SOURCE}]


def plot(path: Path, dates, target, target_name: str, predictions: dict) -> Path:
    """The test-period target and each model's predictions `[N]` (whole period, and the
    180 days around its largest target), written to `path`."""
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
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
