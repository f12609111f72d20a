"""The values an audit produces: rules, severities and findings."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Higher is worse; used for sorting and for the exit status."""
        return {"high": 3, "medium": 2, "low": 1}[self.value]


@dataclass(frozen=True)
class Rule:
    """One stable check. `id` never changes once released: users suppress and grep by it."""

    id: str
    severity: Severity
    title: str
    help: str
    fix: str


@dataclass(frozen=True)
class Finding:
    rule: Rule
    file: str
    line: int
    message: str
    severity: Severity
    fix: str

    def as_dict(self) -> dict[str, str | int]:
        return {
            "rule": self.rule.id,
            "severity": self.severity.value,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Hit:
    """A finding before it knows its file: what the per-format analysers return."""

    rule: Rule
    line: int
    message: str
    severity: Severity | None = None
    fix: str | None = None

    def in_file(self, file: str) -> Finding:
        return Finding(
            rule=self.rule,
            file=file,
            line=self.line,
            message=self.message,
            severity=self.severity or self.rule.severity,
            fix=self.fix or self.rule.fix,
        )


@dataclass(frozen=True)
class FileError:
    """A file that could not be audited, with a one-line reason."""

    file: str
    reason: str
