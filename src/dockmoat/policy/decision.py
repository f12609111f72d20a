"""Decisions are values: every rule returns one of these, never None."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Allow:
    """Forward the request as it is."""

    rule: str = "allow"


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse with HTTP 403; `message` says what was refused and what is allowed instead."""

    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Forward a changed request: `body_json` replaces the body, `query` the query string.

    `notes` say what was changed, for the audit log.
    """

    rule: str
    notes: tuple[str, ...]
    body_json: Any = None
    query: dict[str, list[str]] | None = None


Decision = Allow | Deny | Rewrite
