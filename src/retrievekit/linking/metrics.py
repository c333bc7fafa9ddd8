"""Entity-linking metrics from ranked candidates, under the rules of the papers' evaluators.

A candidate is a set of concept ids (a dictionary name may name several concepts; a concept is a
set of one). A query *part* is right at ``k`` when one of its top ``k`` candidates shares an id
with the gold set (BioSyn's ``check_label``: ``|`` and ``+`` both separate ids); a query is right at
``k`` when **every** part is (BioSyn's composite rule; an unsplit query has one part). So each
query has one *rank*: the first ``k`` at which it is right (None if never within the candidates),
and every metric follows from the ranks:

* ``acc@k``: the share of queries right at ``k``; ``recall@k`` for k = 1, 2, 4, ..., 64 is the same
  count (BLINK's recall of its candidate list);
* ``acc@1_normalized``: acc@1 among the queries right at 64 (BLINK's normalised accuracy: the
  second stage's accuracy where the first stage found the answer); ``acc@1`` is the unnormalised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["RECALL_KS", "LinkingMetrics", "gold_ids", "linking_metrics", "part_rank", "query_rank"]

RECALL_KS = (1, 2, 4, 8, 16, 32, 64)


def gold_ids(gold: str | Iterable[str]) -> frozenset[str]:
    """The id set of a gold string (``"D1|D2+D3"``) or of a list of ids.

    >>> sorted(gold_ids("D001943|D015179+D009369"))
    ['D001943', 'D009369', 'D015179']
    """
    if isinstance(gold, str):
        return frozenset(i.strip() for i in gold.replace("+", "|").split("|") if i.strip())
    return frozenset(gold)


def part_rank(candidates: Sequence[Iterable[str]], gold: frozenset[str]) -> int | None:
    """The first rank (from 1) whose candidate shares an id with ``gold``.

    >>> part_rank([{"A"}, {"B", "C"}], frozenset({"C"}))
    2
    >>> part_rank([{"A"}], frozenset({"C"})) is None
    True
    """
    for rank, ids in enumerate(candidates, start=1):
        if not gold.isdisjoint(ids):
            return rank
    return None


def query_rank(part_ranks: Sequence[int | None]) -> int | None:
    """A query of several parts is right at ``k`` once every part is: the largest part rank.

    >>> query_rank([1, 3]), query_rank([1, None])
    (3, None)
    """
    if not part_ranks or any(r is None for r in part_ranks):
        return None
    return max(r for r in part_ranks if r is not None)


@dataclass(frozen=True)
class LinkingMetrics:
    """Metrics of one evaluation, from the per-query ranks; values are fractions (0-1)."""

    queries: int
    values: dict[str, float]

    def __getitem__(self, name: str) -> float:
        return self.values[name]


def linking_metrics(ranks: Sequence[int | None], ks: Sequence[int] = (1, 5)) -> LinkingMetrics:
    """``acc@k`` for ``ks``, ``recall@k`` for 1, 2, ..., 64 and ``acc@1_normalized`` from query ranks.

    >>> m = linking_metrics([1, 2, None, 70])
    >>> m["acc@1"], m["acc@5"], m["recall@64"], m["acc@1_normalized"]
    (0.25, 0.5, 0.5, 0.5)
    """
    n = len(ranks)
    if not n:
        return LinkingMetrics(0, {})

    def share(k: int) -> float:
        return sum(1 for r in ranks if r is not None and r <= k) / n

    values = {f"acc@{k}": share(k) for k in ks}
    values |= {f"recall@{k}": share(k) for k in RECALL_KS}
    found = sum(1 for r in ranks if r is not None and r <= RECALL_KS[-1])
    values["acc@1_normalized"] = (sum(1 for r in ranks if r == 1) / found) if found else 0.0
    return LinkingMetrics(n, values)
