"""A streamed answer over the pool (`PooledUpstream.stream`, tenancy's image events):
read as it comes, on a connection of its own, ended by the pool's close."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dockmoat.errors import UpstreamError
from dockmoat.gateway.config import Endpoint, Limits
from dockmoat.gateway.upstream import PooledUpstream, UpstreamPool


async def events_daemon(path: Path, sent: asyncio.Queue[bytes]) -> asyncio.Server:
    """Answers with a chunked stream: a line whenever the test puts one in `sent`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Date: Tue, 08 Dec 2026 01:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        while (line := await sent.get()) != b"":
            writer.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client goes

    return await asyncio.start_unix_server(answer, path=str(path))


def _pool(path: Path) -> UpstreamPool:
    return UpstreamPool(Endpoint(url=f"unix://{path}", kind="unix", path=path), Limits())


async def _streaming(
    tmp_path: Path,
) -> tuple[asyncio.Queue[bytes], asyncio.Server, UpstreamPool, PooledUpstream]:
    """An events daemon at tmp_path/d.sock (fed by the queue), its pool and an upstream."""
    path = tmp_path / "d.sock"
    sent: asyncio.Queue[bytes] = asyncio.Queue()
    server = await events_daemon(path, sent)
    pool = _pool(path)
    return sent, server, pool, PooledUpstream(pool, 1 << 20)


def test_a_stream_is_read_as_it_comes_and_ends_with_its_answer(tmp_path: Path) -> None:
    async def run() -> None:
        sent, server, pool, upstream = await _streaming(tmp_path)
        async with upstream.stream("GET", "/v1.41/events") as answer:
            assert answer.status == 200 and answer.headers["date"].endswith("GMT")
            chunks = answer.chunks
            sent.put_nowait(b'{"Action":"tag"}\n')
            assert await anext(chunks) == b'{"Action":"tag"}\n'
            sent.put_nowait(b"")
            assert [c async for c in chunks] == []
        assert not pool._idle and not pool._held  # its connection was never pooled
        server.close()
        await server.wait_closed()

    asyncio.run(run())


def test_the_pools_close_ends_a_stream_and_no_stream_opens_after_it(tmp_path: Path) -> None:
    async def run() -> None:
        _sent, server, pool, upstream = await _streaming(tmp_path)
        with pytest.raises(UpstreamError):
            async with upstream.stream("GET", "/v1.41/events") as answer:
                reading = asyncio.ensure_future(anext(answer.chunks))
                await asyncio.sleep(0.05)
                pool.close()  # serve stops
                await asyncio.wait_for(reading, 5)
        assert upstream.closed
        with pytest.raises(UpstreamError):
            async with upstream.stream("GET", "/v1.41/events"):
                pass
        server.close()
        await server.wait_closed()

    asyncio.run(run())
