from __future__ import annotations

import logging

import pytest

from retrievekit.data import (
    BeirDataset,
    Run,
    check_qrels,
    iter_documents,
    read_corpus,
    read_qrels,
    read_queries,
    read_trec_run,
    write_trec_run,
)
from retrievekit.errors import DataFormatError, DatasetNotFoundError


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', 2, "malformed JSON"),
        ('{"_id": "a", "text": "x"}\n{"text": "y"}\n', 2, "missing field '_id'"),
        ('{"_id": "a"}\n', 1, "missing field 'text'"),
        ('{"_id": "a", "text": "x"}\n\n{"_id": "a", "text": "y"}\n', 3, "duplicate id 'a' (first seen on line 1)"),
        ('{"_id": "a", "text": 5}\n', 1, "field 'text' must be a string"),
        ('["a", "b"]\n', 1, "expected a JSON object"),
        ('{"_id": "  ", "text": "x"}\n', 1, "field '_id' is empty"),
    ],
)
def test_corpus_errors_name_file_line_and_problem(tmp_path, content, line, problem):
    path = write(tmp_path / "corpus.jsonl", content)
    with pytest.raises(DataFormatError) as info:
        read_corpus(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert problem in str(info.value)


def test_non_utf8_bytes_are_reported_with_line(tmp_path):
    path = write(tmp_path / "corpus.jsonl", b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        read_corpus(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = write(tmp_path / "queries.jsonl", content)
    with pytest.raises(DataFormatError, match=r"queries.jsonl: the file is empty"):
        read_queries(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataFormatError, match="file not found"):
        read_corpus(tmp_path / "nope.jsonl")


def test_documents_stream_one_at_a_time(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"broken\n')
    stream = iter_documents(path)
    assert next(stream).id == "a"  # yielded before the bad line 3 is read
    assert next(stream).id == "b"
    with pytest.raises(DataFormatError, match=":3: malformed JSON"):
        next(stream)


def test_titles_numeric_ids_and_full_text(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"_id": 7, "title": "T", "text": "body"}\n{"_id": "x", "text": "only"}\n')
    corpus = read_corpus(path)
    assert corpus.ids == ["7", "x"]
    assert corpus["7"].full_text == "T body"
    assert corpus["x"].full_text == "only"


def test_tsv_corpus_and_queries(tmp_path):
    corpus = read_corpus(write(tmp_path / "c.tsv", "id\ttext\ttitle\nd1\tsome text\tTitle\nd2\tmore\n"))
    assert [(d.id, d.text, d.title) for d in corpus] == [("d1", "some text", "Title"), ("d2", "more", "")]
    queries = read_queries(write(tmp_path / "q.tsv", "q1\twhat is it\n"))
    assert queries["q1"].text == "what is it"
    with pytest.raises(DataFormatError, match=r"q2.tsv:1: expected 2 tab-separated fields"):
        read_queries(write(tmp_path / "q2.tsv", "lonely\n"))


def test_beir_and_trec_qrels(tmp_path):
    beir = read_qrels(write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td1\t0\n"))
    trec = read_qrels(write(tmp_path / "qrels.trec", "q1 0 d1 1\nq1 0 d2 2\nq2 0 d1 0\n"))
    assert beir.to_dict() == trec.to_dict() == {"q1": {"d1": 1, "d2": 2}, "q2": {"d1": 0}}
    assert beir.relevant("q1") == {"d1", "d2"} and beir.relevant("q2") == set()
    assert beir.num_pairs == 3
    with pytest.raises(DataFormatError, match=r"bad.tsv:2: relevance grade 'high' is not an integer"):
        read_qrels(write(tmp_path / "bad.tsv", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n"))
    with pytest.raises(DataFormatError, match=r"twice.tsv:2: pair \('q1', 'd1'\) is judged twice"):
        read_qrels(write(tmp_path / "twice.tsv", "q1\td1\t1\nq1\td1\t1\n"))


def test_trec_run_round_trip(tmp_path):
    run = Run({"q1": [("d2", 0.5), ("d1", 0.9)], "q2": [("d3", 1.0)]})
    assert [d.doc_id for d in run["q1"]] == ["d1", "d2"]  # best first
    path = write_trec_run(run, tmp_path / "run.trec", tag="test")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 0.9 test"
    assert lines[1] == "q1 Q0 d2 2 0.5 test"
    assert read_trec_run(path).to_dict() == run.to_dict()
    with pytest.raises(DataFormatError, match=r"bad.trec:1: expected 6 fields"):
        read_trec_run(write(tmp_path / "bad.trec", "q1 Q0 d1 1 0.5\n"))


def test_qrels_with_unknown_ids_fail_by_default(toy_beir):
    (toy_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tghost\t1\nq9\td2\t1\n")
    dataset = BeirDataset(toy_beir)
    with pytest.raises(DataFormatError) as info:
        dataset.load("test")
    message = str(info.value)
    assert "1 judgement(s) name documents not in the corpus (first: query 'q1', document 'ghost')" in message
    assert "1 judged quer(ies) are not in the queries file (first: 'q9')" in message
    assert "strict=False" in message


def test_qrels_with_unknown_ids_warn_when_not_strict(toy_beir, caplog):
    (toy_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tghost\t1\nq9\td2\t1\n")
    with caplog.at_level(logging.WARNING):
        split = BeirDataset(toy_beir).load("test", strict=False)
    assert split.check.unknown_documents == 1 and split.check.unknown_queries == 1
    assert "1 judgement(s) name documents not in the corpus" in caplog.text
    # the unknown document stays judged (relevant but unretrievable); the query without text is dropped, and said so
    assert split.qrels.to_dict() == {"q1": {"d1": 1, "ghost": 1}}
    assert split.queries.ids == ["q1"]


def test_beir_folder_loads_judged_queries_of_a_split(toy_beir):
    dataset = BeirDataset(toy_beir)
    assert dataset.splits == ["test", "train"]
    split = dataset.load("test")
    assert len(split.corpus) == 6
    assert split.queries.ids == ["q1", "q2", "q3", "q4"]  # file order, judged in this split only
    assert split.qrels["q4"] == {"d5": 2, "d3": 0}
    with pytest.raises(DatasetNotFoundError, match=r"has no split 'dev' \(available: test, train\)"):
        dataset.load("dev")
    assert dataset.fingerprint("test") != dataset.fingerprint("train")
    assert [d.id for d in dataset.iter_corpus()][:2] == ["d1", "d2"]


def test_check_qrels_accepts_id_sets(toy_beir):
    dataset = BeirDataset(toy_beir)
    qrels, check = check_qrels(dataset.qrels("test"), {"d1", "d2", "d3", "d4", "d5"}, {"q1", "q2", "q3", "q4"})
    assert check.ok and check.judged_pairs == 5 and qrels.num_pairs == 5


@pytest.mark.skipif(not (__import__("conftest").SHARED_DATA / "scifact").is_dir(), reason="shared SciFact not present")
def test_real_scifact_matches_its_description():
    split = BeirDataset(__import__("conftest").SHARED_DATA / "scifact").load("test")
    assert (len(split.corpus), len(split.queries), split.qrels.num_pairs) == (5183, 300, 339)
