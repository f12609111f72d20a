"""The audit log's losses on serve's `/metrics` (issue 23: "the audit log's disk full:
the operator is told"): a gateway whose audit log is /dev/full (every write fails with
ENOSPC) in front of a stand-in daemon, scraped through its `--metrics-listen` socket
and read back with prometheus_client's own text parser."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from dockmoat.gateway import audit
from dockmoat.gateway.server import Gateway
from dockmoat.gateway.stages import PermissivePolicy
from support.serve_settings import settings

VERSION = b'{"Version":"27.0.0","ApiVersion":"1.45","MinAPIVersion":"1.24"}'


async def daemon(path: Path) -> asyncio.Server:
    """Answers every request (no bodies here) with 200 and the engine's version."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(VERSION), VERSION)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(serve, path=str(path))


async def get(sock: Path, path: str) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family: Any) -> float:
    (sample,) = family.samples
    return float(sample.value)


def test_audit_losses_are_on_metrics(tmp_path: Path) -> None:
    scrapes: list[dict[str, Any]] = []

    async def scenario() -> None:
        server = await daemon(tmp_path / "d.sock")
        served = settings(
            listen=[f"unix://{tmp_path / 'g.sock'}"], upstream=f"unix://{tmp_path / 'd.sock'}",
            profile="permissive", audit_log="/dev/full",
            metrics_listen=f"unix://{tmp_path / 'm.sock'}",
        )  # fmt: skip
        gateway = Gateway(served, PermissivePolicy())
        await gateway.start()
        try:
            status, text = await get(tmp_path / "m.sock", "/metrics")
            assert status == b"HTTP/1.1 200 OK"
            scrapes.append(families(text.decode()))
            for _ in range(3):
                status, _body = await get(tmp_path / "g.sock", "/v1.45/_ping")
                assert status == b"HTTP/1.1 200 OK"
                await asyncio.sleep(audit.BATCH_WINDOW * 2)  # one failed batch each
            status, text = await get(tmp_path / "m.sock", "/metrics")
            scrapes.append(families(text.decode()))
        finally:
            await gateway.drain()
            server.close()

    asyncio.run(scenario())
    before, after = scrapes
    assert value(before["dockmoat_audit_dropped"]) == 0
    assert value(before["dockmoat_audit_failing"]) == 0
    assert before["dockmoat_audit_dropped"].type == "counter"
    assert after["dockmoat_audit_dropped"].samples[0].name == "dockmoat_audit_dropped_total"
    assert value(after["dockmoat_audit_dropped"]) == 3  # requests went on: 200 each
    assert value(after["dockmoat_audit_write_errors"]) == 3
    assert after["dockmoat_audit_failing"].type == "gauge"
    assert value(after["dockmoat_audit_failing"]) == 1
    assert value(after["dockmoat_audit_queued_entries"]) == 0
