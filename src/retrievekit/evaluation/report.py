"""Evaluation outputs: results.json, results.md, TREC runs, per_query.jsonl and a Recall@k plot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from retrievekit._optional import require
from retrievekit.artifacts import atomic_file, atomic_write_text
from retrievekit.data.writers import write_jsonl, write_trec_run
from retrievekit.evaluation.runner import Evaluation, SystemResult

__all__ = ["TABLE_METRICS", "ResultsTable", "markdown_table", "results_json", "results_table", "write_report"]

TABLE_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@10", "precision@10")


@dataclass(frozen=True)
class ResultsTable:
    """The one results table: what the CLI prints and what ``results.md`` holds."""

    title: str
    headers: list[str]
    rows: list[list[str]]


def results_json(evaluation: Evaluation, system: SystemResult) -> dict[str, object]:
    """The record for one system: dataset, split, retriever, model, metrics, num_queries, timing, ..."""
    test = evaluation.significance.get(system.retriever)
    return {
        "dataset": evaluation.dataset,
        "split": evaluation.split,
        "retriever": system.retriever,
        "model": system.model,
        "fingerprint": system.fingerprint,
        "metrics": system.metrics.aggregate,
        "significance": vars(test) if test is not None else None,
        "num_queries": evaluation.num_queries,
        "timing": {key: round(value, 3) for key, value in system.timing.items()},
        "cached": system.cached,
        "ignore_identical_ids": {
            "enabled": evaluation.settings["ignore_identical_ids"],
            "removed": system.removed_identical,
            "removed_judged_relevant": system.removed_relevant,
        },
        "settings": evaluation.settings,
        "peak_rss_mib": round(evaluation.peak_rss_mib, 1),
    }


def _table_metrics(evaluation: Evaluation) -> list[str]:
    available = evaluation.systems[0].metrics.aggregate
    return [m for m in TABLE_METRICS if m in available] or list(available)[:5]


def results_table(evaluation: Evaluation) -> ResultsTable:
    """Rows per system: metrics, the paired t-test p-value against the first (``*``: p < 0.05),
    seconds spent and whether anything came from a cache."""
    metrics = _table_metrics(evaluation)
    rows = []
    for system in evaluation.systems:
        test = evaluation.significance.get(system.retriever)
        p_value = "—" if test is None else f"{test.p_value:.4f}{' *' if test.significant else ''}"
        cached = "yes" if any(system.cached.values()) else "no"
        values = [f"{system.metrics.aggregate[m]:.4f}" for m in metrics]
        rows.append([system.retriever, *values, p_value, f"{sum(system.timing.values()):.1f}", cached])
    runtime = evaluation.settings.get("runtime") or "no model"
    title = (
        f"{evaluation.dataset} {evaluation.split}: {evaluation.num_queries} queries, "
        f"model {evaluation.model or '-'} ({runtime})"
    )
    return ResultsTable(title, ["retriever", *metrics, "p vs first", "seconds", "cached"], rows)


def markdown_table(evaluation: Evaluation) -> str:
    table = results_table(evaluation)
    lines = [
        table.title,
        "",
        "| " + " | ".join(table.headers) + " |",
        "|---|" + "---:|" * (len(table.headers) - 1),
        *("| " + " | ".join(row) + " |" for row in table.rows),
        "",
        "p vs first: paired t-test on ndcg@10 against the first retriever (*: p < 0.05).",
    ]
    return "\n".join(lines) + "\n"


def _plot_recall(evaluation: Evaluation, path: Path) -> None:
    matplotlib = require("matplotlib", extra="eval", purpose="The Recall@k plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    for system in evaluation.systems:
        points = sorted(
            (int(name.split("@")[1]), value)
            for name, value in system.metrics.aggregate.items()
            if name.startswith("recall@")
        )
        axis.plot([k for k, _ in points], [v for _, v in points], marker="o", label=system.retriever)
    axis.set_xscale("log")
    axis.set_xlabel("k")
    axis.set_ylabel("Recall@k")
    axis.set_ylim(0, 1.02)
    axis.grid(True, which="both", alpha=0.3)
    axis.set_title(f"{evaluation.dataset} {evaluation.split}: Recall@k")
    axis.legend()
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def write_report(evaluation: Evaluation, directory: str | Path) -> Path:
    """Write every output into ``directory``. ``results.json`` lists every system under ``systems``
    (and keeps the first system's record, ``metrics`` included, at the top level); each system also
    gets ``<retriever>/results.json`` and ``<retriever>/run.trec``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    records = {s.retriever: results_json(evaluation, s) for s in evaluation.systems}
    primary = dict(records[evaluation.systems[0].retriever])
    primary["systems"] = list(records.values())
    atomic_write_text(directory / "results.json", json.dumps(primary, indent=2))
    for system in evaluation.systems:
        folder = directory / system.retriever
        folder.mkdir(exist_ok=True)
        atomic_write_text(folder / "results.json", json.dumps(records[system.retriever], indent=2))
        write_trec_run(system.run, folder / "run.trec", tag=system.retriever)
    if len(evaluation.systems) == 1:
        write_trec_run(evaluation.systems[0].run, directory / "run.trec", tag=evaluation.systems[0].retriever)
    write_jsonl(
        (
            {"query_id": qid, "retriever": s.retriever, **s.metrics.per_query[qid]}
            for s in evaluation.systems
            for qid in sorted(s.metrics.per_query)
        ),
        directory / "per_query.jsonl",
    )
    atomic_write_text(directory / "results.md", markdown_table(evaluation))
    _plot_recall(evaluation, directory / "recall_at_k.png")
    return directory
