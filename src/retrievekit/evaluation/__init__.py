"""BEIR-style evaluation: metrics through pytrec_eval, a caching runner, reports, significance."""

from retrievekit.evaluation.metrics import DEFAULT_K_VALUES, METRIC_FAMILIES, MetricsResult, compute_metrics
from retrievekit.evaluation.report import markdown_table, write_report
from retrievekit.evaluation.runner import (
    SYSTEMS,
    Evaluation,
    SystemResult,
    evaluate,
    evaluate_dataset,
    remove_identical_ids,
)
from retrievekit.evaluation.significance import PairedTest, paired_t_test

__all__ = [
    "DEFAULT_K_VALUES",
    "METRIC_FAMILIES",
    "SYSTEMS",
    "Evaluation",
    "MetricsResult",
    "PairedTest",
    "SystemResult",
    "compute_metrics",
    "evaluate",
    "evaluate_dataset",
    "markdown_table",
    "paired_t_test",
    "remove_identical_ids",
    "write_report",
]
