"""Streaming readers for corpora, queries, qrels and runs: BEIR JSONL/TSV, plain TSV, TREC.

Every reader yields records one at a time (a pass over a corpus never needs it all in memory) and
raises :class:`~retrievekit.errors.DataFormatError` naming the file, the line and the problem.
Nothing is silently skipped: blank lines are the only lines ignored.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from retrievekit.data.records import Corpus, Document, Qrels, Queries, Query, Run, ScoredDocument, id_problem
from retrievekit.errors import DataFormatError

Record = TypeVar("Record", Document, Query)

__all__ = [
    "LineBlock",
    "iter_documents",
    "iter_jsonl",
    "iter_lines",
    "iter_numbered_documents",
    "iter_numbered_queries",
    "iter_queries",
    "line_blocks",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_trec_run",
]


def iter_lines(
    path: str | Path, *, start: int = 0, first_number: int = 1, limit: int | None = None
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for non-blank lines, decoding UTF-8 line by line.

    Raises on a missing file, an empty file and bytes that are not UTF-8 (naming the line). A
    ``.gz`` file is read through gzip. ``start`` (a byte offset where line ``first_number`` begins)
    and ``limit`` (how many non-blank lines) read one block of a file (see :func:`line_blocks`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    seen_content = 0
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
        if start:
            handle.seek(start)
        for number, raw in enumerate(_raw_lines(handle, path), start=first_number):
            if limit is not None and seen_content == limit:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(
                    path, f"not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})", number
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            seen_content += 1
            yield number, line
    if not seen_content and start == 0:
        raise DataFormatError(path, "the file is empty")


@dataclass(frozen=True)
class LineBlock:
    """``count`` non-blank lines of a file, the first of them line ``first_number`` at byte ``start``."""

    start: int
    first_number: int
    count: int


def line_blocks(path: str | Path, lines_per_block: int) -> list[LineBlock]:
    """Cut an uncompressed file into blocks of ``lines_per_block`` non-blank lines, read as bytes
    without parsing: what parallel readers (Ray Data tasks) each read with :func:`iter_lines`."""
    path = Path(path)
    if path.suffix == ".gz":
        raise DataFormatError(path, "a gzip file cannot be read in parallel blocks; decompress it first")
    blocks: list[LineBlock] = []
    offset, number, count, block_start, block_first = 0, 0, 0, 0, 1
    with path.open("rb") as handle:
        for raw in handle:
            number += 1
            if raw.strip():
                if count == 0:
                    block_start, block_first = offset, number
                count += 1
                if count == lines_per_block:
                    blocks.append(LineBlock(block_start, block_first, count))
                    count = 0
            offset += len(raw)
    if count:
        blocks.append(LineBlock(block_start, block_first, count))
    return blocks


def _raw_lines(handle: Any, path: Path) -> Iterator[bytes]:
    """The lines of a file handle; a damaged gzip stream is a one-line error, not a traceback."""
    try:
        yield from handle
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; a cut stream an EOFError
        raise DataFormatError(path, f"not a readable gzip file ({exc})") from None


def count_records(path: str | Path) -> int:
    """About how many records a JSONL or TSV file holds (its non-blank lines, a TSV header not
    counted), read as bytes without parsing: the total of a progress bar."""
    path = Path(path)
    count, first = 0, b""
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                count += 1
                first = first or raw
    header = first.split(b"\t", 1)[0].strip().lower() in {b"id", b"_id", b"doc_id", b"docid", b"query_id", b"qid"}
    return count - 1 if _is_tsv(path) and header else count


def iter_jsonl(path: str | Path, **block: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each JSON object line (of one block: :func:`iter_lines`)."""
    for number, line in iter_lines(path, **block):
        try:
            value = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", number) from None
        except ValueError as exc:  # a repeated key or NaN/Infinity
            raise DataFormatError(path, str(exc), number) from None
        if not isinstance(value, dict):
            raise DataFormatError(path, f"expected a JSON object, found {type(value).__name__}", number)
        yield number, value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON value")


