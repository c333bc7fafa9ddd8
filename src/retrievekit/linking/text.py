"""How a mention in its context and an entity become the texts the two towers read.

A mention becomes ``left context  START mention END  right context``, with the context cut in
*tokens* of the model's tokenizer (BLINK/BET's rule: the mention first, the rest of
``query_max_length`` shared between the two sides, a short side's quota given to the other), so
the mention is never truncated away; cuts fall between words, on the original characters. An
entity becomes ``title TITLE description``. The markers are BLINK's ``[unused0]``, ``[unused1]``,
``[unused2]`` by default (already in BERT vocabularies, so no new embedding rows), or BET's
``[ENT_START]``, ``[ENT_END]``, ``[TITLE]`` (``LinkingFormat.bet()``), added to the tokenizer and
the embedding matrix by :func:`add_markers`. With ``mention_pooling`` the query vector is the mean of
the mention's tokens between its markers, read in context (ELQ's mention representation), instead
of the whole window's: the context shapes the mention's states without outweighing it. With
``abbreviations`` a mention written as an abbreviation defined in its document (or, without one,
its context) is read as the long form (:mod:`retrievekit.linking.abbreviations`). The format
is saved with the model (``linking.json``) so training, evaluation and serving build the same texts.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from retrievekit.artifacts import atomic_write_text
from retrievekit.errors import ConfigError
from retrievekit.linking.abbreviations import expand_abbreviations
from retrievekit.linking.records import Entity, Mention, Name
from retrievekit.models.spec import SPAN_POOLING

__all__ = [
    "FORMAT_FILE",
    "LinkingFormat",
    "add_markers",
    "load_linking_model",
    "mention_aliases",
    "prepare_linking_model",
    "register_markers",
    "saved_format",
]

logger = logging.getLogger(__name__)

FORMAT_FILE = "linking.json"


@dataclass(frozen=True)
class LinkingFormat:
    """The texts of mentions and entities: markers, token windows, whether context is read."""

    start_marker: str = "[unused0]"
    end_marker: str = "[unused1]"
    title_marker: str = "[unused2]"
    query_max_length: int = 64
    entity_max_length: int = 128
    context: bool = True
    mention_pooling: bool = False  # the query vector: the mean of the marked mention's tokens, not the whole text's
    abbreviations: bool = False  # read a mention written as an abbreviation its document defines as the long form

    def __post_init__(self) -> None:
        if self.query_max_length < 8 or self.entity_max_length < 4:
            raise ConfigError("query_max_length must be at least 8 tokens and entity_max_length at least 4")
        if (self.context or self.mention_pooling) and not (self.start_marker and self.end_marker):
            raise ConfigError("a mention read in its context (or pooled alone) needs a start and an end marker")
        if self.mention_pooling and not self.context:
            raise ConfigError("mention_pooling reads the mention inside its context: it needs context=True")

    @classmethod
    def bet(cls, **options: Any) -> LinkingFormat:
        """BET's markers (new tokens: call :func:`add_markers` on the model)."""
        return cls(start_marker="[ENT_START]", end_marker="[ENT_END]", title_marker="[TITLE]", **options)

    @property
    def span(self) -> tuple[str, str]:
        """The mention's start and end markers."""
        return self.start_marker, self.end_marker

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(m for m in (self.start_marker, self.end_marker, self.title_marker) if m)

    # ---- texts -------------------------------------------------------------------------------
    def entity_text(self, entity: Entity) -> str:
        """``title TITLE description`` (the title alone when there is no description)."""
        if not entity.text:
            return entity.title
        return (
            f"{entity.title} {self.title_marker} {entity.text}"
            if self.title_marker
            else f"{entity.title} {entity.text}"
        )

    def mention_texts(
        self, mentions: Sequence[Mention], tokenizer: Any, documents: Mapping[str, str] | None = None
    ) -> list[str]:
        """Each mention in its context, cut to ``query_max_length`` tokens of ``tokenizer`` (a fast
        tokenizer: the cuts use its offsets); without context, the mention alone. ``documents``
        (``{document id: text}``) is where ``abbreviations`` looks for definitions first."""
        if self.abbreviations:
            mentions = expand_abbreviations(mentions, documents)
        if not self.context:
            return [m.mention for m in mentions]
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("cutting contexts in tokens needs a fast (Rust) tokenizer; this model has a slow one")
        special = tokenizer.num_special_tokens_to_add(pair=False)
        budget = self.query_max_length - special - 2  # the two markers
        lefts = _tokens(tokenizer, [m.context_left for m in mentions])
        rights = _tokens(tokenizer, [m.context_right for m in mentions])
        spans = _tokens(tokenizer, [m.mention for m in mentions])
        texts = []
        for mention, left, right, span in zip(mentions, lefts, rights, spans, strict=True):
            core = _keep_first(mention.mention, span, budget)
            rest = budget - min(len(span[0]), budget)
            left_quota = rest // 2
            right_quota = rest - left_quota
            if len(left[0]) < left_quota:
                right_quota += left_quota - len(left[0])
            elif len(right[0]) < right_quota:
                left_quota += right_quota - len(right[0])
            before = _keep_last(mention.context_left, left, left_quota)
            after = _keep_first(mention.context_right, right, right_quota)
            texts.append(f"{before}{self.start_marker} {core} {self.end_marker}{after}")
        return texts

    def mention_strings(self, mentions: Sequence[Mention], documents: Mapping[str, str] | None = None) -> list[str]:
        """The mentions alone, as this format reads them (abbreviations expanded), without context."""
        return replace(self, context=False, mention_pooling=False).mention_texts(mentions, None, documents)

    # ---- persistence -------------------------------------------------------------------------
    def to_text(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def attach(self, encoder: Any) -> None:
        """Keep this format with ``encoder``: every later save (the trainer's too) writes it as
        ``linking.json`` beside the weights, inside the files digest."""
        encoder.carried[FORMAT_FILE] = self.to_text()

    def save(self, directory: str | Path) -> Path:
        """Write ``linking.json`` into a folder that is not a saved retrievekit model (a saved model
        gets it through :meth:`attach`: its files digest covers it)."""
        return atomic_write_text(Path(directory) / FORMAT_FILE, self.to_text())

    @classmethod
    def from_text(cls, text: str, where: str) -> LinkingFormat:
        """Parse a saved format; unknown keys and mistyped values are errors naming ``where``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
        kinds = {"bool": bool, "int": int, "str": str}
        declared = {f.name: kinds[str(f.type)] for f in fields(cls)}
        for key, value in data.items():
            expected = declared[key]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"{where}: {key} must be {expected.__name__}, found {value!r}")
        return cls(**data)

    @classmethod
    def load(cls, directory: str | Path) -> LinkingFormat | None:
        """The format saved in a folder, or None when it has none."""
        path = Path(directory) / FORMAT_FILE
        return cls.from_text(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else None


Tokens = tuple[list[tuple[int, int]], list[int | None]]  # offsets, word ids


def _tokens(tokenizer: Any, texts: list[str]) -> list[Tokens]:
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [(list(map(tuple, encoded["offset_mapping"][i])), encoded.word_ids(i)) for i in range(len(texts))]


def _keep_last(text: str, tokens: Tokens, n: int) -> str:
    """The end of ``text`` holding at most its last ``n`` tokens, starting at a word's first token."""
    offsets, words = tokens
    if len(offsets) <= n:
        return text
    i = len(offsets) - n
    while i < len(offsets) and words[i] is not None and words[i] == words[i - 1]:
        i += 1  # a word's continuation: start at the next whole word
    return text[offsets[i][0] :] if i < len(offsets) else ""


def _keep_first(text: str, tokens: Tokens, n: int) -> str:
    """The start of ``text`` holding at most its first ``n`` tokens, ending at a word's last token."""
    offsets, words = tokens
    if len(offsets) <= n:
        return text
    i = n
    while i > 0 and words[i] is not None and words[i] == words[i - 1]:
        i -= 1  # the cut falls inside a word: end before it
    return text[: offsets[i - 1][1]] if i > 0 else ""


def add_markers(encoder: Any, fmt: LinkingFormat) -> list[str]:
    """Register the format's markers in each tower of a dense model (see :func:`register_markers`).
    Returns the markers that were new to the vocabulary."""
    return register_markers([encoder.query_tower, encoder.document_tower], fmt.markers)


def register_markers(towers: Sequence[Any], markers: Sequence[str], *, grow: bool = True) -> list[str]:
    """Register ``markers`` as special tokens of each tower's tokenizer, so they are never split
    into word pieces (a BERT tokenizer reads a plain ``[unused0]`` as ``[``, ``unused``, ``##0``,
    ``]``), and grow the embedding matrix for markers the vocabulary lacks (BET's). With
    ``grow=False`` a marker the vocabulary lacks is left alone instead (a trained model would get a
    random row for it). A tower that appears twice (shared towers) is done once. Returns the markers
    that were new to the vocabulary (and added)."""
    added: list[str] = []
    for tower in {id(t): t for t in towers}.values():
        tokenizer = tower.tokenizer
        vocabulary = tokenizer.get_vocab()
        new = [m for m in markers if m not in vocabulary] if grow else []
        tokenizer.add_tokens([m for m in markers if grow or m in vocabulary], special_tokens=True)
        if new:
            tower.backbone.resize_token_embeddings(len(tokenizer))
            added += [m for m in new if m not in added]
    return added


def saved_format(encoder: Any) -> LinkingFormat | None:
    """The linking format a model carries (``linking.json`` beside its weights), if any."""
    carried = getattr(encoder, "carried", {}).get(FORMAT_FILE)
    return LinkingFormat.from_text(carried, f"{encoder.source}/{FORMAT_FILE}") if carried is not None else None


def prepare_linking_model(encoder: Any, fmt: LinkingFormat | None = None) -> LinkingFormat:
    """Ready a loaded dense model for linking and return its format: ``fmt`` if given, else the one
    saved with the model (``linking.json``), else the default. The format is attached (saved with
    the model from now on) and its markers are registered in the tokenizers (see
    :func:`add_markers`; a marker new to the vocabulary gets a fresh embedding row, which only
    training makes useful)."""
    chosen = fmt or saved_format(encoder) or LinkingFormat()
    chosen.attach(encoder)
    new = add_markers(encoder, chosen)
    if new:
        logger.warning(
            "markers %s are new to %s's vocabulary: their embeddings start random; train before trusting them",
            ", ".join(new), encoder.name,
        )  # fmt: skip
    query = encoder.spec.query
    if chosen.mention_pooling and (query.pooling, query.span_markers) != (SPAN_POOLING, chosen.span):
        encoder.pool_spans(*chosen.span)
    return chosen


def load_linking_model(
    model: str | Path, *, fmt: LinkingFormat | None = None, **options: Any
) -> tuple[Any, LinkingFormat]:
    """:func:`~retrievekit.load_encoder` then :func:`prepare_linking_model`."""
    from retrievekit.models.loading import load_encoder

    encoder = load_encoder(model, **options)
    return encoder, prepare_linking_model(encoder, fmt)


def mention_aliases(
    mentions: Sequence[Mention], fmt: LinkingFormat | None = None, documents: Mapping[str, str] | None = None
) -> list[Name]:
    """Labelled mentions as extra names of their gold concepts: an alias table from training data, as
    BioSyn's test dictionary adds the train and dev mention strings to MEDIC's names. Each distinct
    mention string (as ``fmt`` reads it alone: abbreviations expanded) names every concept it was
    labelled with. The concepts of one alias tie on its score, so they come in the order of an alias
    table's prior: the most often labelled with this string first, then the most often labelled in
    all the mentions, then the first seen.

    >>> from retrievekit.linking.records import Mention
    >>> mention_aliases([Mention("a", "SCA1", labels=("D1",)), Mention("b", "SCA1", labels=("D2",)),
    ...                  Mention("c", "ataxia", labels=("D2",))])
    [Name(name='SCA1', ids=('D2', 'D1')), Name(name='ataxia', ids=('D2',))]
    """
    labelled: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for text, mention in zip((fmt or LinkingFormat()).mention_strings(mentions, documents), mentions, strict=True):
        labelled.setdefault(text, Counter()).update(mention.labels)
        overall.update(mention.labels)
    return [
        Name(text, tuple(sorted(ids, key=lambda concept: (-ids[concept], -overall[concept]))))
        for text, ids in labelled.items()
        if ids
    ]
