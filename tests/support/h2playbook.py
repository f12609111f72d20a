"""Playbooks of the BuildKit HTTP/2 relay: a real h2 client and server on each side,
bytes in, commands out, no sockets and no engine (tests/unit/buildkit)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

from dockmoat.api.request import ClientIdentity
from dockmoat.buildkit import grpc
from dockmoat.buildkit.decide import BuildDecider, Builds
from dockmoat.buildkit.relay import (
    Close,
    Command,
    Decide,
    Relay,
    SendClient,
    SendUpstream,
)
from dockmoat.buildkit.services import Tunnel
from dockmoat.policy.engine import load_policy

CLIENT = ClientIdentity(listener="test", tenant="t1")
SOLVE = "/moby.buildkit.v1.Control/Solve"
INFO = "/moby.buildkit.v1.Control/Info"


def grpc_headers(path: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


@dataclass
class Peer:
    """One end: an h2 connection and what it received."""

    conn: h2.connection.H2Connection
    events: list[h2.events.Event] = field(default_factory=list)

    def take(self) -> bytes:
        return self.conn.data_to_send()

    def of(self, kind: type, stream_id: int | None = None) -> list[h2.events.Event]:
        return [
            e
            for e in self.events
            if isinstance(e, kind)
            and (stream_id is None or getattr(e, "stream_id", 0) == stream_id)
        ]


@dataclass
class Playbook:
    relay: Relay
    client: Peer
    daemon: Peer
    decider: BuildDecider
    commands: list[Command] = field(default_factory=list)

    def run(self, commands: list[Command]) -> None:
        """Deliver the relay's bytes, answer its decisions, until nothing moves."""
        queue = list(commands)
        while queue:
            command = queue.pop(0)
            self.commands.append(command)
            if isinstance(command, SendClient):
                self.client.events += self.client.conn.receive_data(command.data)
                self.flush_client()
            elif isinstance(command, SendUpstream):
                self.daemon.events += self.daemon.conn.receive_data(command.data)
                self.flush_daemon()
            elif isinstance(command, Decide):
                verdict = asyncio.run(
                    self.decider.decide(command.call, command.message, command.payload)
                )
                queue += self.relay.decided(command.token, verdict)

    def flush_client(self) -> None:
        data = self.client.take()
        if data:
            self.run(self.relay.receive_client(data))

    def flush_daemon(self) -> None:
        data = self.daemon.take()
        if data:
            self.run(self.relay.receive_upstream(data))

    @property
    def closed(self) -> bool:
        return any(isinstance(c, Close) for c in self.commands)


def playbook(
    tunnel: Tunnel = "grpc", profile: str = "baseline", decider: BuildDecider | None = None
) -> Playbook:
    decider = decider or BuildDecider(load_policy(profile, env={}), CLIENT, Builds(), "t1", None)
    relay = Relay(tunnel, decider)
    # On /grpc the client is the h2 client; on /session it serves (the daemon calls it).
    client = Peer(h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=tunnel == "grpc", header_encoding="utf-8")))  # fmt: skip
    daemon = Peer(h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=tunnel == "session", header_encoding="utf-8")))  # fmt: skip
    book = Playbook(relay, client, daemon, decider)
    client.conn.initiate_connection()
    daemon.conn.initiate_connection()
    book.run(relay.start())
    book.flush_client()
    book.flush_daemon()
    return book


def call(book: Playbook, path: str, *payloads: bytes, caller: Peer | None = None) -> int:
    """The caller opens a call and sends these messages, then half-closes."""
    peer = caller or book.client
    stream_id = peer.conn.get_next_available_stream_id()
    peer.conn.send_headers(stream_id, grpc_headers(path))
    for payload in payloads:
        peer.conn.send_data(stream_id, grpc.frame(payload))
    peer.conn.end_stream(stream_id)
    if peer is book.client:
        book.flush_client()
    else:
        book.flush_daemon()
    return stream_id


def answer(book: Playbook, stream_id: int, *payloads: bytes, callee: Peer | None = None) -> None:
    peer = callee or book.daemon
    peer.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
    for payload in payloads:
        peer.conn.send_data(stream_id, grpc.frame(payload))
    peer.conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
    if peer is book.daemon:
        book.flush_daemon()
    else:
        book.flush_client()


def status_of(peer: Peer, stream_id: int) -> tuple[str, str]:
    """(grpc-status, grpc-message) the peer received on a stream."""
    found: dict[str, str] = {}
    for event in peer.events:
        if getattr(event, "stream_id", None) != stream_id:
            continue
        headers = getattr(event, "headers", None) or []
        for key, value in headers:
            found[str(key)] = str(value)
    return found.get("grpc-status", ""), found.get("grpc-message", "")


def data_of(peer: Peer, stream_id: int) -> bytes:
    return b"".join(
        e.data or b""
        for e in peer.of(h2.events.DataReceived, stream_id)  # type: ignore[attr-defined]
    )
