"""Entity-linking records: a mention in its context, an entity of the knowledge base, and a name of
a dictionary (one surface string for one or several concepts)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Entity", "Mention", "Name"]


@dataclass(frozen=True)
class Mention:
    """A mention and the text around it, with its gold concept ids (``labels``; several for a
    composite annotation). ``parts`` is a preprocessed form split into the concepts it names
    (BioSyn's queries: abbreviations expanded, composites split, lower-cased); ``gold`` the gold
    string the papers' evaluators compare with (``|``/``+`` separated ids)."""

    id: str
    mention: str
    context_left: str = ""
    context_right: str = ""
    labels: tuple[str, ...] = ()
    document: str | None = None
    span: tuple[int, int] | None = None
    parts: tuple[str, ...] = ()
    gold: str | None = None
    world: str | None = None

    def marked(self, start: str = "[ENT_START]", end: str = "[ENT_END]") -> str:
        """The mention inside its context between ``start`` and ``end`` (for display)."""
        return f"{self.context_left}{start} {self.mention} {end}{self.context_right}"


@dataclass(frozen=True)
class Entity:
    """A concept of the knowledge base: its id, a title (its preferred name) and a description."""

    id: str
    title: str
    text: str = ""
    world: str | None = None


@dataclass(frozen=True)
class Name:
    """A dictionary name and every concept it names (a name shared by several concepts keeps all
    their ids, as BioSyn's dictionaries do)."""

    name: str
    ids: tuple[str, ...] = field(default_factory=tuple)
