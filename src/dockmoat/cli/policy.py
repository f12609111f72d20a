"""`dockmoat policy` (see ../shared/PRODUCT.md)."""

from __future__ import annotations

import click

from dockmoat.cli._stub import not_yet


@click.command(name="policy", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> None:
    """Not available yet."""
    raise not_yet("dockmoat policy", "pending")
