"""Paired significance tests between systems evaluated on the same queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrievekit._optional import require

__all__ = ["PairedTest", "paired_t_test"]


@dataclass(frozen=True)
class PairedTest:
    metric: str
    mean_difference: float
    statistic: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def paired_t_test(baseline: np.ndarray, system: np.ndarray, metric: str) -> PairedTest:
    """Two-sided paired t-test of ``system`` against ``baseline`` (per-query values, same order).

    >>> test = paired_t_test(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.2, 0.3, 0.5, 0.5]), "ndcg@10")
    >>> round(test.mean_difference, 3), round(test.p_value, 4)  # t = 0.125 / (0.05 / 2) = 5 with 3 df
    (0.125, 0.0154)
    """
    stats = require("scipy.stats", extra="eval", purpose="Significance tests")
    if baseline.shape != system.shape:
        raise ValueError("paired tests need the same queries on both sides")
    difference = system - baseline
    if np.allclose(difference, 0):
        return PairedTest(metric, 0.0, 0.0, 1.0)
    result = stats.ttest_rel(system, baseline)
    return PairedTest(metric, float(difference.mean()), float(result.statistic), float(result.pvalue))
