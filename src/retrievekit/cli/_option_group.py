"""A group of click options shared by several commands, applied as one decorator."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def option_group(options: list[Any]) -> Callable[[Callable], Callable]:
    """A decorator adding ``options`` (``click.option(...)`` decorators) to a command, in the order
    listed (as ``--help`` shows them)."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return command(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate
