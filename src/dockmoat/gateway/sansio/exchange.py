"""One request being handled: its audit record, the exception that ends its
connection, and a stage's rewrite of a whole JSON answer (shared by the task
path and the fast lane).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dockmoat.api.gojson import compact
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.gateway import pipeline
from dockmoat.gateway.audit import AuditEntry
from dockmoat.gateway.sansio.http import RequestHead, ResponseHead
from dockmoat.gateway.stages import Json
from dockmoat.policy.decision import Deny


@dataclass(slots=True)
class Exchange:
    """The audit record of one request being handled."""

    conn_id: int
    client: ClientIdentity
    head: RequestHead | None = None
    request: ApiRequest | None = None
    decision: str = "error"
    rule: str | None = None
    notes: tuple[str, ...] = ()
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.monotonic)

    def audit_entry(self, stamp: str) -> AuditEntry:
        """What the audit log keeps of this request until it writes the line."""
        head = self.head
        request = self.request
        return AuditEntry(
            stamp, self.conn_id, self.client,
            head.method if head else None, head.target if head else None,
            request.path if request else None, request.api_version if request else None,
            request.route.name if request else None,
            self.decision, self.rule, self.notes, self.status, self.bytes_in, self.bytes_out,
            (time.monotonic() - self.started) * 1000,
        )  # fmt: skip


class Abort(Exception):
    """Close the client connection now (the reason is already answered or logged)."""


class BodyRefused(Exception):
    """A streamed body was read and refused before its end reached the daemon."""

    def __init__(self, decision: Deny) -> None:
        super().__init__(decision.message)
        self.decision = decision


def json_error(response: ResponseHead) -> bool:
    """An error answer in JSON: what a stage that rewrites errors rewrites."""
    return response.status >= 400 and (response.header("content-type") or "").startswith(
        "application/json"
    )


def restaged_json(body: bytes, rewrite: Callable[[Json], Json]) -> bytes | None:
    """A whole JSON answer's body as `rewrite` (a stage's `on_json_response`, the pins'
    sources shown again, or both) makes it; None when the result equals the daemon's
    answer (a filter that removed nothing, e.g. from an empty list), so the daemon's
    own bytes can go as read, not re-encoded."""
    answer = pipeline.json_answer(body)
    changed = rewrite(answer)
    if changed is answer or changed == answer:
        return None
    return compact(changed).encode() + b"\n"
