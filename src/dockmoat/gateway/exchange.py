"""One request being handled: its audit record, the exception that ends its
connection, and a stage's rewrite of a whole JSON answer (shared by the task
path and the fast lane).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.gateway import pipeline
from dockmoat.gateway.http import RequestHead, ResponseHead


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

    def entry(self, stamp: str) -> dict[str, Any]:
        request = self.request
        return {
            "time": stamp,
            "conn": self.conn_id,
            "listener": self.client.listener,
            "tenant": self.client.tenant,
            "uid": self.client.uid,
            "pid": self.client.pid,
            "tls_subject": self.client.tls_subject,
            "address": self.client.address,
            "method": self.head.method if self.head else None,
            "path": self.head.target if self.head else None,
            "routed_path": request.path if request else None,
            "api_version": request.api_version if request else None,
            "route": request.route.name if request else None,
            "decision": self.decision,
            "rule": self.rule,
            "notes": list(self.notes),
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
        }


class Abort(Exception):
    """Close the client connection now (the reason is already answered or logged)."""


def json_error(response: ResponseHead) -> bool:
    """An error answer in JSON: what a stage that rewrites errors rewrites."""
    return response.status >= 400 and (response.header("content-type") or "").startswith(
        "application/json"
    )


def restaged_json(stage: Any, request: ApiRequest, status: int, body: bytes) -> bytes | None:
    """A whole JSON answer's body as the stage rewrites it; None when the stage's
    answer equals the daemon's (a filter that removed nothing, e.g. from an empty
    list), so the daemon's own bytes can go as read, not re-encoded."""
    answer = pipeline.json_answer(body)
    changed = stage.on_json_response(request, status, answer)
    if changed is answer or changed == answer:
        return None
    return json.dumps(changed, separators=(",", ":")).encode() + b"\n"
