"""The trust boundary: an index folder someone hands you cannot switch on remote code, add loading
options beyond the allow-list, or point the program at a model outside itself."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from retrievekit.cli.main import cli, main
from retrievekit.errors import ArtifactError
from retrievekit.trust import check_artifact_model_options, recorded_model

pytest.importorskip("bm25s")


@pytest.fixture
def dense_index(toy_beir, tiny_bert_dir, tmp_path):
    folder = tmp_path / "index"
    args = ["index", "build", "--corpus", str(toy_beir), "--type", "flat", "--model", str(tiny_bert_dir)]
    result = CliRunner().invoke(cli, [*args, "--pooling", "mean", "--output", str(folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder


def _edit_manifest(folder, **changes):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"].update(changes)
    path.write_text(json.dumps(manifest))


def _search(folder, *extra):
    return main(["search", "--index", str(folder), "-q", "sleep and memory", *extra])


def test_a_manifest_cannot_switch_on_remote_code(dense_index, tiny_bert_dir, capsys, monkeypatch):
    loaded = []
    monkeypatch.setattr("retrievekit.models.load_encoder", lambda *a, **k: loaded.append(k))
    _edit_manifest(dense_index, model_options={"pooling": "mean", "trust_remote_code": True})
    with pytest.raises(SystemExit) as stopped:
        _search(dense_index, "--model", str(tiny_bert_dir))
    assert stopped.value.code == 2 and loaded == []  # refused before any model was loaded
    error = capsys.readouterr().err
    assert "model option 'trust_remote_code' may not come from a file" in error and "--trust-remote-code" in error
    assert "Traceback" not in error


def test_a_manifest_cannot_choose_a_model_outside_the_index(dense_index, tiny_bert_dir, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny_bert_dir, elsewhere)
    _edit_manifest(dense_index, model=str(elsewhere))
    with pytest.raises(SystemExit):
        _search(dense_index)
    assert f"pass --model {elsewhere}" in capsys.readouterr().err
    _edit_manifest(dense_index, model="../elsewhere")  # a relative path that climbs out
    with pytest.raises(SystemExit):
        _search(dense_index)
    _edit_manifest(dense_index, model="someone/hub-model")  # nor download one
    with pytest.raises(SystemExit):
        _search(dense_index)
    assert "outside the index" in capsys.readouterr().err


def test_a_model_inside_the_index_and_allowed_options_are_used(dense_index, tiny_bert_dir, capsys):
    shutil.copytree(tiny_bert_dir, dense_index / "model")
    _edit_manifest(dense_index, model="model", model_options={"pooling": "mean", "query_prompt": ""})
    _search(dense_index, "-k", "1")
    assert "1." in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pooling": "evil"}, "invalid value"),
        ({"max_length": 0}, "invalid value"),
        ({"normalize": "yes"}, "invalid value"),
        ({"device": "cuda"}, "may not come from a file"),
        (["pooling"], "must be a JSON object"),
    ],
)
def test_recorded_options_are_checked(options, message, tmp_path):
    with pytest.raises(ArtifactError, match=message):
        check_artifact_model_options(options, tmp_path / "manifest.json")
    assert recorded_model("minilm", tmp_path) == "minilm"
