"""The `dockmoat` command line.

Each command family lives in its own module and registers itself on `main`.
This module is the one place that turns dockmoat errors into CLI messages and
exit codes.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from dockmoat.errors import EXIT_BUG, EXIT_UNAVAILABLE, DockmoatError

# Command families, imported only when used: several import heavy libraries
# (the docker SDK, cryptography, ...) and `dockmoat dind up` from a warm pool
# must not pay seconds of imports for commands it does not run. Each module
# `dockmoat.cli.<name>` (a '-' in the name is '_' in the module's) defines `command`
# named <name>.
_FAMILIES = (
    "serve", "policy", "job", "dind", "run", "audit", "audit-log", "generate", "doctor",
)  # fmt: skip


class _Group(click.Group):
    """Load command families lazily; translate DockmoatError into one line and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_FAMILIES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _FAMILIES and cmd_name not in self.commands:
            module = importlib.import_module(f"dockmoat.cli.{cmd_name.replace('-', '_')}")
            self.add_command(module.command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """Errors end in one line and the exit code of their class (errors.py,
        docs/exit-codes.md); a traceback only with DOCKMOAT_DEBUG=1."""
        try:
            return super().invoke(ctx)
        except DockmoatError as error:
            _debug()
            click.echo(f"dockmoat: {error}", err=True)
            sys.exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            sys.exit(130)
        except OSError as error:
            _debug()
            where = f" ({error.filename})" if error.filename else ""
            click.echo(f"dockmoat: {error.strerror or error}{where}", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        except Exception as error:  # noqa: BLE001 - the one place a bug is said in one line
            _debug()
            click.echo(
                f"dockmoat: internal error ({type(error).__name__}: {error}); this is a bug: "
                "run again with DOCKMOAT_DEBUG=1 for the traceback and report it",
                err=True,
            )
            sys.exit(EXIT_BUG)


def _debug() -> None:
    if os.environ.get("DOCKMOAT_DEBUG"):
        import traceback  # only here: it costs every command ~10 ms of imports

        traceback.print_exc()


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
