"""A streamed body that names objects (a load's tarball, a classic build's context) is
read as it passes, and the daemon gets neither the end of the archive nor the end of
the body before the decision: a refused body never completes at the daemon.

The daemon here is a stand-in that records every byte it receives: what matters is
exactly which bytes reach it, which the real engine cannot show.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockmoat.api.bodies import ArchiveTags
from dockmoat.api.request import ApiRequest
from dockmoat.gateway.config import Endpoint, ListenerSettings
from dockmoat.gateway.server import Gateway
from dockmoat.gateway.stages import Context, PermissivePolicy, Stage
from dockmoat.policy.decision import Allow, Decision, Deny
from support.serve_settings import settings


class RefusesTag(Stage):
    """A stage that allows every request and refuses a load that sets `refused:tag`."""

    def __init__(self) -> None:
        self.checked: list[ArchiveTags] = []

    async def check_archive_tags(
        self, ctx: Context, request: ApiRequest, archive: ArchiveTags
    ) -> Decision:
        self.checked.append(archive)
        if any(tag == "refused:tag" for tag, _ in archive.tags):
            return Deny("test.refused", "dockmoat: test.refused: no", status=403)
        return Allow()


@dataclass
class Received:
    bodies: list[bytes] = field(default_factory=list)
    complete: list[bool] = field(default_factory=list)


async def recording_daemon(sock: Path, received: Received) -> asyncio.Server:
    """Takes a chunked POST body, records it, answers 200 once the body is complete."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = bytearray()
        complete = False
        head = b""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"POST "):  # the gateway's /version at start
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    complete = True
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            answer = b'{"stream":"Loaded image: x\\n"}\n'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))  # fmt: skip
            await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            if head.startswith(b"POST "):
                received.bodies.append(bytes(body))
                received.complete.append(complete)
            writer.close()

    return await asyncio.start_unix_server(handle, path=str(sock))


def tarball(tags: list[str], *, padding: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (
            ("layer/blob", b"x" * 200_000),
            ("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": tags}]).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue() + b"\0" * padding


def run_load(tmp_path: Path, body: bytes) -> tuple[bytes, Received, RefusesTag]:
    daemon_sock, main_sock, job_sock = (tmp_path / n for n in ("d.sock", "m.sock", "j.sock"))
    received = Received()
    stage = RefusesTag()

    async def scenario() -> bytes:
        daemon = await recording_daemon(daemon_sock, received)
        served = settings(listen=[f"unix://{main_sock}"], upstream=f"unix://{daemon_sock}",
                          profile="permissive")  # fmt: skip
        gateway = Gateway(served, PermissivePolicy())
        await gateway.start()
        try:
            job = ListenerSettings(
                endpoint=Endpoint(url=f"unix://{job_sock}", kind="unix", path=job_sock),
                tenant="job",
            )
            await gateway.add_listener(job, stage=stage)
            reader, writer = await asyncio.open_unix_connection(str(job_sock))
            writer.write(
                b"POST /v1.41/images/load HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
                b"Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for start in range(0, len(body), 4096):
                piece = body[start : start + 4096]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            for _ in range(100):  # the daemon side records when its connection ends
                if received.bodies:
                    break
                await asyncio.sleep(0.02)
            return answer
        finally:
            await gateway.drain()
            daemon.close()

    return asyncio.run(scenario()), received, stage


def end_of_archive(body: bytes) -> int:
    """The offset of the archive's first zero block (what moby's untar stops at)."""
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        last = tar.getmembers()[-1]
        return last.offset_data + -(-last.size // 512) * 512


@pytest.mark.parametrize("padding", [0, 20_000])
def test_a_refused_load_never_reaches_the_end_of_its_archive(tmp_path: Path, padding: int) -> None:
    body = tarball(["refused:tag"], padding=padding)
    answer, received, stage = run_load(tmp_path, body)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert b"dockmoat: test.refused: no" in answer
    assert [t for t, _ in stage.checked[0].tags] == ["refused:tag"]
    assert received.complete == [False]
    assert len(received.bodies[0]) < end_of_archive(body)


def test_an_allowed_load_reaches_the_daemon_whole(tmp_path: Path) -> None:
    body = tarball(["allowed:tag"], padding=9000)
    answer, received, _ = run_load(tmp_path, body)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert received.complete == [True]
    assert received.bodies == [body]


def test_an_unreadable_load_is_refused_before_it_completes(tmp_path: Path) -> None:
    body = bytearray(tarball(["allowed:tag"]))
    body[600] ^= 0xFF  # inside the first member's data: fine; now break a header's checksum
    body[148] ^= 0x01
    answer, received, _ = run_load(tmp_path, bytes(body))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"dockmoat: api.unreadable-body: " in answer
    assert received.complete in ([], [False])
