"""Real SciFact (from the shared data folder, when present): published numbers are reproduced."""

from __future__ import annotations

import pytest

from conftest import SHARED_DATA
from retrievekit.evaluation import evaluate_dataset

SCIFACT = SHARED_DATA / "scifact"
pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="shared SciFact not present")


def test_bm25_reproduces_the_published_score():
    result = evaluate_dataset(SCIFACT, systems=["bm25"], cache=False, k_values=[10, 100])
    assert abs(result.systems[0].metrics.aggregate["ndcg@10"] - 0.687) <= 0.01  # bm25s' published SciFact score


@pytest.mark.slow
def test_minilm_dense_reproduces_mteb(minilm, tmp_path):
    result = evaluate_dataset(SCIFACT, systems=["dense"], encoder=minilm, cache_root=tmp_path, k_values=[10, 100])
    metrics = result.systems[0].metrics.aggregate
    assert abs(metrics["ndcg@10"] - 0.6451) <= 0.0015  # MTEB's published 64.51
    assert abs(metrics["recall@100"] - 0.925) <= 0.005
