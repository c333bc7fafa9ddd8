"""Writers for runs and JSONL records. Every write goes through a temporary file and a rename."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from retrievekit.artifacts import atomic_write_lines
from retrievekit.data.records import Run

__all__ = ["write_jsonl", "write_trec_run"]


def write_trec_run(run: Run, path: str | Path, *, tag: str = "retrievekit") -> Path:
    """Write a standard TREC run: ``qid Q0 docid rank score tag``, ranks from 1, best first.

    Scores are written in full (shortest round-trip form), so a run read back ranks and ties exactly
    as the one written: a cached run gives the same metrics as a fresh one."""
    if not tag or any(ch.isspace() for ch in tag):
        raise ValueError(f"run tag must be one word, got {tag!r}")
    path = Path(path)

    def lines() -> Iterable[str]:
        for qid in run:
            for rank, doc in enumerate(run[qid], start=1):
                yield f"{qid} Q0 {doc.doc_id} {rank} {doc.score!r} {tag}"

    atomic_write_lines(path, lines())
    return path


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    atomic_write_lines(path, (json.dumps(dict(r), ensure_ascii=False) for r in records))
    return path
