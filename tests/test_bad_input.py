"""Realistic bad input is a result or a one-line error naming file:line and the field: never a
crash, a stack trace or a silent guess (issue: hardening, items 4 and 5)."""

from __future__ import annotations

import errno
import json
import logging

import numpy as np
import pytest

from retrievekit.cli.main import main
from retrievekit.data import read_qrels, read_trec_run
from retrievekit.data.readers import read_corpus, read_queries
from retrievekit.errors import ConfigError, DataFormatError
from retrievekit.evaluation import evaluate_dataset
from retrievekit.index import ExactIndex

pytest.importorskip("bm25s")


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_negative_grades_are_non_relevant_and_absurd_ones_refused(toy_beir, tmp_path):
    qrels = toy_beir / "qrels" / "test.tsv"
    base = evaluate_dataset(toy_beir, systems=["bm25"], k_values=[1, 10], cache=False).systems[0].metrics.aggregate
    qrels.write_text(qrels.read_text() + "q1\td3\t-5\nq2\td6\t-2\n")  # TREC marks spam -2
    spam = evaluate_dataset(toy_beir, systems=["bm25"], k_values=[1, 10], cache=False).systems[0].metrics.aggregate
    assert spam == base  # judged non-relevant: the same as unjudged for these metrics
    for grade, message in (("1e30", "not an integer"), ("1_0", "not an integer"), ("100000", "out of range")):
        with pytest.raises(DataFormatError, match=rf"bad\.tsv:1: relevance grade '{grade}' is {message}"):
            read_qrels(_write(tmp_path / "bad.tsv", f"q1\td1\t{grade}\n"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"_id": "a\\tb", "text": "x"}', "contains whitespace"),
        ('{"_id": "a b", "text": "x"}', "contains whitespace"),
        ('{"_id": "a\\nb", "text": "x"}', "contains whitespace"),
        ('{"_id": "\\ud800", "text": "x"}', "lone surrogate"),
        ('{"_id": NaN, "text": "x"}', "NaN is not a valid JSON value"),
        ('{"_id": Infinity, "text": "x"}', "Infinity is not a valid JSON value"),
        ('{"_id": 1.5, "text": "x"}', "must be a string"),
        ('{"_id": "a", "text": "x", "text": "y"}', "key 'text' appears twice"),
    ],
)
def test_ids_and_json_are_checked_at_the_edge(tmp_path, line, message):
    path = _write(tmp_path / "corpus.jsonl", '{"_id": "ok", "text": "fine"}\n' + line + "\n")
    with pytest.raises(DataFormatError, match=rf"corpus\.jsonl:2: .*{message}"):
        read_corpus(path)


def test_tsv_columns_and_empty_ids(tmp_path):
    with pytest.raises(DataFormatError, match=r"docs\.tsv:1: expected 2 to 3 tab-separated fields .* found 4"):
        read_corpus(_write(tmp_path / "docs.tsv", "d1\ttext\ttitle\textra\n"))
    with pytest.raises(DataFormatError, match=r"q\.tsv:2: id is empty"):
        read_queries(_write(tmp_path / "q.tsv", "q1\tfine\n\tno id\n"))


def test_non_finite_scores_in_runs(tmp_path):
    for score in ("nan", "inf", "-Infinity"):
        with pytest.raises(DataFormatError, match=rf"run\.trec:1: score '{score}' is not a finite number"):
            read_trec_run(_write(tmp_path / "run.trec", f"q1 Q0 d1 1 {score} tag\n"))


def test_index_ids_that_would_break_a_trec_run():
    index = ExactIndex(2)
    for bad in ("a b", "tab\there", "", "\ud800"):
        with pytest.raises(ConfigError, match="id"):
            index.add([bad], np.ones((1, 2), dtype=np.float32))


def test_a_corpus_of_stop_words_is_a_one_line_error(tmp_path, capsys):
    corpus = _write(tmp_path / "corpus.jsonl", '{"_id": "a", "text": "the and of"}\n{"_id": "b", "text": "a an"}\n')
    with pytest.raises(SystemExit) as stopped:
        main(["index", "build", "--corpus", str(corpus), "--type", "bm25", "--output", str(tmp_path / "i")])
    error = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and "has a term left after stopword removal" in error and "\n" not in error


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_old_index(tmp_path, capsys, monkeypatch):
    corpus = _write(tmp_path / "corpus.jsonl", '{"_id": "a", "text": "protein folding"}\n')
    target = tmp_path / "index"
    args = ["index", "build", "--corpus", str(corpus), "--type", "bm25", "--output", str(target)]
    main(args)
    before = (target / "ids.json").read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(target / "texts.json"))

    monkeypatch.setattr("retrievekit.index.bm25.Bm25Index._save_payload", full)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    error = capsys.readouterr().err.strip()
    assert stopped.value.code == 1 and "No space left on device" in error and "previous files are intact" in error
    assert "\n" not in error and (target / "ids.json").read_text() == before


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("data: {batch_size: 3.9}", "data.batch_size: cannot read 3.9 as int"),
        ("data: {num_negatives: true}", "data.num_negatives: cannot read True as int"),
        ("data: {query_max_length: 0}", "query_max_length must be at least 2"),
        ("optimizer: {learning_rate: .nan}", "optimizer.learning_rate: cannot read nan as float"),
        ("optimizer: {learning_rate: -1.0e-5}", "learning_rate must be 0 or more"),
        ("loss: {temperature: 0}", "temperature must be a positive number"),
        ("run: {resume: 5}", "run.resume: cannot read 5 as bool"),
    ],
)
def test_training_config_values_are_checked(tmp_path, yaml_text, message):
    pytest.importorskip("yaml")
    from retrievekit.training.config import load_config

    with pytest.raises(ConfigError, match=rf"train\.yaml:3: {message}"):  # the file and the option's line
        load_config(
            _write(
                tmp_path / "train.yaml", "# a training config\n" + yaml_text.replace(": {", ":\n  ").rstrip("}") + "\n"
            )
        )


def test_a_utf16_yaml_config_loads(tmp_path):
    pytest.importorskip("yaml")
    from retrievekit.training.config import load_config

    config = load_config(_write(tmp_path / "train.yaml", "\ufeffdata: {batch_size: 4}\n", "utf-16-le"))
    assert config.data.batch_size == 4
    (tmp_path / "bad.yaml").write_bytes(b"data: {batch_size: \xff}\n")
    with pytest.raises(ConfigError, match="not UTF-8 or UTF-16 text"):
        load_config(tmp_path / "bad.yaml")


def test_a_capped_max_length_is_said(tiny_bert_dir, caplog):
    from retrievekit import load_encoder

    encoder = load_encoder(tiny_bert_dir, pooling="mean", device="cpu")
    with caplog.at_level(logging.WARNING):
        encoder.encode_documents(["a text"], max_length=100000)
    assert "max_length 100000 is above the model's limit of 64 tokens: capped" in caplog.text
    assert caplog.text.count("is above the model's limit") == 1  # said once per call


def test_json_written_ids_round_trip(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", json.dumps({"_id": 7, "text": "numeric id"}) + "\n")
    assert read_corpus(path).ids == ["7"]
