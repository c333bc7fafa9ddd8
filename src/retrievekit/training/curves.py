"""Plot the loss and dev metrics of a training run from Lightning's ``metrics.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

from retrievekit._optional import require
from retrievekit.artifacts import atomic_file

__all__ = ["keep_earlier_log", "plot_curves", "read_log", "read_metrics_csv"]


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


def keep_earlier_log(logs: Path, checkpoint: Path) -> None:
    """Before a resumed run (Lightning's CSV logger starts ``metrics.csv`` afresh), keep the rows
    logged up to the checkpoint's step as ``metrics.until-step-N.csv``."""
    current = logs / "metrics.csv"
    if current.is_file():
        step = checkpoint.stem.split("=", 1)[1]
        current.replace(logs / f"metrics.until-step-{step}.csv")


def read_log(logs: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every series of a run's log folder: the rows kept before each resume (up to its step), then
    the current ``metrics.csv``."""
    logs = Path(logs)
    earlier = sorted(logs.glob("metrics.until-step-*.csv"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    series: dict[str, list[tuple[int, float]]] = {}
    start = 0
    for path in [*earlier, logs / "metrics.csv"]:
        if not path.is_file():
            continue
        until = int(path.stem.rsplit("-", 1)[1]) if path in earlier else None
        for key, points in read_metrics_csv(path).items():
            kept = [(s, v) for s, v in points if s >= start and (until is None or s < until)]
            series.setdefault(key, []).extend(kept)
        start = until if until is not None else start
    return series


def plot_curves(logs: str | Path, output: str | Path) -> Path:
    """Write a PNG with the training loss (left axis) and every ``dev/`` metric (right axis) from a
    run's log folder (see :func:`read_log`) or one ``metrics.csv``."""
    require("matplotlib", extra="eval", purpose="Plotting training curves")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = Path(logs)
    series = read_log(logs) if logs.is_dir() else read_metrics_csv(logs)
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
    with atomic_file(output) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return output
