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
    """Refuse; `message` says what was refused and what is allowed instead.

    `status` is 403 for policy denials; tenancy answers 404 for resources that
    do not exist for the tenant (never a 403 that would confirm existence).
    """

    rule: str
    message: str
    status: int = 403


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Forward a changed request.

    `body_json` (when not None) replaces the body, `query` the query string,
    `path` the routed path (e.g. a name resolved to a full id, so that a rename
    between check and forward cannot redirect the request). `notes` say what was
    changed, for the audit log.
    """

    rule: str
    notes: tuple[str, ...]
    body_json: Any = None
    query: dict[str, list[str]] | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class WouldDeny(Allow):
    """Warn mode: forwarded as it is, and audited as `would_deny` with the rule (and
    the message) that would have refused it. An Allow everywhere else."""

    message: str = ""


WOULD_DENY = "would_deny"

Decision = Allow | Deny | Rewrite
