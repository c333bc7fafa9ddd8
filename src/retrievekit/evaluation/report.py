"""Evaluation outputs: results.json, results.md, TREC runs, per_query.jsonl and a Recall@k plot."""

from __future__ import annotations

import json
from pathlib import Path

from retrievekit._optional import require
from retrievekit.artifacts import atomic_write_text
from retrievekit.data.writers import write_jsonl, write_trec_run
from retrievekit.evaluation.runner import Evaluation, SystemResult

__all__ = ["TABLE_METRICS", "markdown_table", "results_json", "write_report"]

TABLE_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@10", "precision@10")


def results_json(evaluation: Evaluation, system: SystemResult) -> dict[str, object]:
    """The record for one system: dataset, split, retriever, model, metrics, num_queries, timing, ..."""
    return {
        "dataset": evaluation.dataset,
        "split": evaluation.split,
        "retriever": system.retriever,
        "model": evaluation.model if system.retriever != "bm25" else None,
        "metrics": system.metrics.aggregate,
        "num_queries": evaluation.num_queries,
        "timing": {key: round(value, 3) for key, value in system.timing.items()},
        "cached": system.cached,
        "ignore_identical_ids": {
            "enabled": evaluation.settings["ignore_identical_ids"],
            "removed": system.removed_identical,
        },
        "settings": evaluation.settings,
        "peak_rss_mib": round(evaluation.peak_rss_mib, 1),
    }


def _table_metrics(evaluation: Evaluation) -> list[str]:
    available = evaluation.systems[0].metrics.aggregate
    return [m for m in TABLE_METRICS if m in available] or list(available)[:5]


def markdown_table(evaluation: Evaluation) -> str:
    metrics = _table_metrics(evaluation)
    lines = [
        f"{evaluation.dataset} ({evaluation.split}, {evaluation.num_queries} queries)",
        "",
        "| retriever | " + " | ".join(metrics) + " | p (vs first, paired t-test on ndcg@10) | seconds |",
        "|---|" + "---:|" * (len(metrics) + 2),
    ]
    for system in evaluation.systems:
        test = evaluation.significance.get(system.retriever)
        p = "—" if test is None else f"{test.p_value:.4f}{' *' if test.significant else ''}"
        seconds = sum(system.timing.values())
        values = " | ".join(f"{system.metrics.aggregate[m]:.4f}" for m in metrics)
        lines.append(f"| {system.retriever} | {values} | {p} | {seconds:.1f} |")
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    tmp.replace(path)


def write_report(evaluation: Evaluation, directory: str | Path) -> Path:
    """Write every output into ``directory``. ``results.json`` describes the first system and lists
    the others under ``compared``; each system also gets ``<retriever>/results.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    records = {s.retriever: results_json(evaluation, s) for s in evaluation.systems}
    primary = dict(records[evaluation.systems[0].retriever])
    primary["compared"] = {
        name: {"metrics": record["metrics"], "significance": vars(evaluation.significance[name])}
        for name, record in records.items()
        if name in evaluation.significance
    }
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
