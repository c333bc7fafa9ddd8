"""An option that takes several values after one flag: ``--retriever dense bm25 hybrid``."""

from __future__ import annotations

import click


class ManyValues(click.Option):
    """Consumes every following token up to the next option; also accepts commas (``dense,bm25``)
    and repeats (``-r dense -r bm25``). The value is a tuple of strings."""

    def __init__(self, *args, choices: tuple[str, ...] | None = None, **kwargs) -> None:
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        self.choices = choices

    def add_to_parser(self, parser, ctx) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is None:
                continue
            original = option.process

            def process(value, state, original=original):
                values = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    values.append(state.rargs.pop(0))
                for item in values:
                    original(item, state)

            option.process = process

    def type_cast_value(self, ctx, value):
        items = [part for raw in (value or ()) for part in str(raw).split(",") if part.strip()]
        if self.choices is not None:
            for item in items:
                if item not in self.choices:
                    raise click.BadParameter(f"{item!r} is not one of {', '.join(self.choices)}", ctx=ctx, param=self)
        return tuple(items)
