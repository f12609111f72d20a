"""The `dockmoat` command line.

Each command family lives in its own module and registers itself on `main`.
This module is the one place that turns dockmoat errors into CLI messages and
exit codes.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from dockmoat import __version__
from dockmoat.errors import DockmoatError


class _Group(click.Group):
    """Translate DockmoatError into one clear line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DockmoatError as error:
            click.echo(f"dockmoat: {error}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockmoat")
def main() -> None:
    """Docker for CI jobs without handing them the host."""


def _register() -> None:
    # Imported here so that each module can import `main` without a cycle.
    from dockmoat.cli import audit, dind, doctor, generate, job, policy, run, serve

    for module in (serve, policy, job, dind, run, audit, generate, doctor):
        main.add_command(module.command)


_register()
