"""Renderers for audit results: text (rich on a terminal), JSON and SARIF 2.1.0."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import PurePath, PurePosixPath
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.markup import escape

from dockmoat import __version__
from dockmoat.ci.audit.findings import FileError, Finding, Rule, Severity
from dockmoat.ci.audit.rules import ALL_RULES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/dockmoat/dockmoat"
# Each rule's section of docs/audit.md (its heading is the rule id).
RULE_HELP_URI = INFORMATION_URI + "/blob/main/docs/audit.md#{rule_id}"
# Distinguishes this run's results from zizmor's, compose-lint's, ... in one code
# scanning view (GitHub uses it as the analysis category).
AUTOMATION_ID = "dockmoat-audit/"
_SARIF_LEVEL = {Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
# GitHub code scanning ranks security results by this 0-10 score.
_SECURITY_SEVERITY = {Severity.HIGH: "8.0", Severity.MEDIUM: "5.0", Severity.LOW: "2.0"}
_STYLE = {Severity.HIGH: "bold red", Severity.MEDIUM: "yellow", Severity.LOW: "cyan"}


def to_json(findings: Iterable[Finding]) -> str:
    return json.dumps([f.as_dict() for f in findings], indent=2)


def _uri(file: str) -> str:
    """A URI reference for SARIF: relative paths stay relative (code scanning wants that)."""
    path = PurePath(file)
    if path.is_absolute():
        return PurePosixPath(path.as_posix()).as_uri()
    return quote(path.as_posix())


def to_sarif(findings: list[Finding], errors: list[FileError]) -> dict[str, Any]:
    rules = list(ALL_RULES)
    index = {rule.id: i for i, rule in enumerate(rules)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dockmoat",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [_sarif_rule(rule) for rule in rules],
                    }
                },
                "automationDetails": {"id": AUTOMATION_ID},
                "invocations": [
                    {
                        "executionSuccessful": not errors,
                        "toolExecutionNotifications": [
                            {
                                "level": "error",
                                "message": {"text": f"{e.file}: {e.reason}"},
                                "locations": [
                                    {
                                        "physicalLocation": {
                                            "artifactLocation": {"uri": _uri(e.file)}
                                        }
                                    }
                                ],
                            }
                            for e in errors
                        ],
                    }
                ],
                "results": [
                    {
                        "ruleId": f.rule.id,
                        "ruleIndex": index[f.rule.id],
                        "level": _SARIF_LEVEL[f.severity],
                        "message": {"text": f"{f.message}. Fix: {f.fix}"},
                        "locations": [
                            {
                                "physicalLocation": {
                                    "artifactLocation": {"uri": _uri(f.file)},
                                    "region": {"startLine": max(f.line, 1)},
                                }
                            }
                        ],
                        "partialFingerprints": {"dockmoat/v1": _fingerprint(f)},
                        "properties": {"severity": f.severity.value},
                    }
                    for f in findings
                ],
            }
        ],
    }


def _sarif_rule(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": "".join(part.capitalize() for part in rule.id.split("-")),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.help},
        "help": {
            "text": f"{rule.help}\n\nFix: {rule.fix}",
            "markdown": f"{rule.help}\n\n**Fix:** {rule.fix}",
        },
        "helpUri": RULE_HELP_URI.format(rule_id=rule.id),
        "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
        "properties": {
            "tags": ["security", "docker", "ci"],
            "security-severity": _SECURITY_SEVERITY[rule.severity],
        },
    }


def _fingerprint(finding: Finding) -> str:
    """Stable across runs while the finding stays: rule, file and message, not the line."""
    text = "\0".join((finding.rule.id, finding.file, finding.message))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _summary(findings: list[Finding], audited: int, failed: int) -> str:
    counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
    detail = ", ".join(f"{counts[s]} {s.value}" for s in Severity)
    tail = f"; {failed} file(s) could not be audited" if failed else ""
    return f"{len(findings)} finding(s) ({detail}) in {audited} file(s){tail}"


def render_text(
    findings: list[Finding], files: list[str], errors: list[FileError], console: Console
) -> None:
    """Grouped by file, worst first within a line; colours only when `console` has them."""
    by_file: dict[str, list[Finding]] = {}
    for finding in findings:
        by_file.setdefault(finding.file, []).append(finding)
    for file in files:
        found = by_file.get(file)
        if not found:
            continue
        console.print(f"[bold]{escape(file)}[/bold]", highlight=False)
        for f in found:
            console.print(
                f"  {escape(file)}:{f.line}: [{_STYLE[f.severity]}]{f.severity.value}[/] "
                f"[bold]{f.rule.id}[/bold]: {escape(f.message)}",
                highlight=False,
                soft_wrap=True,
            )
            console.print(f"      [dim]fix:[/dim] {escape(f.fix)}", highlight=False, soft_wrap=True)
    failed = len({e.file for e in errors})
    console.print(_summary(findings, len(files) - failed, failed), highlight=False, soft_wrap=True)
