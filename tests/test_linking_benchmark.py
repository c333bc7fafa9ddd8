"""The NCBI-disease benchmark's training flags reach the trainer's settings
(``benchmarks/finetune_ncbi_disease.py``: the script itself needs the data folder and hours)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from retrievekit.linking import LinkingFormat

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune_ncbi_disease.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("finetune_ncbi_disease", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_flags_reach_the_trainers_settings(script, tmp_path):
    fmt = LinkingFormat(context=False, query_max_length=25, entity_max_length=20)
    flags = ["--temperature", "0.02", "--symmetric", "--batch-size", "32", "--num-negatives", "7",
             "--learning-rate", "2e-5", "--separate-towers", "--data", str(tmp_path / "data")]  # fmt: skip
    args = script.build_parser().parse_args(["--output", str(tmp_path / "run"), *flags])
    config = script._config(args, fmt, tmp_path / "start", tmp_path / "rows.jsonl", tmp_path / "out", 1, 43,
                            positives_per_query=4, dev_protocol="biosyn")  # fmt: skip
    assert config.loss.loss == "infonce" and config.loss.temperature == 0.02 and config.loss.symmetric
    assert config.loss.marginal and config.data.positives_per_query == 4  # BioSyn's loss over 4 names
    assert config.data.batch_size == 32 and config.data.num_negatives == 7
    assert (config.data.query_max_length, config.data.document_max_length) == (25, 20)
    assert config.optimizer.learning_rate == 2e-5 and config.optimizer.epochs == 1 and config.run.seed == 43
    assert config.model.separate_towers and config.model.model == str(tmp_path / "start")
    assert config.data.data == [str(tmp_path / "rows.jsonl")] and config.run.output == str(tmp_path / "out")
    assert config.evaluation.dev_linking == str(tmp_path / "data")
    assert config.evaluation.dev_linking_protocol == "biosyn"

    # the defaults: the loss's own temperature, one positive, the synonym stage's negatives when given
    defaults = script.build_parser().parse_args(["--output", str(tmp_path / "run")])
    config = script._config(defaults, fmt, tmp_path / "start", tmp_path / "rows.jsonl", tmp_path / "out", 2, 42,
                            num_negatives=1)  # fmt: skip
    assert config.loss.temperature == 0.05 and not config.loss.symmetric and not config.loss.marginal
    assert config.data.batch_size == 64 and config.data.num_negatives == 1 and config.data.positives_per_query == 1
    assert config.optimizer.learning_rate == 5e-5 and config.optimizer.epochs == 2 and config.run.seed == 42
    assert not config.model.separate_towers and config.evaluation.dev_linking is None


def test_a_trained_reranker_is_loaded_instead_of_trained(script, tmp_path, monkeypatch):
    import retrievekit.training as training
    from test_cross_encoder import build_cross_encoder

    folder = build_cross_encoder(tmp_path / "ce")
    args = script.build_parser().parse_args(["--output", str(tmp_path / "run"), "--reranker", str(folder)])
    assert args.reranker == folder

    def no_training(*_a, **_k):
        raise AssertionError("--reranker must not train a cross-encoder")

    monkeypatch.setattr(training, "train", no_training)
    fmt = LinkingFormat(context=True, query_max_length=32, entity_max_length=32)
    reranker = script._reranker(args, "raw", [], None, fmt)
    assert reranker.max_length == 64  # the mention's and the name's tokens together
    assert reranker.predict([("a mention", "a name")]).shape == (1,)


def test_options_that_train_a_cross_encoder_are_refused_with_a_trained_one(script, tmp_path, capsys):
    run = ["--output", str(tmp_path / "run"), "--reranker", str(tmp_path / "reranker")]
    assert script.parse_args(run).reranker == tmp_path / "reranker"  # the trained one alone is fine
    with pytest.raises(SystemExit):
        script.parse_args([*run, "--rerank-epochs", "2", "--rerank-negatives", "3"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--rerank-negatives, --rerank-epochs train a cross-encoder; --reranker uses a trained one" in error
    assert script.parse_args(["--output", str(tmp_path / "run"), "--rerank", "--rerank-epochs", "2"]).rerank_epochs == 2


def test_a_bare_run_trains_each_protocol_with_its_reference_settings(script, tmp_path):
    """``--output DIR`` alone gives the README's best rows: biosyn, the synonym stage then one epoch
    with 7 hard negatives; raw, three rounds of two epochs on pooled mentions with abbreviations read
    long, 32 query tokens. A flag given wins under every protocol."""
    bare = script.parse_args(["--output", str(tmp_path / "run")])
    biosyn, raw = script.protocol_settings(bare, "biosyn"), script.protocol_settings(bare, "raw")
    assert (biosyn.synonym_pretraining, biosyn.num_negatives, biosyn.epochs, biosyn.rounds) == (1, 7, 1, 1)
    assert (raw.synonym_pretraining, raw.num_negatives, raw.epochs, raw.rounds) == (0, 3, 2, 3)
    assert (raw.query_length, raw.mention_pooling, raw.abbreviations, raw.seed) == (32, True, True, 42)
    assert bare.epochs is None  # the protocols' settings are copies: the command line stays as given
    fmt = LinkingFormat(context=False, query_max_length=25, entity_max_length=25)
    config = script._config(
        biosyn, fmt, tmp_path / "start", tmp_path / "rows.jsonl", tmp_path / "out", biosyn.epochs, 42
    )
    assert config.data.num_negatives == 7 and config.optimizer.epochs == 1
    flags = ["--epochs", "2", "--rounds", "1", "--synonym-pretraining", "0",
             "--no-mention-pooling", "--no-abbreviations"]  # fmt: skip
    given = script.parse_args(["--output", str(tmp_path / "run"), *flags])
    for protocol in ("biosyn", "raw"):
        run = script.protocol_settings(given, protocol)
        assert (run.epochs, run.rounds, run.synonym_pretraining) == (2, 1, 0)
    assert not given.mention_pooling and not given.abbreviations


@pytest.mark.parametrize("flag", ["--rounds", "--epochs", "--positives-per-query"])
def test_a_count_below_one_is_refused(script, tmp_path, capsys, flag):
    with pytest.raises(SystemExit):
        script.parse_args(["--output", str(tmp_path / "run"), flag, "0"])
    assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err


def test_a_trained_run_keeps_the_untrained_rows_and_trains_nothing(script, tmp_path, monkeypatch, tiny_bert_dir):
    """``--trained`` evaluates a linker trained earlier; its table still holds the untrained model's
    rows beside BM25's (the comparison the table is for), and no stage trains, the synonym one included."""
    import retrievekit.training as training
    from retrievekit import load_encoder
    from test_linking import write_linking_data

    data = write_linking_data(tmp_path / "kb")
    for split in ("train", "dev"):
        (data / "mentions" / f"{split}.jsonl").write_text((data / "mentions" / "test.jsonl").read_text())
    model = load_encoder(str(tiny_bert_dir), pooling="mean").save(tmp_path / "model")

    def no_training(*_a, **_k):
        raise AssertionError("--trained must not train")

    monkeypatch.setattr(training, "train", no_training)
    out = tmp_path / "run"
    script.main(["--output", str(out), "--data", str(data), "--model", str(model), "--trained", str(model),
                 "--protocols", "biosyn", "raw", "--no-throughput"])  # fmt: skip
    rows = {(r["protocol"], r["system"]): r["entries"] for r in json.loads((out / "summary.json").read_text())["rows"]}
    names = 4  # under either protocol: BioSyn's test dictionary has four lines, dictionary.tsv four names
    for protocol in ("biosyn", "raw"):
        assert rows[(protocol, "BM25")] == names
        untrained = [system for p, system in rows if p == protocol and "before fine-tuning" in system]
        assert any(rows[(protocol, s)] == names for s in untrained), untrained  # the name-level row
        assert any("fine-tuned" in s and f"({model})" in s for p, s in rows if p == protocol)
    assert not any("synonym" in system for _, system in rows)
