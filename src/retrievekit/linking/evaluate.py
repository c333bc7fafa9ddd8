"""Entity-linking evaluation on a data folder in the shared layout (``mentions/SPLIT.jsonl``,
``entities.jsonl``, ``dictionary.tsv``, ``biosyn/test_dictionary.txt.gz``), under two protocols:

* ``biosyn``: the papers' protocol (BioSyn, SapBERT): each query's preprocessed parts
  (``mention_parts``) ranked over the *names* of BioSyn's test dictionary (MEDIC names plus the
  train and dev mention strings); a name is right when its ids meet the gold ids (``gold_biosyn``,
  ``|``/``+`` separated); a split composite counts only when every part is right. Only this
  protocol is comparable with the published numbers.
* ``raw``: the mention as written, in its context (the model's :class:`LinkingFormat`), against
  the knowledge base itself: ``entities.jsonl`` (one vector per concept, ``--entity-vectors
  concepts``) or ``dictionary.tsv`` (one vector per name, a concept scored by its best name,
  ``names``); ranked over distinct concepts; right when a gold label is among them.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrievekit.errors import ConfigError, DataFormatError
from retrievekit.linking.linker import EntityIndex, EntityLinker, Linked
from retrievekit.linking.metrics import gold_ids, linking_metrics, part_rank, query_rank
from retrievekit.linking.readers import read_documents, read_entities, read_mentions, read_names
from retrievekit.linking.records import Mention, Name
from retrievekit.linking.text import LinkingFormat, mention_aliases, saved_format

__all__ = [
    "PROTOCOLS",
    "LinkingEvaluation",
    "biosyn_dev_dictionary",
    "biosyn_name",
    "check_protocol",
    "evaluate_linking",
    "folder_documents",
    "score_biosyn_predictions",
]

PROTOCOLS = ("biosyn", "raw")
DEPTH = 64
TEST_DICTIONARY = "test_dictionary.txt.gz"  # BioSyn's, under the folder's biosyn/
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def check_protocol(protocol: str, option: str = "linking protocol") -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`, else a :class:`ConfigError` naming them (and
    ``option``, the setting that gave it)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown {option} {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return protocol


@dataclass(frozen=True)
class LinkingEvaluation:
    """One model (or BM25) on one split under one protocol: metrics as fractions, per-query ranks
    and top-5 candidates, timings and the settings that produced them."""

    system: str
    protocol: str
    split: str
    metrics: dict[str, float]
    queries: int
    timings: dict[str, float]
    settings: dict[str, Any]
    predictions: list[dict[str, Any]] = field(repr=False, default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _biosyn_dictionary(root: Path, split: str, dictionary: str | Path | None) -> tuple[list[Name], str]:
    """The names a ``split`` is ranked over under the biosyn protocol, and where they came from."""
    if dictionary is not None:
        return read_names(dictionary), str(dictionary)
    if split == "test":
        return read_names(root / "biosyn" / TEST_DICTIONARY), str(root / "biosyn" / TEST_DICTIONARY)
    if split == "dev":
        names = biosyn_dev_dictionary(root)
        return names, f"{root / 'biosyn' / TEST_DICTIONARY} less the dev mention strings"
    raise ConfigError(
        f"--protocol biosyn has dictionaries for test and dev; for {split!r} pass --dictionary "
        "(BioSyn ranks train against MEDIC's names alone)"
    )


def biosyn_name(text: str) -> str:
    """A name as BioSyn preprocesses dictionary names: lower case, punctuation as spaces, single spaces."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def biosyn_dev_dictionary(root: str | Path) -> list[Name]:
    """BioSyn's dev dictionary (MEDIC's names plus the train mention strings with their gold ids),
    rebuilt from its test dictionary, which also holds the dev mention strings: an entry is dropped
    when its name is a dev mention part that is neither a train mention part nor one of MEDIC's
    names (``dictionary.tsv``, as :func:`biosyn_name` preprocesses it). Tuning on dev against the
    test dictionary would hand each dev mention its own string as a name."""
    root = Path(root)

    def parts(split: str) -> set[str]:
        path = root / "mentions" / f"{split}.jsonl"
        return {part for query_parts, _ in _queries(read_mentions(path), "biosyn", path) for part in query_parts}

    medic = {biosyn_name(name.name) for name in read_names(root / "dictionary.tsv")}
    dev_only = parts("dev") - parts("train") - medic
    return [name for name in read_names(root / "biosyn" / TEST_DICTIONARY) if name.name not in dev_only]


