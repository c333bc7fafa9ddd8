"""BEIR-style evaluation of any retriever or pipeline: metrics through pytrec_eval, a caching runner
over retriever specs (a registry by name), one results table, reports, significance."""

from retrievekit.evaluation.metrics import DEFAULT_K_VALUES, METRIC_FAMILIES, MetricsResult, compute_metrics
from retrievekit.evaluation.report import ResultsTable, markdown_table, results_table, write_report
from retrievekit.evaluation.runner import (
    Evaluation,
    System,
    SystemResult,
    evaluate,
    evaluate_dataset,
    remove_identical_ids,
)
from retrievekit.evaluation.significance import PairedTest, paired_t_test
from retrievekit.evaluation.systems import (
    Bm25Spec,
    DenseSpec,
    EvaluationCorpus,
    PipelineSpec,
    RetrieverSpec,
    SpecOptions,
    make_spec,
    register_retriever,
    registered_retrievers,
)

__all__ = [
    "DEFAULT_K_VALUES",
    "METRIC_FAMILIES",
    "Bm25Spec",
    "DenseSpec",
    "Evaluation",
    "EvaluationCorpus",
    "MetricsResult",
    "PairedTest",
    "PipelineSpec",
    "ResultsTable",
    "RetrieverSpec",
    "SpecOptions",
    "System",
    "SystemResult",
    "compute_metrics",
    "evaluate",
    "evaluate_dataset",
    "make_spec",
    "markdown_table",
    "paired_t_test",
    "register_retriever",
    "registered_retrievers",
    "remove_identical_ids",
    "results_table",
    "write_report",
]
