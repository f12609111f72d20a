"""The job control socket: server side (in `dockmoat serve`) and client side (`dockmoat job`).

A unix socket, mode 0600 in a 0700 directory, and the peer must be root (or
the server's own user): opening a job hands out a Docker socket, so only the
host's administrator may do it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockmoat.errors import (
    EXIT_UNAVAILABLE,
    DockmoatError,
    EngineError,
    ProtocolError,
    error_for_exit,
)
from dockmoat.tenancy.durations import format_duration
from dockmoat.tenancy.model import Quotas
from dockmoat.tenancy.protocol import (
    MAX_LINE,
    CloseRequest,
    LsRequest,
    OpenRequest,
    encode,
    error_answer,
    parse_answer,
    parse_request,
)

if TYPE_CHECKING:  # the CLI side must stay light: no engine client imports
    from dockmoat.tenancy.jobs import JobManager

log = logging.getLogger("dockmoat.tenancy")

DEFAULT_CONTROL = Path("/run/dockmoat/control.sock")
CLIENT_TIMEOUT_S = 600.0  # a close removes images; that can take a while
IDLE_TIMEOUT_S = 30.0


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# After a job closed: its denials (for `close` to print); also releases its bind pins.
Denials = Callable[[str], Awaitable[list[dict[str, object]]]]


async def _answer(manager: JobManager, line: bytes, denials: Denials | None) -> dict[str, Any]:
    request = parse_request(line)
    if isinstance(request, OpenRequest):
        record = await manager.open(
            request.job,
            workspace=request.workspace,
            policy=request.policy,
            ttl=request.ttl,
            quotas=Quotas(**request.quotas.model_dump()) if request.quotas else None,
            warn=request.warn,
        )
        return {"ok": True, "job": record.job, "docker_host": f"unix://{record.socket}"}
    if isinstance(request, CloseRequest):
        removed = await manager.close(request.job)
        return {
            "ok": True,
            "job": request.job,
            "removed": removed.as_dict(),
            "denials": await denials(request.job) if denials is not None else [],
        }
    assert isinstance(request, LsRequest)
    now = manager.clock()
    return {
        "ok": True,
        "jobs": [
            {
                "job": s.record.job,
                "age": format_duration(now - s.record.created),
                "age_seconds": now - s.record.created,
                "ttl": s.record.ttl,
                "workspace": s.record.workspace,
                "socket": s.record.socket,
                "owned": s.counts,
            }
            for s in await manager.ls()
        ],
    }


def control_in_use(path: Path) -> bool:
    """Whether another running server answers on the control socket."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False  # stale: nobody answers
    return True


async def serve_control(
    path: Path, manager: JobManager, denials: Denials | None = None
) -> asyncio.Server:
    """Listen on the control socket; returns the server (close it to stop).

    `denials(job)`: the job's denials (and would-be denials) so far, for `close`."""
    my_uid = os.getuid()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = _peer_uid(sock)
            if uid not in (0, my_uid):
                writer.write(encode(error_answer("only root may control jobs")))
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except (TimeoutError, ValueError):
                    return
                if not line:
                    return
                try:
                    answer = await _answer(manager, line, denials)
                except DockmoatError as error:
                    answer = error_answer(str(error), error.exit_code)
                except Exception as error:  # answered, logged, and the server keeps serving
                    log.exception("control request failed")
                    answer = error_answer(f"internal error: {error}")
                writer.write(encode(answer))
                await writer.drain()
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(handle, path=str(path), limit=MAX_LINE)
    finally:
        os.umask(old_umask)
    path.chmod(0o600)
    return server


def remove_socket(path: Path) -> None:
    """Remove a socket file (nothing else) at `path`."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()


def call(path: Path, request: dict[str, Any], timeout: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """One control request from the CLI; raises EngineError with the server's message."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as error:
            raise EngineError(
                f"cannot reach the dockmoat control socket {path} ({error.strerror}); "
                "is `dockmoat serve` running, and are you root?"
            ) from error
        sock.sendall(encode(request))
        data = bytearray()
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_LINE * 16:
                raise ProtocolError("control answer too long")
    answer = parse_answer(bytes(data))
    if not answer["ok"]:
        message = str(answer.get("error", "control request failed"))
        code = answer.get("exit")
        raise error_for_exit(code if isinstance(code, int) else EXIT_UNAVAILABLE, message)
    return answer
