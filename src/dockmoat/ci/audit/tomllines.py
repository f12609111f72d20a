"""Line numbers for TOML keys: tomllib reads values but does not say where they were."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*\"?([A-Za-z0-9_.-]+)\"?\s*=")


@dataclass
class Table:
    name: str  # dotted name, e.g. "runners.docker"
    line: int  # the header's line (0 for the root table)
    keys: dict[str, int] = field(default_factory=dict)


def tables(text: str) -> list[Table]:
    """Every table in file order, with the line of each of its keys."""
    out = [Table("", 0)]
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw)
        if header:
            out.append(Table(header.group(2).replace('"', "").replace(" ", ""), number))
            continue
        key = _KEY.match(raw)
        if key:
            out[-1].keys.setdefault(key.group(1), number)
    return out


def runner_tables(text: str) -> list[list[Table]]:
    """The tables of each `[[runners]]` entry, in order (its header first)."""
    runners: list[list[Table]] = []
    for table in tables(text):
        if table.name == "runners":
            runners.append([table])
        elif table.name.startswith("runners.") and runners:
            runners[-1].append(table)
    return runners


def key_line(group: list[Table], table: str, key: str) -> int:
    """Line of `key` in the table named `table` of one runner; else the nearest header."""
    for t in group:
        if t.name == table and key in t.keys:
            return t.keys[key]
    for t in group:
        if t.name == table:
            return t.line
    return group[0].line if group else 1
