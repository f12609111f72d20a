"""Doctor's report: rich text for people, a JSON list for machines."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape

from dockmoat.ci.doctor.model import Finding, Status

_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def to_json(findings: list[Finding]) -> str:
    return json.dumps([f.as_json() for f in findings], indent=2)


def print_text(findings: list[Finding], console: Console) -> None:
    width = max((len(f.check) for f in findings), default=0)
    for finding in findings:
        style = _STYLE[finding.status]
        label = f"{finding.status.value:<4}"
        check = escape(finding.check)
        console.print(
            f"[{style}]{label}[/{style}]  {check:<{width}}  {escape(finding.detail)}",
            soft_wrap=True,
        )
        if finding.fix:
            console.print(f"      {'':<{width}}  fix: {escape(finding.fix)}", soft_wrap=True)
    counts = {s: sum(1 for f in findings if f.status is s) for s in Status}
    console.print(
        f"{counts[Status.OK]} ok, {counts[Status.WARN]} warn, {counts[Status.FAIL]} fail",
        style="bold",
    )
