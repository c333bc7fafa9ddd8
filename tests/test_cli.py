from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from retrievekit.cli.main import cli, main


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    "command", [[], ["data"], ["data", "inspect"], ["encode"], ["model", "info"], ["model", "save"], ["demo"]]
)
def test_every_command_has_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_data_inspect_prints_splits(toy_beir):
    result = invoke("data", "inspect", str(toy_beir))
    assert result.exit_code == 0
    assert "6 documents" in result.output and "test" in result.output and "train" in result.output


def test_encode_writes_embeddings_ids_and_manifest(toy_beir, tiny_bert_dir, tmp_path):
    out = tmp_path / "emb"
    result = invoke(
        "encode",
        "--model",
        str(tiny_bert_dir),
        "--pooling",
        "mean",
        "--input",
        str(toy_beir),
        "--output",
        str(out),
        "--batch-size",
        "4",
    )
    assert result.exit_code == 0, result.output
    ids = json.loads((out / "ids.json").read_text())
    assert ids == ["d1", "d2", "d3", "d4", "d5", "d6"]
    vectors = np.load(out / "embeddings.npy")
    assert vectors.shape == (6, 32) and vectors.dtype == np.float32
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "embeddings" and manifest["config"]["side"] == "documents"
    # documents are encoded as title + " " + text, as BEIR and MTEB do
    from retrievekit import load_encoder

    encoder = load_encoder(tiny_bert_dir, pooling="mean", device="cpu")
    expected = encoder.encode_documents(
        ["Protein folding Proteins fold into three dimensional structures that determine their function."]
    )
    np.testing.assert_allclose(vectors[0], expected[0], atol=1e-5)


def test_encode_queries_int8_keeps_calibration(toy_beir, tiny_bert_dir, tmp_path):
    out = tmp_path / "q"
    result = invoke(
        "encode",
        "-m",
        str(tiny_bert_dir),
        "--pooling",
        "cls",
        "-i",
        str(toy_beir / "queries.jsonl"),
        "-o",
        str(out),
        "--side",
        "queries",
        "--precision",
        "int8",
    )
    assert result.exit_code == 0, result.output
    from retrievekit.embeddings import load_embeddings

    saved = load_embeddings(out)
    assert saved.vectors.dtype == np.int8 and saved.calibration is not None and len(saved.ids) == 6


def test_errors_are_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", "--model", "minilm", "--input", str(bad), "--output", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {bad}:2: duplicate id 'a' (first seen on line 1)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_console_script_runs_and_logs_only_from_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "retrievekit", "--version"], capture_output=True, text=True, check=True
    )
    assert "retrievekit, version" in result.stdout
    probe = "import logging, warnings, retrievekit; print(len(logging.getLogger().handlers), logging.getLogger().level)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split() == [
        "0",
        "30",
    ]


def test_tables_print_brackets_in_data_as_text(capsys):
    """A linked mention "[early-onset breast cancer]" or an entity text with "[unused2]" is data, not
    rich markup: it is printed, never swallowed as a style tag."""
    from retrievekit.cli._output import print_table

    print_table("n1: ...women to [early-onset breast cancer] and...", ("rank", "text"), [(1, "a [unused2] b")])
    out = capsys.readouterr().out
    assert "[early-onset breast cancer]" in out and "[unused2]" in out