def checked_id(path: Path, number: int, value: str, what: str = "id") -> str:
    """``value`` if it can serve as an id (see :func:`~retrievekit.data.records.id_problem`)."""
    problem = id_problem(value)
    if problem == "is empty":
        raise DataFormatError(path, f"{what} is empty", number)
    if problem:
        raise DataFormatError(path, f"{what} {value!r:.60} {problem}", number)
    return value


def _string_field(path: Path, number: int, row: dict[str, Any], key: str, *, required: bool) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise DataFormatError(path, f"missing field {key!r}", number)
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and key == "_id":
        value = str(value)  # BEIR files sometimes carry numeric ids
    if not isinstance(value, str):
        raise DataFormatError(path, f"field {key!r} must be a string, found {type(value).__name__}", number)
    if key == "_id":
        return checked_id(path, number, value, "field '_id'")
    return value


def _is_tsv(path: Path) -> bool:
    return path.suffix.lower() in {".tsv", ".tab"}


def _tsv_rows(path: Path, min_fields: int, max_fields: int, what: str, **block: int) -> Iterator[tuple[int, list[str]]]:
    for number, line in iter_lines(path, **block):
        fields = line.split("\t")
        if not min_fields <= len(fields) <= max_fields:
            expected = f"{min_fields}" if min_fields == max_fields else f"{min_fields} to {max_fields}"
            raise DataFormatError(
                path, f"expected {expected} tab-separated fields ({what}), found {len(fields)}", number
            )
        checked_id(path, number, fields[0].strip())
        yield number, fields


def iter_documents(path: str | Path) -> Iterator[Document]:
    """Stream documents from a JSONL (``_id``, ``text``, optional ``title``) or TSV (``id<TAB>text[<TAB>title]``) file.

    Duplicate ids raise, naming both lines. Only the ids are kept in memory.
    """
    return _unique(Path(path), iter_numbered_documents(path))


def iter_numbered_documents(path: str | Path, **block: int) -> Iterator[tuple[int, Document]]:
    """``(line number, document)`` of a file or of one block of it (``start``, ``first_number``,
    ``limit``: see :func:`iter_lines`); ids are checked, repeats are not (see :func:`iter_documents`)."""
    path = Path(path)
    if _is_tsv(path):
        rows = (
            (n, Document(f[0].strip(), f[1], f[2] if len(f) > 2 else ""))
            for n, f in _tsv_rows(path, 2, 3, "id, text, title", **block)
        )
        return ((n, d) for n, d in rows if not (n == 1 and d.id in {"id", "_id", "doc_id", "docid"}))
    return (
        (
            n,
            Document(
                _string_field(path, n, row, "_id", required=True),
                _string_field(path, n, row, "text", required=True),
                _string_field(path, n, row, "title", required=False),
            ),
        )
        for n, row in iter_jsonl(path, **block)
    )


def _unique(path: Path, rows: Iterator[tuple[int, Record]]) -> Iterator[Record]:
    """The records of ``rows``, raising on an id seen before (naming both lines)."""
    first_line: dict[str, int] = {}
    for number, record in rows:
        if record.id in first_line:
            raise DataFormatError(
                path, f"duplicate id {record.id!r} (first seen on line {first_line[record.id]})", number
            )
        first_line[record.id] = number
        yield record


def iter_queries(path: str | Path) -> Iterator[Query]:
    """Stream queries from a JSONL (``_id``, ``text``) or TSV (``id<TAB>text``) file; duplicates raise."""
    return _unique(Path(path), iter_numbered_queries(path))


