"""A small HTTP/1.1 client over unix sockets that counts every request it sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field


class Broken(Exception):
    """The connection ended before a whole answer (the gateway or the daemon went away)."""


@dataclass
class Stats:
    """Per-tenant client-side counts: what was sent, what came back, how long it took."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    broken: int = 0
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    created: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Answers of 400 and above, per "route status" (what the statuses column sums up).
    refused: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Stats) -> None:
        self.sent += other.sent
        self.statuses.update(other.statuses)
        self.broken += other.broken
        self.refused.update(other.refused)
        for route, values in other.latency.items():
            self.latency[route].extend(values)


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> object:
        return json.loads(self.body or b"null")


class Conn:
    """One keep-alive connection; reconnects on the next request after a break."""

    def __init__(self, sock: str, stats: Stats, timeout: float = 60.0) -> None:
        self.sock = sock
        self.stats = stats
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        route: str = "",
        raw_stream: bool = False,
    ) -> Answer:
        """Send one request and read its whole answer. A raw stream (exec start) is read
        until the daemon closes it. `Broken` when the connection ends early."""
        start = time.monotonic()
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.open_unix_connection(self.sock)
            except OSError as e:
                raise Broken(str(e)) from e
        assert self.reader is not None
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        try:
            self.writer.write(head.encode() + b"\r\n" + data)
            await self.writer.drain()
            self.stats.sent += 1
            answer = await asyncio.wait_for(self._read(raw_stream), self.timeout)
        except (OSError, asyncio.IncompleteReadError, Broken, TimeoutError, ValueError) as e:
            self.stats.broken += 1
            await self.close()
            raise Broken(f"{method} {path}: {e!r}") from e
        self.stats.statuses[answer.status] += 1
        if answer.status >= 400:
            self.stats.refused[f"{route or method} {answer.status}"] += 1
        self.stats.latency[route or method].append(time.monotonic() - start)
        if raw_stream:
            await self.close()
        return answer

    async def _read(self, raw_stream: bool) -> Answer:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        elif status in (204, 304) or (not raw_stream and status < 200):
            body = b""
        else:
            body = await self.reader.read()  # until close (raw exec stream, 101)
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, body)