def folder_documents(root: Path, fmt: LinkingFormat) -> dict[str, str] | None:
    """The data folder's ``documents.jsonl.gz`` (or ``.jsonl``) when ``fmt`` looks for abbreviations
    in documents; None otherwise (a mention's own context is searched instead)."""
    if not fmt.abbreviations:
        return None
    found = [p for p in (root / "documents.jsonl.gz", root / "documents.jsonl") if p.is_file()]
    return read_documents(found[0]) if found else None


def _queries(mentions: Sequence[Mention], protocol: str, path: Path) -> list[tuple[list[str], frozenset[str]]]:
    """Each mention's parts and gold ids under ``protocol``."""
    queries = []
    for number, mention in enumerate(mentions, start=1):
        if protocol == "biosyn":
            if not mention.parts:
                raise DataFormatError(path, "--protocol biosyn needs 'mention_parts' in every mention", number)
            queries.append((list(mention.parts), gold_ids(mention.gold or mention.labels)))
        else:
            queries.append(([mention.mention], gold_ids(mention.labels)))
    return queries


def evaluate_linking(
    data: str | Path,
    split: str = "test",
    *,
    encoder: Any = None,
    protocol: str = "biosyn",
    fmt: LinkingFormat | None = None,
    entity_vectors: str = "names",
    dictionary: str | Path | None = None,
    index_type: str = "flat",
    batch_size: int = 128,
    show_progress: bool = True,
    system: str | None = None,
    reranker: Any = None,
    rerank_top_k: int = 64,
    rerank_fusion: str | None = None,
    rerank_weights: Sequence[float] | None = None,
    rerank_memo: MutableMapping[tuple[str, str], float] | None = None,
    index: EntityIndex | None = None,
    lexical_weight: float = 0.0,
    alias_splits: Sequence[str] = (),
) -> LinkingEvaluation:
    """Evaluate ``encoder`` (a dense model; None: BM25 over the same entries) on ``data``'s
    ``split`` under ``protocol`` (see the module doc). ``fmt`` defaults to the format the model
    carries (``linking.json``), else the default. Candidates are searched to depth 64; with
    ``reranker`` (a cross-encoder) the best ``rerank_top_k`` entries are re-scored first, its order
    replacing the first stage's or fused with it (``rerank_fusion``, ``rerank_weights``,
    ``rerank_memo``: see :class:`EntityLinker`).
    ``index``: an :class:`EntityIndex` the same ``encoder`` already built over the protocol's names
    (a miner's), searched instead of encoding the names again. ``lexical_weight``: BioSyn's
    ``dense + weight * sparse`` name scores (see :class:`EntityLinker`). ``alias_splits``: other
    splits of ``data`` whose labelled mention strings join the names as aliases of their gold
    concepts (raw protocol, one vector per name; BioSyn's test dictionary already holds the train
    and dev mentions)."""
    check_protocol(protocol)
    if entity_vectors not in ("names", "concepts"):
        raise ConfigError(f"--entity-vectors is names or concepts, got {entity_vectors!r}")
    if alias_splits and (protocol != "raw" or entity_vectors != "names" or index is not None):
        raise ConfigError("aliases join the names of the raw protocol (one vector per name, the index built here); "
                          "BioSyn's test dictionary already holds the train and dev mentions")  # fmt: skip
    if split in alias_splits:
        raise ConfigError(f"aliases from {split!r} would hand the evaluation its own labels: use other splits")
    root = Path(data)
    mentions_path = root / "mentions" / f"{split}.jsonl"
    mentions = read_mentions(mentions_path)
    queries = _queries(mentions, protocol, mentions_path)
    fmt = fmt or (saved_format(encoder) if encoder is not None else None) or LinkingFormat()
    options: dict[str, Any] = {"index_type": index_type} if encoder is not None else {}
    started = time.perf_counter()
    if protocol == "biosyn":  # the preprocessed mention parts alone
        fmt = LinkingFormat(**(asdict(fmt) | {"context": False, "mention_pooling": False}))
    documents = folder_documents(root, fmt) if protocol == "raw" else None  # where abbreviations are defined
    if index is not None:
        if index.encoder is not encoder:
            raise ConfigError("the entity index given was built with another model than the one evaluated")
        if entity_vectors != "names":
            raise ConfigError("an entity index given to the evaluation holds names: use entity_vectors='names'")
        source = "an entity index given by the caller"
    elif protocol == "raw" and entity_vectors == "concepts":
        index = EntityIndex.from_entities(encoder, read_entities(root / "entities.jsonl"), fmt, batch_size=batch_size,
                                          show_progress=show_progress, **options)  # fmt: skip
        source = str(root / "entities.jsonl")
    else:  # names: BioSyn's test dictionary under its protocol, the knowledge base's own names under raw
        if protocol == "biosyn":
            names, source = _biosyn_dictionary(root, split, dictionary)
        else:
            names_path = Path(dictionary) if dictionary is not None else root / "dictionary.tsv"
            names, source = read_names(names_path), str(names_path)
        labelled = [m for other in alias_splits for m in read_mentions(root / "mentions" / f"{other}.jsonl")]
        aliases = mention_aliases(labelled, fmt, documents) if labelled else []
        index = EntityIndex(encoder, names + aliases, max_length=fmt.entity_max_length,
                            batch_size=batch_size, show_progress=show_progress, **options)  # fmt: skip
        source += "".join(f" + {other} mentions" for other in alias_splits)
    group = "names" if protocol == "biosyn" else "concepts"
    index_seconds = time.perf_counter() - started
    second_stage = {"reranker": reranker, "rerank_top_k": rerank_top_k, "rerank_fusion": rerank_fusion,
                    "rerank_weights": rerank_weights, "rerank_memo": rerank_memo}  # fmt: skip
    linker = EntityLinker(index, fmt, **second_stage, lexical_weight=lexical_weight)
    started = time.perf_counter()
    lexical: list[str] | None
    if protocol == "biosyn":
        texts = lexical = [part for parts, _ in queries for part in parts]
    else:
        texts, lexical = linker.read(mentions, documents)
    answers = linker.link_texts(
        texts, DEPTH, group=group, batch_size=batch_size, show_progress=show_progress, lexical_texts=lexical
    )
    link_seconds = time.perf_counter() - started
    ranks: list[int | None] = []
    predictions: list[dict[str, Any]] = []
    position = 0
    for mention, (parts, gold) in zip(mentions, queries, strict=True):
        own: list[Linked] = answers[position : position + len(parts)]
        position += len(parts)
        rank = query_rank([part_rank(a.ids, gold) for a in own])
        ranks.append(rank)
        predictions.append(
            {"id": mention.id, "query": parts if protocol == "biosyn" else texts[len(predictions)],
             "gold": sorted(gold), "rank": rank,
             "top5": [[{"ids": list(ids), "text": text, "score": round(float(score), 6)}
                       for ids, text, score in zip(a.ids[:5], a.texts[:5], a.scores[:5].tolist(), strict=True)]
                      for a in own]}
        )  # fmt: skip
    metrics = linking_metrics(ranks)
    settings = {
        "entries": len(index), "entry_source": source, "group": group, "index_type": index_type if encoder else "bm25",
        "entity_vectors": entity_vectors if protocol == "raw" else "names", "format": asdict(linker.format),
        "depth": DEPTH, "reranker": getattr(reranker, "name", None), "rerank_top_k": rerank_top_k if reranker else None,
        "rerank_fusion": rerank_fusion, "rerank_weights": None if rerank_weights is None else list(rerank_weights),
        "lexical_weight": lexical_weight, "alias_splits": list(alias_splits),
    }  # fmt: skip
    timings = {"index": index_seconds, "link": link_seconds, "mentions_per_second": len(mentions) / link_seconds}
    name = system or (str(getattr(encoder, "name", "model")) if encoder is not None else "bm25")
    return LinkingEvaluation(name, protocol, split, metrics.values, len(mentions), timings, settings, predictions)


def score_biosyn_predictions(path: str | Path) -> dict[str, float]:
    """Re-score BioSyn's released predictions file (its top names per query part with their ids and
    the gold ids) with these rules; the labels the file carries are not trusted."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
        ranks = [
            query_rank([part_rank([gold_ids(c["cui"]) for c in part["candidates"]], gold_ids(part["golden_cui"]))
                        for part in query["mentions"]])
            for query in data["queries"]
        ]  # fmt: skip
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(path, f"not a readable predictions file ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise DataFormatError(
            path, f"not BioSyn's predictions layout (queries/mentions/candidates/cui): {exc}"
        ) from None
    return linking_metrics(ranks).values
