"""Plot the loss and dev metrics of a training run from Lightning's ``metrics.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

from retrievekit._optional import require

__all__ = ["plot_curves", "read_metrics_csv"]


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` from a Lightning CSV log (empty cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(row.get("step") or 0)
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def plot_curves(metrics_csv: str | Path, output: str | Path) -> Path:
    """Write a PNG with the training loss (left axis) and every ``dev/`` metric (right axis)."""
    require("matplotlib", extra="eval", purpose="Plotting training curves")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics_csv(metrics_csv)
    figure, loss_axis = plt.subplots(figsize=(7, 4), dpi=120)
    if "train/loss" in series:
        steps, values = zip(*series["train/loss"], strict=True)
        loss_axis.plot(steps, values, color="tab:blue", label="train loss")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("loss", color="tab:blue")
    dev = {k: v for k, v in series.items() if k.startswith("dev/")}
    if dev:
        metric_axis = loss_axis.twinx()
        for name, points in dev.items():
            steps, values = zip(*points, strict=True)
            metric_axis.plot(steps, values, marker="o", color="tab:orange", label=name)
        metric_axis.set_ylabel("dev metric", color="tab:orange")
    loss_axis.set_title("training curves")
    figure.tight_layout()
    output = Path(output)
    figure.savefig(output)
    plt.close(figure)
    return output
