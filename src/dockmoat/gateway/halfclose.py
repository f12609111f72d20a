"""Half-closing a relayed connection, TLS included: the end of a hijacked stream's input.

`docker run -i`, `exec -i` and `attach` end the container's stdin by half-closing
the hijacked connection: the daemon reads EOF and still sends the rest of the
output. On a plain socket that is `shutdown(SHUT_WR)` (`write_eof`). A TLS
transport of asyncio (or uvloop) cannot half-close (`can_write_eof()` is False),
so a guard that only calls `write_eof` when it can never told a daemon reached
over TLS (`dockmoat dind`) that stdin ended, and the client waited for ever.

Over TLS the half-close is done on the TCP connection underneath, once every byte
the TLS layer holds has been handed to it: what the docker CLI itself did for years
(`tlsClientCon.CloseWrite` shut down the raw connection), and what dockerd (Go's
`crypto/tls`) reads as a clean EOF, since it falls on a record boundary. (An
OpenSSL-based TLS terminator in front of dockerd takes it for a truncation unless it
ignores unexpected EOFs; dockerd itself, the case here, is Go.) (Sending
close_notify instead would break the read side: Python's `SSLObject.read` raises
once both sides have sent one, and the TLS transport drops what it read with it.)
Neither asyncio nor uvloop exposes that TCP transport, so upstream TLS connections
are opened in two public steps (`open_tls`): a plain connection, kept, then
`loop.start_tls` on it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def open_tls(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], P],
    host: str,
    port: int,
    context: ssl.SSLContext,
) -> tuple[asyncio.Transport, P, asyncio.Transport]:
    """A TLS connection as (TLS transport, protocol, the TCP transport under it)."""
    tcp, _ = await loop.create_connection(asyncio.Protocol, host, port)
    protocol = protocol_factory()
    try:
        tls = await loop.start_tls(tcp, protocol, context, server_hostname=host)
    except BaseException:
        tcp.close()
        raise
    if tls is None:  # only when the transport closed during the handshake
        tcp.close()
        raise ConnectionResetError("the connection closed during the TLS handshake")
    protocol.connection_made(tls)  # start_tls does not: the protocol is new to it
    return tls, protocol, tcp


async def close_write(writer: asyncio.StreamWriter, tcp: asyncio.Transport | None) -> bool:
    """Half-close `writer`'s connection after flushing it; False when it cannot.

    `tcp` is the TCP transport under a TLS `writer` (from `open_tls`), else None.
    """
    transport = writer.transport
    if tcp is None:
        if not transport.can_write_eof():
            return False
        transport.write_eof()
        return True
    if transport.is_closing():
        return False
    # Every byte written so far must reach the wire before the FIN. First the TLS
    # layer: with a high-water mark of 1 (low 0) the writer is paused while it holds
    # anything and resumed once it is empty, so drain() waits for exactly that. (A
    # mark of 0 would pause an empty buffer for ever: it pauses at `size >= high`.)
    if transport.get_write_buffer_size():
        transport.set_write_buffer_limits(high=1)
        await writer.drain()
    # Then the TCP transport's own buffer (full only while the daemon reads slowly).
    while tcp.get_write_buffer_size():
        if tcp.is_closing():
            return False
        await asyncio.sleep(0.005)
    sock = tcp.get_extra_info("socket")
    if sock is None or transport.is_closing():
        return False
    # Not tcp.write_eof(): the TLS layer answers the daemon's close_notify later
    # and would then write to a transport it was told is closed (uvloop logs that as
    # an error). uvloop's transport socket refuses shutdown(); a duplicate of its
    # descriptor does not, and shutdown acts on the connection, not the descriptor.
    with socket.socket(fileno=os.dup(sock.fileno())) as dup:
        dup.shutdown(socket.SHUT_WR)
    return True
