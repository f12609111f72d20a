"""The job-open socket: a runner pod opens its own job with its CI job's identity token.

On a shared node the runner pods of different CI jobs must each get their own job's
socket, and none another's (docs/scale-out.md, "Job identity"). The pod mounts the
folder of this socket (not a guarded Docker socket) and calls

    POST /jobs   Authorization: Bearer <the CI system's job token (a JWT)>

serve verifies the token against the configured issuer's key set (RS256/ES256 only;
issuer, audience, expiry: dockmoat.deploy.jobidentity), derives the job name from its
claims (`gl-<job_id>`, `gh-<run_id>-<attempt>-...`) and opens that job with the token's
remaining lifetime as its TTL. The job's socket is made in this socket's folder under a
random name that only the answer carries (a capability: another pod on the node cannot
guess it). The same token (or another for the same job) gets the same socket back;
anything else is one JSON line with the reason: 400 malformed, 401 the token proves
nothing, 403 expired or its job closed, 409 the job is open by other means (`dockmoat job
open`).

One request per connection (HTTP/1.1, `Connection: close`), bounded in size and time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dockmoat.deploy.jobidentity import IdentityError, KeySet, job_name, verify
from dockmoat.errors import ConfigError, DockmoatError
from dockmoat.gateway.sansio.http import (
    BodyData,
    Invalid,
    MessageEnd,
    RequestHead,
    RequestReader,
    json_response,
)

if TYPE_CHECKING:
    from dockmoat.tenancy.jobs import JobManager

log = logging.getLogger("dockmoat.tenancy")

_MAX_REQUEST = 64 * 1024
_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class JobOpenSettings:
    """`serve --job-open-socket PATH --job-identity ISSUER=JWKS --job-identity-audience AUD`."""

    socket: Path
    issuers: Mapping[str, KeySet]  # issuer -> its key set, read once at start
    audience: str

    @classmethod
    def parse(
        cls, socket: Path | None, identities: tuple[str, ...], audience: str | None
    ) -> JobOpenSettings | None:
        """The settings, or None when no job-open socket is asked for. ConfigError for
        anything missing or unreadable (at start-up, one line)."""
        if socket is None:
            if identities or audience:
                raise ConfigError(
                    "--job-identity and --job-identity-audience need --job-open-socket"
                )
            return None
        if not identities:
            raise ConfigError(
                "--job-open-socket needs at least one --job-identity ISSUER=JWKS_FILE"
            )
        if not audience:
            raise ConfigError("--job-open-socket needs --job-identity-audience (the tokens' aud)")
        issuers: dict[str, KeySet] = {}
        for item in identities:
            issuer, sep, path = item.rpartition("=")
            if not sep or not issuer or not path:
                raise ConfigError(f"--job-identity {item!r}: expected ISSUER=JWKS_FILE")
            try:
                issuers[issuer] = KeySet.from_jwks(Path(path).read_bytes())
            except OSError as error:
                raise ConfigError(f"--job-identity {issuer}: cannot read {path}: {error}") from None
            except IdentityError as error:
                message = f"--job-identity {issuer}: {path} is not a JWKS: {error}"
                raise ConfigError(message) from None
        return cls(socket, issuers, audience)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, object]


class JobOpen:
    """Decides one job-open call (no I/O but the job manager's open)."""

    def __init__(
        self,
        settings: JobOpenSettings,
        jobs: JobManager,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.clock = clock

    async def open(self, authorization: str | None) -> Answer:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "send the CI job's identity token as Authorization: Bearer TOKEN")
        now = self.clock()
        try:
            issuer = _unverified_issuer(token)
            keys = self.settings.issuers.get(issuer)
            if keys is None:
                raise IdentityError(f"issuer {issuer!r} is not configured")
            claims = verify(token, keys, issuer=issuer, audience=self.settings.audience, now=now)
            job = job_name(claims)
        except IdentityError as error:
            if str(error) == "token expired":
                return _error(403, "the token has expired: its job is over")
            return _error(401, f"the token proves no job: {error}")
        ttl = int(float(claims["exp"]) - now)
        if ttl <= 0:
            return _error(403, "the token has expired: its job is over")
        folder = self.settings.socket.parent
        if self.jobs.store.was_closed(job) and self.jobs.store.get_job(job) is None:
            return _error(403, f"job {job} was closed: its token opens it no more")
        record = self.jobs.store.get_job(job)
        if record is not None:
            if Path(record.socket).parent != folder:
                return _error(409, f"job {job} is open already, not through the job-open socket")
            return _opened(job, record.socket, 200)
        socket = folder / f"{secrets.token_urlsafe(18)}.sock"
        try:
            opened = await self.jobs.open(job, ttl=ttl, socket=socket)
        except DockmoatError as error:
            return _error(409 if "open already" in str(error) else 503, str(error))
        log.info("job-open: %s (issuer %s) opened its job", job, issuer)
        return _opened(job, opened.socket, 201)


def _unverified_issuer(token: str) -> str:
    """The `iss` a token claims, only to pick the key set that then verifies it."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise IdentityError("not a signed JWT (header.payload.signature)")
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        raise IdentityError("the payload is not base64url JSON") from None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    if not isinstance(issuer, str):
        raise IdentityError("the token names no issuer")
    return issuer


def _opened(job: str, socket: str, status: int) -> Answer:
    return Answer(status, {"job": job, "socket": socket, "docker_host": f"unix://{socket}"})


def _error(status: int, message: str) -> Answer:
    return Answer(status, {"message": f"dockmoat: job-open: {message}"})


def _response(answer: Answer) -> bytes:
    return json_response(answer.status, answer.body, keep_alive=False)


async def _read_request(reader: asyncio.StreamReader) -> RequestHead | Answer:
    parser = RequestReader()
    head: RequestHead | None = None
    size = 0
    while True:
        data = await reader.read(8192)
        size += len(data)
        if size > _MAX_REQUEST:
            return _error(413, "request too large")
        events = parser.feed(data) if data else []
        for event in events:
            if isinstance(event, Invalid):
                return _error(400, f"bad request: {event.reason}")
            if isinstance(event, RequestHead):
                head = event
            elif isinstance(event, MessageEnd) and head is not None:
                return head
            elif isinstance(event, BodyData):
                continue
        if not data:
            return _error(400, "the request ended early")


async def serve_job_open(settings: JobOpenSettings, jobs: JobManager) -> asyncio.Server:
    """Listen on the job-open socket (mode 0666: the token is the credential)."""
    deciding = JobOpen(settings, jobs)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_read_request(reader), _TIMEOUT_S)
            if isinstance(request, Answer):
                answer = request
            elif request.target.split("?", 1)[0].rstrip("/") != "/jobs":
                answer = _error(404, "POST /jobs is the one call here")
            elif request.method != "POST":
                answer = _error(405, "POST /jobs is the one call here")
            else:
                answer = await deciding.open(request.header("authorization"))
            writer.write(_response(answer))
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        except Exception:  # one line to the client, the traceback logged
            log.exception("job-open: a call failed")
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(_response(_error(503, "internal error; see serve's log")))
        finally:
            writer.close()

    path = settings.socket
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = await asyncio.start_unix_server(handle, path=str(path))
    # Any local process may call: the token is the credential, not the socket's mode.
    path.chmod(0o666)
    log.info("job-open socket %s (%d issuer(s), audience %s)", path, len(settings.issuers),
             settings.audience)  # fmt: skip
    return server
