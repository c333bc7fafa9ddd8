"""Shared CLI output helpers: one way to print tables."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# piped output (CI logs, files) gets 120 columns instead of rich's 80, so tables stay readable
console = Console(width=None if sys.stdout.isatty() else 120)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """The title on its own line, never wrapped (a path in it stays whole), then the table. Title and
    cells are plain text, never markup: a "[term]" in data is printed, not taken for a style."""
    if title:
        console.print(escape(title), soft_wrap=True, highlight=False)
    table = Table()
    for i, column in enumerate(columns):
        table.add_column(escape(column), justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(
            *(escape(f"{v:,}" if isinstance(v, int) else f"{v:.4f}" if isinstance(v, float) else str(v)) for v in row)
        )
    console.print(table)
