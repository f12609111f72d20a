"""Half-closing TLS connections both ways, on asyncio's loop and on uvloop.

- `open_tls` + `close_write`: the guard's end of a daemon connection over TLS. A server
  that reads to the end and then answers (as dockerd does for `run -i`) must get every
  byte, its end, and still be heard.
- `HalfCloseTls`: the guard's listener. A client that sends its request, then a
  close_notify (what the docker CLI does), must still get the whole answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from dockmoat.gateway.halfclose import close_write, open_tls
from dockmoat.gateway.tlslisten import HalfCloseTls
from support.pki import make_ca, make_leaf

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}
DATA = os.urandom(3 << 20)  # more than any transport buffers


def _server_context(folder: Path, options: int = 0) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    context.load_verify_locations(folder / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    context.options |= options
    return context


@pytest.fixture(scope="module")
def contexts(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, ssl.SSLContext, ssl.SSLContext]:
    """(the certificate folder, server context, client context): mutual TLS."""
    folder = tmp_path_factory.mktemp("tls")
    ca = make_ca()
    server = make_leaf(ca, "server", server=True, ips=("127.0.0.1",))
    client = make_leaf(ca, "client", server=False)
    for name, data in {
        "ca.pem": ca.cert_pem, "server.pem": server.cert_pem, "server.key": server.key_pem,
        "client.pem": client.cert_pem, "client.key": client.key_pem,
    }.items():  # fmt: skip
        (folder / name).write_bytes(data)
    cli = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    cli.load_cert_chain(folder / "client.pem", folder / "client.key")
    return folder, _server_context(folder), cli


def _reading_server(folder: Path) -> tuple[int, threading.Thread, list[bytes]]:
    """A blocking TLS server like dockerd: reads to EOF, then answers with a digest.

    Go's crypto/tls reads a TCP FIN on a record boundary as the end of the input and
    keeps writing; OpenSSL does so only with OP_IGNORE_UNEXPECTED_EOF (without it, it
    takes the FIN for a truncation and refuses to write: an OpenSSL-based TLS
    terminator in front of dockerd would, see gateway/halfclose.py).
    """
    context = _server_context(folder, ssl.OP_IGNORE_UNEXPECTED_EOF)
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        listener.close()
        with context.wrap_socket(conn, server_side=True) as tls:
            data = bytearray()
            while chunk := tls.recv(65536):  # b"" at the TCP EOF on a record boundary
                data += chunk
            got.append(bytes(data))
            tls.sendall(b"digest " + hashlib.sha256(data).hexdigest().encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread, got


@pytest.mark.parametrize("loop", LOOPS)
def test_close_write_over_tls_ends_the_input_and_keeps_the_answer(
    loop: str, contexts: tuple[Path, ssl.SSLContext, ssl.SSLContext]
) -> None:
    folder, _, client_context = contexts
    port, thread, got = _reading_server(folder)

    async def main() -> None:
        running = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, protocol, tcp = await open_tls(
            running, lambda: asyncio.StreamReaderProtocol(reader), "127.0.0.1", port, client_context
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, running)
        writer.write(DATA)
        assert await asyncio.wait_for(close_write(writer, tcp), 30) is True
        answer = await asyncio.wait_for(reader.read(), 30)
        assert answer == b"digest " + hashlib.sha256(DATA).hexdigest().encode()
        writer.close()

    LOOPS[loop](main())
    thread.join(10)
    assert got == [DATA]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_listener_answers_after_the_clients_close_notify(
    loop: str, contexts: tuple[Path, ssl.SSLContext, ssl.SSLContext]
) -> None:
    _, server_context, client_context = contexts
    answers: list[bytes] = []

    class Echo(asyncio.Protocol):
        """Answers with the digest of what came, once the client stopped writing."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.data = bytearray()

        def data_received(self, data: bytes) -> None:
            self.data += data

        def eof_received(self) -> bool:
            self.transport.write(b"digest " + hashlib.sha256(self.data).hexdigest().encode())
            self.transport.close()
            return True

    def client(port: int) -> None:
        """The docker CLI's way: data, close_notify (no FIN), then read to the end."""
        with socket.create_connection(("127.0.0.1", port)) as raw:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = client_context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

            def flush() -> None:
                raw.sendall(outgoing.read())

            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    flush()
                    incoming.write(raw.recv(65536))
            flush()
            tls.write(DATA)
            flush()
            with pytest.raises(ssl.SSLWantReadError):
                tls.unwrap()  # sends close_notify, then would wait for the server's
            flush()
            answer = bytearray()
            while chunk := raw.recv(65536):
                incoming.write(chunk)
                try:
                    while piece := tls.read(65536):
                        answer += piece
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    pass
            answers.append(bytes(answer))

    async def main() -> None:
        running = asyncio.get_running_loop()
        server = await running.create_server(
            lambda: HalfCloseTls(running, Echo(), server_context), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        await asyncio.wait_for(asyncio.to_thread(client, port), 30)
        server.close()

    LOOPS[loop](main())
    assert answers == [b"digest " + hashlib.sha256(DATA).hexdigest().encode()]
