"""Readers for entity-linking data, whichever toolkit wrote it:

* mentions: the shared JSONL (``_id``, ``mention``, ``context_left``, ``context_right``, ``labels``,
  optional ``document``, ``span``, ``mention_parts``, ``gold_biosyn``); BET's queries
  (``query_left``, ``link``, ``query_right``, ``candidate_index``); BLINK/ZESHEL's
  (``context_left``, ``mention``, ``context_right``, ``label_id``, optional ``world``);
* entities: the shared JSONL (``_id``, ``title``, ``text``); BET's candidates (``candidate``,
  ``abstract``, ``candidate_index``); ZESHEL's documents (``document_id``, ``title``, ``text``; a
  folder of ``WORLD.json`` files, one per world);
* documents (the whole texts mentions were taken from, for abbreviations defined far from a
  mention): ``document`` with ``title`` and ``abstract`` (PubTator's layout: the text is
  ``title + " " + abstract``, the offsets of ``span``) or ``text``;
* name dictionaries: ``cui<TAB>name`` TSV with a header, or BioSyn's ``CUI||name`` lines (a name
  of several concepts carries ``ID|ID``).

The schema is recognised per row from its fields; a row of no known schema, a missing or mistyped
field is a :class:`~retrievekit.errors.DataFormatError` naming the file and line. ``.gz`` files are
read through gzip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrievekit.data.readers import checked_id, iter_jsonl, iter_lines
from retrievekit.errors import DataFormatError
from retrievekit.linking.records import Entity, Mention, Name

__all__ = ["read_documents", "read_entities", "read_mentions", "read_names"]


def _text(path: Path, number: int, row: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise DataFormatError(path, f"missing field {key!r}", number)
        return ""
    if not isinstance(value, str):
        raise DataFormatError(path, f"field {key!r} must be a string, found {type(value).__name__}", number)
    return value


def _an_id(path: Path, number: int, row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        found = "nothing" if value is None else type(value).__name__
        raise DataFormatError(path, f"field {key!r} must be an id (a string or an integer), found {found}", number)
    return checked_id(path, number, value.strip(), f"field {key!r}")


def _strings(path: Path, number: int, row: dict[str, Any], key: str) -> tuple[str, ...]:
    value = row.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(path, f"field {key!r} must be a list of strings", number)
    return tuple(value)


MARKER_PAIRS = (("[ENT_START]", "[ENT_END]"), ("[unused0]", "[unused1]"), ("[START_ENT]", "[END_ENT]"))


def _marked(path: Path, number: int, row: dict[str, Any]) -> Mention:
    """A row whose ``text`` marks its mention: ``... [ENT_START] mention [ENT_END] ...``."""
    text = _text(path, number, row, "text")
    for start, end in MARKER_PAIRS:
        if text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end):
            left, _, rest = text.partition(start)
            mention, _, right = rest.partition(end)
            if mention.strip():
                labels = _strings(path, number, row, "labels")
                return Mention(
                    id=_an_id(path, number, row, "_id") if "_id" in row else f"{path.stem}-{number}",
                    mention=mention.strip(), context_left=left, context_right=right, labels=labels,
                )  # fmt: skip
    pairs = ", ".join(f"{a} ... {b}" for a, b in MARKER_PAIRS)
    raise DataFormatError(path, f"'text' must mark exactly one non-empty mention with one of: {pairs}", number)


def _mention(path: Path, number: int, row: dict[str, Any], require_labels: bool) -> Mention:
    if "text" in row and "mention" not in row and "link" not in row:
        mention = _marked(path, number, row)
        if require_labels and not mention.labels:
            raise DataFormatError(path, "a mention row needs 'labels' (a list of concept ids)", number)
        return mention
    if "link" in row and "query_left" in row:  # BET
        return Mention(
            id=_an_id(path, number, row, "query_index") if "query_index" in row else f"{path.stem}-{number}",
            mention=_text(path, number, row, "link"),
            context_left=_text(path, number, row, "query_left", required=False),
            context_right=_text(path, number, row, "query_right", required=False),
            labels=(_an_id(path, number, row, "candidate_index"),),
            world=_text(path, number, row, "world", required=False) or None,
        )
    if "mention" not in row:
        raise DataFormatError(
            path, "not a mention row: expected 'mention' (with 'labels' or BLINK's 'label_id') or BET's 'link'", number
        )
    if "labels" in row:
        labels = tuple(
            checked_id(path, number, label.strip(), "a label") for label in _strings(path, number, row, "labels")
        )
    elif "label_id" in row:  # BLINK / ZESHEL
        labels = (_an_id(path, number, row, "label_id"),)
    elif not require_labels:
        labels = ()
    else:
        raise DataFormatError(path, "a mention row needs 'labels' (a list of concept ids) or 'label_id'", number)
    span = row.get("span")
    if span is not None and not (
        isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in span)
    ):
        raise DataFormatError(path, "field 'span' must be [start, end] character offsets", number)
    return Mention(
        id=_an_id(path, number, row, "_id") if "_id" in row else f"{path.stem}-{number}",
        mention=_text(path, number, row, "mention"),
        context_left=_text(path, number, row, "context_left", required=False),
        context_right=_text(path, number, row, "context_right", required=False),
        labels=labels,
        document=str(row["document"]) if row.get("document") is not None else None,
        span=(span[0], span[1]) if span is not None else None,
        parts=_strings(path, number, row, "mention_parts"),
        gold=_text(path, number, row, "gold_biosyn", required=False) or None,
        world=_text(path, number, row, "world", required=False) or None,
    )


def read_mentions(path: str | Path, *, require_labels: bool = True) -> list[Mention]:
    """Every mention of a JSONL file (shared, BET or BLINK/ZESHEL schema, or a ``text`` marking its
    mention with ``[ENT_START]``/``[ENT_END]``), in file order; gold labels are required unless
    ``require_labels=False`` (linking new text)."""
    path = Path(path)
    mentions = [_mention(path, number, row, require_labels) for number, row in iter_jsonl(path)]
    seen: dict[str, int] = {}
    for number, mention in enumerate(mentions, start=1):
        if mention.id in seen:
            raise DataFormatError(
                path, f"mention id {mention.id!r} repeats the one of record {seen[mention.id]}", number
            )
        seen[mention.id] = number
    return mentions


def _entity(path: Path, number: int, row: dict[str, Any], world: str | None) -> Entity:
    if "candidate" in row:  # BET
        return Entity(
            id=_an_id(path, number, row, "candidate_index"),
            title=_text(path, number, row, "candidate"),
            text=_text(path, number, row, "abstract", required=False),
            world=_text(path, number, row, "world", required=False) or world,
        )
    if "document_id" in row:  # ZESHEL documents
        return Entity(
            id=_an_id(path, number, row, "document_id"),
            title=_text(path, number, row, "title"),
            text=_text(path, number, row, "text", required=False),
            world=world,
        )
    if "_id" in row:
        return Entity(
            id=_an_id(path, number, row, "_id"),
            title=_text(path, number, row, "title"),
            text=_text(path, number, row, "text", required=False),
            world=_text(path, number, row, "world", required=False) or world,
        )
    raise DataFormatError(
        path, "not an entity row: expected '_id' and 'title', BET's 'candidate' or ZESHEL's 'document_id'", number
    )


def read_entities(path: str | Path) -> list[Entity]:
    """Every entity of a JSONL file, or of a ZESHEL ``documents`` folder (``WORLD.json`` files,
    the world taken from the file name), in order; ids must be unique."""
    path = Path(path)
    files = sorted(path.glob("*.json*")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(path, "no .json or .jsonl entity file in this folder")
    entities: list[Entity] = []
    seen: dict[str, str] = {}
    for file in files:
        world = file.name.split(".")[0] if path.is_dir() else None
        for number, row in iter_jsonl(file):
            entity = _entity(file, number, row, world)
            if entity.id in seen:
                raise DataFormatError(file, f"entity id {entity.id!r} was already given at {seen[entity.id]}", number)
            seen[entity.id] = f"{file.name}:{number}"
            entities.append(entity)
    return entities


def read_documents(path: str | Path) -> dict[str, str]:
    """``{document id: text}`` of a JSONL file (see the module doc); ids must be unique."""
    path = Path(path)
    documents: dict[str, str] = {}
    for number, row in iter_jsonl(path):
        key = _an_id(path, number, row, "document")
        if key in documents:
            raise DataFormatError(path, f"document id {key!r} repeats an earlier one", number)
        if "text" in row:
            documents[key] = _text(path, number, row, "text")
        else:
            title = _text(path, number, row, "title", required=False)
            documents[key] = f"{title} {_text(path, number, row, 'abstract')}"
    return documents


def read_names(path: str | Path) -> list[Name]:
    """A name dictionary: ``cui<TAB>name`` (a ``cui name`` header is skipped) or BioSyn's
    ``CUI||name`` (``ID|ID`` for a name of several concepts), one :class:`Name` per line."""
    path = Path(path)
    names = []
    for number, line in iter_lines(path):
        if "||" in line:
            ids_text, _, name = line.partition("||")
        elif "\t" in line:
            ids_text, _, name = line.partition("\t")
            if number == 1 and ids_text.strip().lower() in {"cui", "id", "_id"}:
                continue
        else:
            raise DataFormatError(path, "expected 'cui<TAB>name' or BioSyn's 'CUI||name'", number)
        ids = tuple(checked_id(path, number, i.strip(), "a concept id") for i in ids_text.replace("+", "|").split("|"))
        if not name.strip():
            raise DataFormatError(path, "the name is empty", number)
        names.append(Name(name, ids))
    return names
