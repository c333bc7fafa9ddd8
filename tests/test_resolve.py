from __future__ import annotations

import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import TOY_BEIR
from retrievekit import load_dataset, resolve_dataset, resolve_model
from retrievekit.errors import DatasetNotFoundError, ModelNotFoundError


def test_explicit_path_wins(toy_beir):
    assert resolve_dataset(toy_beir) == toy_beir.resolve()
    with pytest.raises(DatasetNotFoundError, match="is not a BEIR folder"):
        resolve_dataset(toy_beir / "qrels")


def test_datasets_env_var_then_cache(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    shutil.copytree(TOY_BEIR, second / "toyset")
    monkeypatch.setenv("RETRIEVEKIT_DATASETS", f"{first}:{second}")
    assert resolve_dataset("toyset") == (second / "toyset").resolve()
    monkeypatch.delenv("RETRIEVEKIT_DATASETS")
    cached = tmp_path / "cache" / "datasets" / "toyset"
    shutil.copytree(TOY_BEIR, cached)
    assert resolve_dataset("toyset") == cached


def test_missing_dataset_without_download_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVEKIT_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'nfcorpus' not found \(looked in .*nowhere/nfcorpus"):
        resolve_dataset("nfcorpus", download=False)


@pytest.fixture
def zip_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "toyset.zip", "w") as bundle:
        for path in TOY_BEIR.rglob("*"):
            if path.is_file():
                bundle.write(path, Path("toyset") / path.relative_to(TOY_BEIR))
    (served / "broken.zip").write_bytes(b"not a zip")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_from_a_local_server_into_the_cache(zip_server, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("RETRIEVEKIT_BEIR_URL", zip_server)
    path = resolve_dataset("toyset")
    assert path == tmp_path / "cache" / "datasets" / "toyset"
    assert load_dataset("toyset").load("test").qrels.num_pairs == 5
    monkeypatch.setenv("RETRIEVEKIT_BEIR_URL", "http://127.0.0.1:9")  # nothing listens: the cache must answer
    assert resolve_dataset("toyset") == path
    with pytest.raises(DatasetNotFoundError, match="did not return a zip archive"):
        resolve_dataset("broken", base_url=zip_server)
    with pytest.raises(DatasetNotFoundError, match=r"downloading http://127.0.0.1:9/other.zip failed"):
        resolve_dataset("other")


def test_models_by_alias_path_and_offline_hub_id(minilm_dir, tiny_bert_dir):
    for alias in ("minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        assert resolve_model(alias) == minilm_dir
    assert resolve_model(tiny_bert_dir) == tiny_bert_dir.resolve()
    with pytest.raises(ModelNotFoundError, match=r"this machine is offline .* Pass a local directory"):
        resolve_model("BAAI/bge-small-en-v1.5")
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        resolve_model("./does/not/exist")


def test_archive_limits(zip_server, tmp_path, monkeypatch):
    import stat

    from retrievekit import resolve as resolve_module
    from retrievekit.resolve import safe_extract

    monkeypatch.delenv("HF_HUB_OFFLINE")
    served = tmp_path / "served"  # the fixture's folder: files written here are served
    with zipfile.ZipFile(served / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("bomb/corpus.jsonl", b"0" * (20 * 1024 * 1024))  # 20 MB of zeros: ~20 KB zipped
    with pytest.raises(DatasetNotFoundError, match=r"expands beyond .* refusing a zip bomb"):
        resolve_dataset("bomb", base_url=zip_server)
    assert not (tmp_path / "cache" / "datasets" / "bomb").exists()
    with pytest.raises(DatasetNotFoundError, match="not a dataset name"):
        resolve_dataset("..%2Fetc", base_url=zip_server)

    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as bundle:
        info = zipfile.ZipInfo("toy/corpus.jsonl")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(info, "/etc/passwd")
    with zipfile.ZipFile(link) as bundle, pytest.raises(DatasetNotFoundError, match="symbolic link"):
        safe_extract(bundle, tmp_path / "out1", source="link.zip", compressed_bytes=link.stat().st_size)
    plain = served / "toyset.zip"
    with zipfile.ZipFile(plain) as bundle:
        bundle.infolist()[0].compress_type = 99
        with pytest.raises(DatasetNotFoundError, match="unknown compression method"):
            safe_extract(bundle, tmp_path / "out2", source="x.zip", compressed_bytes=plain.stat().st_size)
    monkeypatch.setattr(resolve_module, "MAX_ARCHIVE_FILES", 2)
    with zipfile.ZipFile(plain) as bundle, pytest.raises(DatasetNotFoundError, match="entries \\(limit 2\\)"):
        safe_extract(bundle, tmp_path / "out3", source="x.zip", compressed_bytes=plain.stat().st_size)


def test_downloads_are_checked_against_known_contents(zip_server, monkeypatch):
    from retrievekit import resolve as resolve_module

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(resolve_module.KNOWN_SIZES, "toyset", {"documents": 99})
    with pytest.raises(DatasetNotFoundError, match=r"corpus\.jsonl holds 6 records, toyset has 99"):
        resolve_dataset("toyset", base_url=zip_server)


def test_the_demo_offline_says_what_to_do(monkeypatch, capsys):
    from retrievekit.cli.main import main

    monkeypatch.delenv("RETRIEVEKIT_DATASETS", raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(["demo"])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "retrievekit data fetch scifact" in error and "RETRIEVEKIT_DATASETS" in error
