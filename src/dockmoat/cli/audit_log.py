"""`dockmoat audit-log summary FILE...`: what was denied, or would have been, per job and rule.

Reads serve's audit log (one JSON object per line; rotated files too, `-` for
stdin) and counts the entries whose decision is `deny` or `would_deny` (warn
mode) per tenant (a job, or a listener's tenant) and rule. What a team reads
before switching a runner fleet from warn mode to enforcement.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import click

from dockmoat.errors import ConfigError

_DENIALS = ("deny", "would_deny")


@click.group(name="audit-log")
def command() -> None:
    """Read `dockmoat serve`'s audit log."""


def _lines(files: Iterable[str]) -> Iterator[str]:
    for name in files:
        if name == "-":
            yield from sys.stdin
            continue
        path = Path(name)
        stream: IO[str]
        try:
            if name.endswith(".gz"):
                stream = gzip.open(path, "rt", encoding="utf-8", errors="replace")  # noqa: SIM115
            else:
                stream = path.open(encoding="utf-8", errors="replace")
        except OSError as error:
            raise ConfigError(f"audit log {name}: {error.strerror}") from None
        with stream:
            yield from stream


def summarise(lines: Iterable[str]) -> tuple[Counter[tuple[str, str, str]], int, int]:
    """(counts per (tenant, decision, rule), entries read, unreadable lines)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    entries = unreadable = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if not isinstance(entry, dict):
            unreadable += 1
            continue
        entries += 1
        decision = entry.get("decision")
        if decision not in _DENIALS:
            continue
        tenant = entry.get("tenant") or entry.get("listener") or "-"
        counts[(str(tenant), str(decision), str(entry.get("rule") or "-"))] += 1
    return counts, entries, unreadable


@command.command(name="summary")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def summary(files: tuple[str, ...], fmt: str) -> None:
    """Per job (tenant) and rule: how many requests were denied or would have been."""
    counts, entries, unreadable = summarise(_lines(files))
    rows = sorted(counts.items(), key=lambda item: (item[0][0], -item[1], item[0][2]))
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "entries": entries,
                    "unreadable_lines": unreadable,
                    "denials": [
                        {"tenant": tenant, "decision": decision, "rule": rule, "count": count}
                        for (tenant, decision, rule), count in rows
                    ],
                }
            )
        )
        return
    if not rows:
        click.echo(f"{entries} entries, nothing denied or would-be denied")
    else:
        width = max(len(tenant) for (tenant, _, _), _ in rows)
        click.echo(f"{'TENANT':<{width}}  {'DECISION':<10}  {'COUNT':>6}  RULE")
        for (tenant, decision, rule), count in rows:
            click.echo(f"{tenant:<{width}}  {decision:<10}  {count:>6}  {rule}")
        would = sum(count for (_, decision, _), count in rows if decision == "would_deny")
        denied = sum(count for (_, decision, _), count in rows if decision == "deny")
        click.echo(f"{entries} entries: {denied} denied, {would} would have been (warn mode)")
    if unreadable:
        click.echo(f"dockmoat: {unreadable} lines were not JSON entries", err=True)
