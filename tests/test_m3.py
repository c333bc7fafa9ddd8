"""BGE-M3: one pass gives FlagEmbedding's dense, lexical and multi-vector outputs; its score modes.

The oracle is FlagEmbedding's algorithm written out with plain transformers and torch calls on a
tiny random M3 built in its folder layout (``colbert_linear.pt`` / ``sparse_linear.pt``); where
FlagEmbedding itself is installed (the environment ``benchmarks/make_peer_env.sh`` builds), the
outputs and ``compute_score`` modes are compared with its own.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import build_tiny_m3, peer_python, run_peer
from retrievekit.errors import ArtifactError, ConfigError
from retrievekit.models.m3 import M3Encoder, M3Output, fuse_m3_scores, load_m3
from retrievekit.models.registry import detect_model_kind, load_model

TEXTS = ["vitamin d and bone health", "protein folding in cells of the immune response", "a", "", "cells " * 80]
PAIRS = [(TEXTS[0], TEXTS[1]), (TEXTS[1], TEXTS[0]), (TEXTS[2], TEXTS[4]), ("bone", TEXTS[0])]


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory):
    return build_tiny_m3(tmp_path_factory.mktemp("m3") / "m3")


@pytest.fixture(scope="module")
def m3(m3_dir) -> M3Encoder:
    return load_m3(m3_dir, device="cpu", query_max_length=16, document_max_length=48)


def flagembedding_outputs(folder, texts, max_length):
    """FlagEmbedding's M3 inference written out: CLS (normalised), relu(sparse_linear) max per
    token id without [CLS]/eos/pad/unk, colbert_linear of positions 1.. (normalised, padding cut)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    colbert = torch.nn.Linear(32, 32)
    colbert.load_state_dict(torch.load(folder / "colbert_linear.pt", weights_only=True))
    sparse = torch.nn.Linear(32, 1)
    sparse.load_state_dict(torch.load(folder / "sparse_linear.pt", weights_only=True))
    names = [t for t in ("cls_token", "eos_token", "pad_token", "unk_token") if t in tokenizer.special_tokens_map]
    unused = {tokenizer.convert_tokens_to_ids(tokenizer.special_tokens_map[t]) for t in names}
    dense, lexical, vectors = [], [], []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding to get wrong
            inputs = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**inputs).last_hidden_state
            dense.append(F.normalize(hidden[:, 0], dim=-1)[0].numpy())
            weights: dict[int, float] = {}
            token_weights = torch.relu(sparse(hidden))[0, :, 0].tolist()
            for w, token in zip(token_weights, inputs["input_ids"][0].tolist(), strict=True):
                if token not in unused and w > 0 and w > weights.get(token, 0.0):
                    weights[token] = w
            lexical.append(weights)
            vectors.append(F.normalize(colbert(hidden[:, 1:]), dim=-1)[0].numpy())
    return np.stack(dense), lexical, vectors


def as_dicts(output: M3Output) -> list[dict[int, float]]:
    return [{int(k): v for k, v in row.items()} for row in output.lexical_weights()]


def assert_same_lexical(ours: list[dict[int, float]], theirs: list[dict[int, float]]) -> None:
    for mine, reference in zip(ours, theirs, strict=True):
        assert set(mine) == set(reference), "the weighted tokens differ"
        for token, weight in reference.items():
            assert mine[token] == pytest.approx(weight, abs=1e-5)


def test_one_pass_equals_flagembeddings_formulas(m3, m3_dir):
    ours = m3.encode_documents(TEXTS, batch_size=2)  # several length-sorted batches, put back in order
    dense, lexical, vectors = flagembedding_outputs(m3_dir, TEXTS, 48)
    np.testing.assert_allclose(ours.dense, dense, atol=1e-5)
    assert_same_lexical(as_dicts(ours), lexical)
    assert [len(v) for v in ours.colbert] == [len(v) for v in vectors]  # [CLS] dropped, [SEP] kept
    for mine, reference in zip(ours.colbert, vectors, strict=True):
        np.testing.assert_allclose(mine, reference, atol=1e-5)
    special = {m3.tower.tokenizer.cls_token_id, m3.tower.tokenizer.sep_token_id, m3.tower.tokenizer.pad_token_id}
    assert not special & set(ours.sparse.indices.tolist())
    assert ours.sparse.nnz[3] == 0 and len(ours.colbert[3]) == 1  # "" -> only [SEP]: no weight, one vector
    assert len(ours.colbert[4]) == 47  # cut at document_max_length, less [CLS]
    heaviest = sorted(lexical[1].items(), key=lambda item: -item[1])[:3]  # FlagEmbedding's convert_id_to_token
    expected = [(m3.tower.tokenizer.convert_ids_to_tokens(t), w) for t, w in heaviest]
    assert [(t, pytest.approx(w, abs=1e-5)) for t, w in expected] == m3.decode(ours.sparse.take(np.array([1])), 3)[0]