def iter_numbered_queries(path: str | Path, **block: int) -> Iterator[tuple[int, Query]]:
    """``(line number, query)`` of a file or of one block of it (see :func:`iter_numbered_documents`)."""
    path = Path(path)
    if _is_tsv(path):
        rows = ((n, Query(f[0].strip(), f[1])) for n, f in _tsv_rows(path, 2, 2, "id, text", **block))
        return ((n, q) for n, q in rows if not (n == 1 and q.id in {"id", "_id", "query_id", "qid"}))
    return (
        (
            n,
            Query(
                _string_field(path, n, row, "_id", required=True),
                _string_field(path, n, row, "text", required=True),
            ),
        )
        for n, row in iter_jsonl(path, **block)
    )


def read_corpus(path: str | Path) -> Corpus:
    return Corpus(iter_documents(path))


def read_queries(path: str | Path) -> Queries:
    return Queries(iter_queries(path))


_GRADE = re.compile(r"[+-]?\d+(\.0*)?")
MAX_GRADE = 1000


def _parse_grade(path: Path, number: int, value: str) -> int:
    """An integer grade (``2``, ``-2``, ``1.0``). Negative grades (TREC marks spam with -2) mean
    non-relevant, as in trec_eval; |grade| above :data:`MAX_GRADE` is refused."""
    if not _GRADE.fullmatch(value):
        raise DataFormatError(path, f"relevance grade {value!r} is not an integer", number)
    grade = int(value.split(".")[0])
    if abs(grade) > MAX_GRADE:
        raise DataFormatError(path, f"relevance grade {value!r} is out of range (-{MAX_GRADE} to {MAX_GRADE})", number)
    return grade


def read_qrels(path: str | Path) -> Qrels:
    """Read qrels from a BEIR TSV (``query-id<TAB>corpus-id<TAB>score``, header optional) or a TREC
    qrels file (``qid iteration docid grade``, whitespace separated). A pair judged twice raises."""
    path = Path(path)
    judgements: dict[str, dict[str, int]] = {}
    for number, line in iter_lines(path):
        if "\t" in line:
            fields = line.split("\t")
            if number == 1 and fields[0].strip().lower() in {"query-id", "query_id", "qid"}:
                continue
            if len(fields) == 4:  # TREC qrels written with tabs
                fields = [fields[0], fields[2], fields[3]]
            if len(fields) != 3:
                raise DataFormatError(
                    path, f"expected 3 tab-separated fields (query-id, corpus-id, score), found {len(fields)}", number
                )
        else:
            fields = line.split()
            if len(fields) != 4:
                raise DataFormatError(
                    path, f"expected 4 fields in a TREC qrels line (qid iter docid grade), found {len(fields)}", number
                )
            fields = [fields[0], fields[2], fields[3]]
        qid, doc_id, grade = (f.strip() for f in fields)
        if not qid or not doc_id:
            raise DataFormatError(path, "empty query or document id", number)
        checked_id(path, number, qid, "query id")
        checked_id(path, number, doc_id, "document id")
        docs = judgements.setdefault(qid, {})
        if doc_id in docs:
            raise DataFormatError(path, f"pair ({qid!r}, {doc_id!r}) is judged twice", number)
        docs[doc_id] = _parse_grade(path, number, grade)
    return Qrels(judgements)


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``). Order follows the scores, best first."""
    path = Path(path)
    ranked: dict[str, list[ScoredDocument]] = {}
    seen: dict[str, set[str]] = {}
    for number, line in iter_lines(path):
        fields = line.split()
        if len(fields) != 6:
            raise DataFormatError(path, f"expected 6 fields (qid Q0 docid rank score tag), found {len(fields)}", number)
        qid, _, doc_id, rank, score, _tag = fields
        try:
            int(rank)
            value = float(score)
        except ValueError:
            raise DataFormatError(path, f"rank {rank!r} or score {score!r} is not a number", number) from None
        if not math.isfinite(value):
            raise DataFormatError(path, f"score {score!r} is not a finite number", number)
        if doc_id in seen.setdefault(qid, set()):
            raise DataFormatError(path, f"document {doc_id!r} appears twice for query {qid!r}", number)
        seen[qid].add(doc_id)
        ranked.setdefault(qid, []).append(ScoredDocument(doc_id, value))
    return Run(ranked)
