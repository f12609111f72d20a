"""The `dockmoat` command line.

Each command family lives in its own module and registers itself on `main`.
This module is the one place that turns dockmoat errors into CLI messages and
exit codes.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from dockmoat.errors import DockmoatError

# Command families, imported only when used: several import heavy libraries
# (the docker SDK, cryptography, ...) and `dockmoat dind up` from a warm pool
# must not pay seconds of imports for commands it does not run. Each module
# `dockmoat.cli.<name>` defines `command` named <name>.
_FAMILIES = ("serve", "policy", "job", "dind", "run", "audit", "generate", "doctor")


class _Group(click.Group):
    """Load command families lazily; translate DockmoatError into one line and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_FAMILIES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _FAMILIES and cmd_name not in self.commands:
            module = importlib.import_module(f"dockmoat.cli.{cmd_name}")
            self.add_command(module.command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DockmoatError as error:
            click.echo(f"dockmoat: {error}", err=True)
            sys.exit(error.exit_code)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from dockmoat.buildinfo import describe

    click.echo(f"dockmoat, version {describe()}")
    ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the commit it was built from, then exit.",
)
def main() -> None:
    """Docker for CI jobs without handing them the host."""
