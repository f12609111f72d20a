"""Server-side TLS that keeps answering after the client stopped writing.

The docker CLI ends a hijacked stream's input (`docker run` without `-i` at once,
`run -i`/`exec -i` when stdin ends) with `tls.Conn.CloseWrite`: a close_notify
alert, and then it waits for the output. asyncio's and uvloop's TLS transports treat
a close_notify (or a TCP FIN) as the end of the whole connection: they shut TLS down
and drop what is still written. Through a `tcp://` listener of `dockmoat serve`,
every attached `docker run` lost its output (exit code 0, nothing printed).

`HalfCloseTls` is asyncio's own TLS protocol (`asyncio.sslproto.SSLProtocol`, the
pure-Python one, which runs on any loop, uvloop's included) with that one thing
changed: the client's close_notify or FIN is passed on as `eof_received`, and the
connection shuts down only when the gateway closes it, after the answer. OpenSSL
writes after a received close_notify (only a sent one ends writing), as Go's
`crypto/tls` does on the daemon's side. It leans on that module's private methods
(`_start_shutdown`, `eof_received`'s states: CPython 3.11-3.13);
`tests/engine/gateway/test_tls_listener_streams.py` pins the behaviour.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import Any


def _retrieve(waiter: asyncio.Future[Any]) -> None:
    """The handshake's outcome is the client's business; nobody awaits the waiter."""
    if not waiter.cancelled():
        waiter.exception()


class HalfCloseTls(sslproto.SSLProtocol):
    """A TLS server connection whose client may stop writing before it is answered."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, app: asyncio.BaseProtocol, context: ssl.SSLContext
    ) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        waiter.add_done_callback(_retrieve)
        super().__init__(loop, app, context, waiter, server_side=True)

    def _app_open(self) -> bool:
        transport = getattr(self, "_app_transport", None)
        return transport is not None and not getattr(transport, "_closed", True)

    def _start_shutdown(self) -> None:
        # Called right after the client's close_notify was passed on (the app protocol
        # then is at EOF) and when the gateway closes the transport (then it is closed).
        at_eof = self._app_state == sslproto.AppProtocolState.STATE_EOF  # type: ignore[attr-defined]
        if self._app_open() and at_eof:
            return
        super()._start_shutdown()

    def eof_received(self) -> bool:  # type: ignore[override]  # the stub says None
        """The client's FIN: pass it on and keep writing, unless nothing is open yet."""
        wrapped = self._state == sslproto.SSLProtocolState.WRAPPED  # type: ignore[attr-defined]
        if wrapped and self._app_open():
            self._eof_received = True
            self._do_read()  # type: ignore[attr-defined]  # what came before the FIN
            self._call_eof_received()  # type: ignore[attr-defined]
            return True
        return bool(super().eof_received())
