"""The job control protocol: one JSON object per line each way (pure, no I/O).

Requests:  {"op": "open", "job": "ci-42", "workspace": "/builds/x", "policy": null,
            "ttl": 7200, "quotas": {"running_containers": 5, ...}}
           {"op": "close", "job": "ci-42"}      {"op": "ls"}
Answers:   {"ok": true, ...} or {"ok": false, "error": "...", "exit": 2}
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from dockmoat.api.gojson import compact
from dockmoat.errors import ProtocolError

MAX_LINE = 64 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuotaSpec(_Strict):
    running_containers: int | None = Field(default=None, ge=0)
    memory_bytes: int | None = Field(default=None, ge=0)
    volumes: int | None = Field(default=None, ge=0)


class OpenRequest(_Strict):
    op: Literal["open"]
    job: str
    workspace: str | None = None
    policy: str | None = None
    ttl: int | None = Field(default=None, gt=0)
    quotas: QuotaSpec = QuotaSpec()
    warn: bool = False  # would-be denials forwarded, audited as would_deny


class CloseRequest(_Strict):
    op: Literal["close"]
    job: str


class LsRequest(_Strict):
    op: Literal["ls"]


ControlRequest = Annotated[OpenRequest | CloseRequest | LsRequest, Field(discriminator="op")]
_REQUEST: TypeAdapter[OpenRequest | CloseRequest | LsRequest] = TypeAdapter(ControlRequest)


def encode(message: dict[str, Any] | BaseModel) -> bytes:
    payload = message.model_dump() if isinstance(message, BaseModel) else message
    return compact(payload).encode() + b"\n"


def parse_request(line: bytes) -> OpenRequest | CloseRequest | LsRequest:
    if len(line) > MAX_LINE:
        raise ProtocolError("control request too long")
    try:
        return _REQUEST.validate_json(line)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProtocolError(f"bad control request: {where}: {first.get('msg')}") from error


def parse_answer(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE * 16:
        raise ProtocolError("control answer too long")
    try:
        answer = json.loads(line)
    except ValueError as error:
        raise ProtocolError(f"bad control answer: {error}") from error
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise ProtocolError("bad control answer: not an object with 'ok'")
    return answer


def error_answer(message: str, exit_code: int | None = None) -> dict[str, Any]:
    """A refusal; `exit` is the exit code the CLI ends with (errors.py's classes)."""
    answer: dict[str, Any] = {"ok": False, "error": message}
    if exit_code is not None:
        answer["exit"] = exit_code
    return answer
