"""The gateway learns the daemon's version at start and again after a reconnect."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from dockmoat.api.engines import EngineVersion
from dockmoat.errors import UpstreamError
from dockmoat.gateway.config import Endpoint, Limits
from dockmoat.gateway.upstream import PooledUpstream, UpstreamPool, learn_engine


def version_answer(api: str, minimum: str) -> bytes:
    body = json.dumps({"Version": "x", "ApiVersion": api, "MinAPIVersion": minimum}).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def fake_daemon(path: Path, api: str) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(version_answer(api, "1.24"))
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(answer, path=str(path))


def test_version_learnt_and_relearnt_after_a_reconnect(tmp_path: Path) -> None:
    async def run() -> None:
        path = tmp_path / "d.sock"
        pool = UpstreamPool(Endpoint(url=f"unix://{path}", kind="unix", path=path), Limits())
        upstream = PooledUpstream(pool, 1 << 20)
        reconnects: list[int] = []
        pool.on_reconnect = lambda: reconnects.append(1)
        server = await fake_daemon(path, "1.51")
        assert await learn_engine(pool, upstream) == EngineVersion("x", (1, 51), (1, 24))
        server.close()
        await server.wait_closed()
        path.unlink()
        await asyncio.sleep(0.05)  # the pooled connection sees the daemon's close
        try:
            await learn_engine(pool, upstream)
        except UpstreamError:
            pass
        else:
            raise AssertionError("the daemon was gone")
        assert reconnects == []
        server = await fake_daemon(path, "1.60")  # the daemon came back, upgraded
        engine = await learn_engine(pool, upstream)
        assert reconnects == [1]  # the pool said so: the gateway relearns then
        assert engine.api == (1, 60) and engine.newer_than_modeled
        assert pool.engine == engine
        server.close()
        await server.wait_closed()

    asyncio.run(run())
