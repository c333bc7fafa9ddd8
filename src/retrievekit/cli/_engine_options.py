"""``--engine local|ray`` and its Ray options, shared by ``encode``, ``index build`` and ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from retrievekit.cli._option_group import option_group


def engine_options(command: Callable) -> Callable:
    """Add --engine, --address, --replicas, --cpus-per-replica and --gpus-per-replica."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="Where the corpus is encoded: this process, or a pool of model replicas on Ray Data (extra 'ray'; "
            "a local Ray, or a cluster with --address), written as shards.",
        ),
        click.option(
            "--address",
            default=None,
            help="--engine ray: 'auto' or ray://host:10001 to join a cluster (default: start a local Ray).",
        ),
        click.option(
            "--replicas",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="--engine ray: model replicas in the actor pool.",
        ),
        click.option(
            "--cpus-per-replica",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="--engine ray: CPUs (torch threads) each replica takes.",
        ),
        click.option(
            "--gpus-per-replica",
            type=click.FloatRange(0),
            default=0,
            show_default=True,
            help="--engine ray: GPUs each replica takes (1: one GPU per replica).",
        ),
    ]
    return option_group(options)(command)


def ray_settings(options: dict[str, Any]) -> Any:
    """Pop the engine options from a command's keyword arguments: :class:`RaySettings` for
    ``--engine ray``, else ``None`` (a Ray option without ``--engine ray`` is an error)."""
    from retrievekit.errors import ConfigError

    engine = options.pop("engine")
    values = {name: options.pop(name) for name in ("address", "replicas", "cpus_per_replica", "gpus_per_replica")}
    if engine != "ray":
        changed = [f"--{n.replace('_', '-')}" for n, v in values.items() if v not in (None, 1, 0)]
        if changed:
            raise ConfigError(f"{', '.join(changed)} apply to --engine ray")
        return None
    from retrievekit.scale import RaySettings

    return RaySettings(**values)
