"""The I/O of an upgraded BuildKit connection (`/grpc`, `/session`): bytes to the relay.

After dockerd's 101 the gateway hands the two sockets here instead of relaying them
raw (`Gateway._hijack`). Everything is decided by `dockmoat.buildkit.relay.Relay`
(sans-IO); this module only reads, writes, awaits the decider and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from dockmoat.buildkit.decide import BuildDecider, RefuseAll
from dockmoat.buildkit.messages import Message
from dockmoat.buildkit.relay import (
    Call,
    Close,
    Command,
    Decide,
    Ended,
    Refuse,
    Relay,
    SendClient,
    SendUpstream,
    Verdict,
)
from dockmoat.buildkit.services import Tunnel

log = logging.getLogger(__name__)

READ_SIZE: Final = 256 * 1024
TUNNELS: Final[dict[str, Tunnel]] = {"grpc.grpc": "grpc", "session.session": "session"}


class _Closed(Exception):
    pass


async def run(
    tunnel: Tunnel,
    decider: BuildDecider,
    read_client: Callable[[], Awaitable[bytes]],
    client: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
    *,
    client_leftover: bytes = b"",
    upstream_leftover: bytes = b"",
    count_in: Callable[[int], None] | None = None,
    count_out: Callable[[int], None] | None = None,
    on_verdict: Callable[[Call, Message, Verdict], None] | None = None,
) -> None:
    """Relay one upgraded connection until either side ends it or the relay closes it.
    `on_verdict` hears every decided call (the gateway audits each)."""
    relay = Relay(tunnel, decider)

    async def execute(commands: list[Command]) -> None:
        # Ends first: a failed build's claims are released before its client hears of
        # the failure (and even on a closing connection). Then bytes, in the order the
        # relay made them (before any await), then drains, then decisions: a decision
        # awaited never lets later bytes overtake earlier ones.
        for end in commands:
            if isinstance(end, Ended):
                try:
                    await decider.ended(end.call, end.ok)
                except Exception:  # logged; the relay goes on
                    log.exception("BuildKit: the end of %s failed", end.call.method.short)
        decisions: list[Decide] = []
        closing: Close | None = None
        for command in commands:
            if isinstance(command, SendClient):
                if count_out is not None:
                    count_out(len(command.data))
                client.write(command.data)
            elif isinstance(command, SendUpstream):
                upstream.write(command.data)
            elif isinstance(command, Decide):
                decisions.append(command)
            elif isinstance(command, Close):
                closing = command
        if closing is not None:
            log.debug("BuildKit %s tunnel ends: %s", tunnel, closing.reason)
            raise _Closed
        await client.drain()
        await upstream.drain()
        for decide in decisions:
            verdict: Verdict
            try:
                verdict = await decider.decide(decide.call, decide.message, decide.payload)
            except Exception:  # fail closed (decide already does; belt and braces)
                log.exception("BuildKit decision failed")
                verdict = Refuse("dockmoat: policy.error: the call could not be decided")
            if on_verdict is not None:
                on_verdict(decide.call, decide.message, verdict)
            await execute(relay.decided(decide.token, verdict))

    async def from_client() -> None:
        if client_leftover:
            await execute(relay.receive_client(client_leftover))
        while True:
            data = await read_client()
            if not data:
                await execute(relay.client_closed())
                return
            if count_in is not None:
                count_in(len(data))
            await execute(relay.receive_client(data))

    async def from_upstream() -> None:
        if upstream_leftover:
            await execute(relay.receive_upstream(upstream_leftover))
        while True:
            data = await upstream_reader.read(READ_SIZE)
            if not data:
                await execute(relay.upstream_closed())
                return
            await execute(relay.receive_upstream(data))

    tasks: list[asyncio.Task[None]] = []
    try:
        await execute(relay.start())
        tasks = [asyncio.create_task(from_client()), asyncio.create_task(from_upstream())]
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, _Closed | ConnectionError | OSError):
                log.warning("BuildKit %s tunnel failed: %r", tunnel, error)
    except (_Closed, ConnectionError, OSError):
        pass
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for writer in (upstream, client):
            with contextlib.suppress(Exception):
                writer.close()


UPGRADED: Final = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


async def refuse_all(
    tunnel: Tunnel,
    message: str,
    read_client: Callable[[], Awaitable[bytes]],
    client: asyncio.StreamWriter,
    *,
    client_leftover: bytes = b"",
) -> None:
    """A tunnel the policy refused, answered by the guard alone: the switch to HTTP/2 as
    dockerd answers it, then every call refused with `message` (nothing reaches dockerd)."""
    relay = Relay(tunnel, RefuseAll(message))

    async def send(commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, SendClient):
                client.write(command.data)
            elif isinstance(command, Close):
                raise _Closed
        await client.drain()  # SendUpstream: there is no daemon behind this one

    try:
        client.write(UPGRADED)
        await send(relay.start())
        if tunnel == "session":
            # Nothing will call the client's services: end the session at once (GOAWAY,
            # then close), so the client reports its build's refusal instead of waiting.
            await send(relay.goaway())
            return
        if client_leftover:
            await send(relay.receive_client(client_leftover))
        while True:
            data = await read_client()
            if not data:
                return
            await send(relay.receive_client(data))
    except (_Closed, ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            client.close()