def test_queries_are_cut_at_the_query_length(m3, m3_dir):
    queries = m3.encode_queries(TEXTS)
    _, lexical, vectors = flagembedding_outputs(m3_dir, TEXTS, 16)
    assert [len(v) for v in queries.colbert] == [len(v) for v in vectors]
    assert_same_lexical(as_dicts(queries), lexical)


def test_score_modes_follow_flagembedding(m3):
    scores = m3.compute_score(PAIRS, weights=(0.4, 0.2, 0.4))
    queries, documents = m3.encode_queries([q for q, _ in PAIRS]), m3.encode_documents([d for _, d in PAIRS])
    for i in range(len(PAIRS)):
        dense = float(queries.dense[i] @ documents.dense[i])
        q_weights, d_weights = as_dicts(queries)[i], as_dicts(documents)[i]
        sparse = sum(w * d_weights[t] for t, w in q_weights.items() if t in d_weights)
        colbert = float((queries.colbert[i] @ documents.colbert[i].T).max(axis=1).mean())  # mean over query vectors
        assert scores["dense"][i] == pytest.approx(dense, abs=1e-5)
        assert scores["sparse"][i] == pytest.approx(sparse, abs=1e-5)
        assert scores["colbert"][i] == pytest.approx(colbert, abs=1e-5)
        assert scores["sparse+dense"][i] == pytest.approx((0.2 * sparse + 0.4 * dense) / 0.6, abs=1e-5)
        assert scores["colbert+sparse+dense"][i] == pytest.approx(0.4 * dense + 0.2 * sparse + 0.4 * colbert, abs=1e-5)
    assert any(s > 0 for s in scores["sparse"]), "no pair shares a weighted token: the test checks nothing"
    equal = m3.compute_score(PAIRS)  # FlagEmbedding's default weights: 1, 1, 1
    np.testing.assert_allclose(
        equal["colbert+sparse+dense"], (equal["dense"] + equal["sparse"] + equal["colbert"]) / 3, atol=1e-6
    )
    matrix = m3.similarity(queries, documents, "sparse+dense", weights=(0.4, 0.2, 0.4))
    np.testing.assert_allclose(np.diagonal(matrix), scores["sparse+dense"], atol=1e-6)
    with pytest.raises(ConfigError, match="unknown BGE-M3 mode"):
        m3.similarity(queries, documents, "dense+colbert")
    with pytest.raises(ConfigError, match="weights"):
        fuse_m3_scores(np.zeros(1), np.zeros(1), np.zeros(1), (1.0, -1.0, 1.0))


def test_folder_is_detected_saved_as_safetensors_and_reloaded(m3, m3_dir, tmp_path):
    assert detect_model_kind(m3_dir) == "m3_encoder"
    assert isinstance(load_model(m3_dir, device="cpu"), M3Encoder)
    saved = m3.save(tmp_path / "saved")
    assert (saved / "colbert_linear.safetensors").is_file() and not list(saved.glob("*.pt"))
    again = load_model(saved, device="cpu")
    assert isinstance(again, M3Encoder) and again.fingerprint == m3.fingerprint
    assert again.config.query_max_length == 16
    a, b = m3.encode_documents(TEXTS), again.encode_documents(TEXTS)
    np.testing.assert_allclose(a.dense, b.dense, atol=1e-6)
    np.testing.assert_allclose(a.colbert.vectors, b.colbert.vectors, atol=1e-6)
    assert (a.sparse.indices == b.sparse.indices).all()
    restored = M3Output.load(a.save(tmp_path / "outputs"))
    assert restored.lexical_weights() == a.lexical_weights()
    # the heads are weights: another colbert head gives another fingerprint
    other = tmp_path / "other"
    shutil.copytree(m3_dir, other)
    torch.save({"weight": torch.zeros(32, 32), "bias": torch.zeros(32)}, other / "colbert_linear.pt")
    assert load_m3(other, device="cpu").fingerprint != load_m3(m3_dir, device="cpu").fingerprint


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_head_files_are_data_never_code(m3_dir, tmp_path, capsys):
    folder = tmp_path / "hostile"
    shutil.copytree(m3_dir, folder)
    torch.save({"weight": _Payload()}, folder / "sparse_linear.pt")  # a pickle that would run print()
    with pytest.raises(ArtifactError, match=r"sparse_linear\.pt: not a tensor file readable without running code"):
        load_m3(folder)
    assert "code ran" not in capsys.readouterr().out
    torch.save({"weight": torch.zeros(2, 32)}, folder / "sparse_linear.pt")  # two weights per token
    with pytest.raises(ConfigError, match="one weight per token"):
        load_m3(folder)
    torch.save({"weight": torch.zeros(1, 8)}, folder / "sparse_linear.pt")  # the wrong hidden size
    with pytest.raises(ArtifactError, match=r"sparse_linear\.pt: expected 'weight' of shape \(out, 32\)"):
        load_m3(folder)
    (folder / "sparse_linear.pt").write_bytes(b"not a file torch wrote")
    with pytest.raises(ArtifactError, match=r"sparse_linear\.pt"):
        load_m3(folder)


