"""Abbreviations defined in a text, found with Schwartz & Hearst's algorithm ("A simple algorithm for
identifying abbreviation definitions in biomedical text", PSB 2003), and mentions written as such
an abbreviation replaced by what it stands for.

A definition is ``long form (SHORT)`` within one sentence: the short form is 2 to 10 characters, at
most two words, starts with a letter or digit and holds a letter; the long form is the shortest run
of words before the parenthesis in which every letter and digit of the short form appears in order,
right to left, the first one at the start of a word; it has at most ``min(|A| + 5, 2|A|)`` words
(``|A|`` the short form's length), is longer than the short form, does not hold it as a word and has
balanced parentheses. A short form defined twice keeps its first definition.

Entity linkers need this: a mention such as ``A-T`` names nothing on its own, while ``ataxia-
telangiectasia (A-T)`` earlier in the abstract says which concept it is (BioSyn resolves abbreviations
with Ab3P for the same reason). The only package on PyPI for the algorithm configures the root logger
when imported and has not been updated since 2019, so this is written here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from retrievekit.linking.records import Mention

__all__ = ["abbreviation_definitions", "expand_abbreviations"]

_PARENTHESIS = re.compile(r"(?<=\s)\(([^()]*)\)")
_SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z0-9])")
_WORD = re.compile(r"\S+")


def abbreviation_definitions(text: str) -> dict[str, str]:
    """Every ``{short form: long form}`` defined in ``text`` (see the module doc)."""
    found: dict[str, str] = {}
    for match in _PARENTHESIS.finditer(text):
        short = re.split(r"[;,]", match.group(1))[0].strip()
        if short in found or not _is_short_form(short):
            continue
        before = text[: match.start()].rstrip()
        ends = list(_SENTENCE_END.finditer(before))
        sentence_start = ends[-1].end() if ends else 0
        words = list(_WORD.finditer(before, sentence_start))[-min(len(short) + 5, 2 * len(short)) :]
        if not words:
            continue
        long = _long_form(short, before[words[0].start() :])
        if long is not None:
            found[short] = long
    return found


def _is_short_form(text: str) -> bool:
    return 2 <= len(text) <= 10 and len(text.split()) <= 2 and text[0].isalnum() and any(c.isalpha() for c in text)


def _long_form(short: str, window: str) -> str | None:
    """The shortest end of ``window`` that the short form's characters match, right to left."""
    s, i = len(short) - 1, len(window) - 1
    while s >= 0:
        char = short[s].lower()
        if not char.isalnum():
            s -= 1
            continue
        # the short form's first character must start a word of the long form
        while i >= 0 and (window[i].lower() != char or (s == 0 and i > 0 and window[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        s, i = s - 1, i - 1
    long = window[i + 1 :].strip()
    if len(long) <= len(short) or short in long.split() or long.count("(") != long.count(")"):
        return None
    return long


def expand_abbreviations(mentions: Sequence[Mention], documents: Mapping[str, str] | None = None) -> list[Mention]:
    """``mentions`` with each one written as an abbreviation replaced by its long form, found in
    its document (``documents[mention.document]``, the whole text) or, without one, in its own
    context. Other mentions are returned as they are."""
    cache: dict[str, dict[str, str]] = {}
    expanded = []
    for mention in mentions:
        short = mention.mention.strip()
        if not _is_short_form(short):
            expanded.append(mention)
            continue
        text = documents.get(mention.document) if documents is not None and mention.document is not None else None
        if text is not None and mention.document is not None:
            definitions = cache.get(mention.document)
            if definitions is None:
                definitions = cache[mention.document] = abbreviation_definitions(text)
        else:
            definitions = abbreviation_definitions(f"{mention.context_left}{mention.mention}{mention.context_right}")
        long = definitions.get(short)
        expanded.append(dataclasses.replace(mention, mention=long) if long is not None else mention)
    return expanded
