"""Options the ``mill`` group takes before the subcommand, as Mill's original command line (python-fire)
did and as published commands are written: ``mill --output_dir ./results eval MODEL BENCHMARK``.

A value given to the group is the subcommand's default for that option, so the subcommand's own flag,
when given too, wins. A subcommand that has no such option is a usage error (exit status 2), rather than
the value being silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import click


def forward_to_subcommand(ctx: click.Context, values: Mapping[str, object]) -> None:
    """Hand the group options given (``values``: name → value, None when not given) to the subcommand
    about to run, as defaults of its options of the same name.

    Raises:
        click.UsageError: the subcommand has no option of that name.
    """
    given = {name: value for name, value in values.items() if value is not None}
    name = ctx.invoked_subcommand
    if not given or name is None or not isinstance(ctx.command, click.Group):
        return
    command = ctx.command.get_command(ctx, name)
    if command is None:
        return
    accepted = {param.name for param in command.params}
    unused = [option for option in given if option not in accepted]
    if unused:
        flags = ", ".join(f"--{option}" for option in unused)
        raise click.UsageError(f"`mill {name}` does not use {flags}; leave it out", ctx=ctx)
    defaults = dict(ctx.default_map or {})
    defaults[name] = {**defaults.get(name, {}), **given}
    ctx.default_map = defaults