PEER_SCRIPT = """
import json, sys
from FlagEmbedding import BGEM3FlagModel
folder, out, texts, pairs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
model = BGEM3FlagModel(folder, use_fp16=False, devices="cpu", query_max_length=16, passage_max_length=48)
enc = model.encode_corpus(texts, batch_size=2, return_dense=True, return_sparse=True, return_colbert_vecs=True)
scores = model.compute_score([tuple(p) for p in pairs], batch_size=2, max_query_length=16, max_passage_length=48,
                             weights_for_different_modes=[0.4, 0.2, 0.4])
json.dump({"dense": enc["dense_vecs"].tolist(),
           "lexical": [{k: float(v) for k, v in w.items()} for w in enc["lexical_weights"]],
           "colbert": [c.tolist() for c in enc["colbert_vecs"]],
           "scores": {k: [float(x) for x in v] for k, v in scores.items()}}, open(out, "w"))
"""


@pytest.mark.skipif(peer_python() is None, reason="FlagEmbedding's environment: run benchmarks/make_peer_env.sh")
def test_outputs_and_scores_equal_flagembeddings_own(m3, m3_dir, tmp_path):
    result = tmp_path / "flagembedding.json"
    run_peer(PEER_SCRIPT, str(m3_dir), str(result), json.dumps(TEXTS), json.dumps(PAIRS))
    reference = json.loads(result.read_text())
    ours = m3.encode_documents(TEXTS, batch_size=2)
    np.testing.assert_allclose(ours.dense, np.array(reference["dense"]), atol=1e-5)
    assert_same_lexical(as_dicts(ours), [{int(k): v for k, v in row.items()} for row in reference["lexical"]])
    for mine, theirs in zip(ours.colbert, reference["colbert"], strict=True):
        np.testing.assert_allclose(mine, np.array(theirs), atol=1e-5)
    scores = m3.compute_score(PAIRS, weights=(0.4, 0.2, 0.4))
    for mode, values in reference["scores"].items():
        np.testing.assert_allclose(scores[mode], values, atol=1e-5, err_msg=mode)


def test_every_mode_retrieves_what_exhaustive_scoring_ranks_first(m3):
    from conftest import TOY_BEIR
    from retrievekit.data.beir import BeirDataset
    from retrievekit.retrieval.m3 import M3Retriever

    split = BeirDataset(TOY_BEIR).load("test")
    ids, texts = split.corpus.ids, split.corpus.texts()
    corpus = m3.encode_documents(texts)
    queries = split.queries.texts()[:3]
    encoded = m3.encode_queries(queries)
    for mode in ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"):
        # depth covers the corpus: the fused modes then score every document
        retriever = M3Retriever(m3, ids, corpus, mode=mode, weights=(0.4, 0.2, 0.4), depth=len(ids))
        expected = m3.similarity(encoded, corpus, mode, weights=(0.4, 0.2, 0.4))
        for row, hits in enumerate(retriever.search(queries, k=4)):
            best = np.sort(expected[row])[::-1][:4]
            if mode == "sparse":  # an inverted index returns the documents sharing a term with the query
                best = best[best > 0]
            np.testing.assert_allclose(hits.scores, best, atol=1e-5, err_msg=mode)
            assert hits.ids[0] == ids[int(np.argmax(expected[row]))], mode
    fused = M3Retriever(m3, ids, corpus, mode="sparse+dense")
    assert fused.fingerprint != M3Retriever(m3, ids, corpus, mode="sparse+dense", weights=(0.4, 0.2, 0.4)).fingerprint
    assert fused.fingerprint != M3Retriever(m3, ids, corpus, mode="dense").fingerprint
    with pytest.raises(ConfigError, match="unknown BGE-M3 mode"):
        M3Retriever(m3, ids, corpus, mode="bm25")


def test_evaluate_runs_every_mode_from_one_encoding_of_the_corpus(m3_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from conftest import TOY_BEIR
    from retrievekit.cli.main import cli
    from retrievekit.models.m3 import M3Encoder

    passes = []
    original = M3Encoder.encode_chunks

    def counted(self, texts, side, **options):
        passes.append(side)
        return original(self, texts, side, **options)

    monkeypatch.setattr(M3Encoder, "encode_chunks", counted)
    out = tmp_path / "eval"
    args = ["evaluate", "-d", str(TOY_BEIR), "--model", str(m3_dir), "-r", "m3", "m3-dense", "m3-sparse",
            "m3-colbert", "m3-sparse-dense", "--k-values", "1", "10", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert passes.count("documents") == 1  # five modes, one pass over the corpus
    rows = {row["retriever"]: row["metrics"] for row in json.loads((out / "results.json").read_text())["systems"]}
    assert set(rows) == {"m3", "m3-dense", "m3-sparse", "m3-colbert", "m3-sparse-dense"}
    assert all(0 < row["ndcg@10"] <= 1 for row in rows.values())
