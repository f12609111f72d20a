"""The fast lane's remembered decisions, with the real daemon.

One keep-alive connection sends the same bytes again and again: the decision is
made once and reused, and made afresh when the policy or the client's stage
state changes, or when the read was not exactly one request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest
from gwserve import job_listener

from dockmoat.api.request import ApiRequest, ClientIdentity, Route
from dockmoat.gateway import fastlane
from dockmoat.gateway.server import Gateway
from dockmoat.gateway.stages import Context, RouteFacts, Stage
from dockmoat.policy.decision import Allow, Decision, Deny
from support.serve_settings import settings

PING = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"


class CountingPolicy:
    """Allows all but `denied` routes; counts its evaluations."""

    def __init__(self, denied: frozenset[str] = frozenset()) -> None:
        self.denied = denied
        self.evaluated = 0

    def body_needed(self, route: Route) -> bool:
        return False

    def evaluate(self, request: ApiRequest) -> Decision:
        self.evaluated += 1
        if request.route.name in self.denied:
            return Deny("test.denied", "denied by the test policy")
        return Allow(rule="test.allow")


class SwitchStage(Stage):
    """Decides inline; denies everything once `state` is "closed"."""

    def __init__(self) -> None:
        self.state = "open"
        self.calls = 0

    async def on_request(self, ctx: Context, request: ApiRequest) -> Decision:
        self.calls += 1
        if self.state == "closed":
            return Deny("test.closed", "the job is closed")
        return Allow(rule="test.open")

    def facts(self, request: ApiRequest) -> RouteFacts:
        return RouteFacts(inline=True)  # on_request never awaits

    def decisions_key(self, client: ClientIdentity) -> Hashable:
        return self.state


class Client:
    """One keep-alive connection; reads exactly one answer per request."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, *pieces: bytes) -> None:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.1)  # a separate read on the gateway's side
            self.sock.sendall(piece)

    def answer(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, rest = self.buffer.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return int(head.split(b" ")[1]), rest[:length]

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        assert data, "the gateway closed the connection"
        return data


def test_same_bytes_are_decided_once_until_policy_or_state_changes(
    tmp_path: Path, docker_host: str
) -> None:
    main_sock, job_sock, audit = tmp_path / "main.sock", tmp_path / "job.sock", tmp_path / "a.log"
    served = settings(listen=[f"unix://{main_sock}"], upstream=docker_host,
                      profile="permissive", audit_log=str(audit))  # fmt: skip
    allowing, denying = CountingPolicy(), CountingPolicy(frozenset({"system.ping"}))
    stage = SwitchStage()
    seen: list[tuple[str, int, bytes, int, int]] = []

    async def scenario() -> None:
        gateway = Gateway(served, allowing)
        await gateway.start()
        try:
            await gateway.add_listener(job_listener(job_sock), stage=stage)
            client = await asyncio.to_thread(Client, job_sock)

            async def step(label: str, *pieces: bytes) -> None:
                await asyncio.to_thread(client.send, *pieces)
                status, body = await asyncio.to_thread(client.answer)
                seen.append((label, status, body, allowing.evaluated, stage.calls))

            # The connection's first request may reach its task before the fast lane
            # opens; from the second on, the same read is decided by the fast lane.
            for _ in range(4):
                await step("repeat", PING)
            await step("split", PING[:10], PING[10:])  # two reads: decided, not remembered
            await step("split", PING[:10], PING[10:])
            await step("other bytes", PING.replace(b"docker", b"dockerd"))
            gateway.set_policy(denying)
            await step("new policy", PING)
            gateway.set_policy(allowing)
            await step("policy back", PING)
            await step("policy back", PING)
            stage.state = "closed"
            await step("closed", PING)
            await step("closed", PING)
            client.sock.close()
        finally:
            await gateway.drain()

    asyncio.run(scenario())
    statuses = [(label, status, body) for label, status, body, _, _ in seen]
    assert statuses[:7] == [("repeat", 200, b"OK")] * 4 + [
        ("split", 200, b"OK"), ("split", 200, b"OK"), ("other bytes", 200, b"OK"),
    ]  # fmt: skip
    counts = [(ev, calls) for *_, ev, calls in seen]
    first = counts[1]
    assert first[0] == first[1] <= 2
    assert counts[2:4] == [first, first]  # remembered: neither the stage nor the policy ran
    # Each split request (two reads) and the other bytes were decided afresh.
    assert counts[4:7] == [(first[0] + n, first[1] + n) for n in (1, 2, 3)]
    label, status, body, _, _ = seen[7]
    assert (label, status) == ("new policy", 403) and b"denied by the test policy" in body
    assert denying.evaluated == 1
    # The old policy's decision was not reused when it came back: decided once again.
    assert [(s, ev) for _, s, _, ev, _ in seen[8:10]] == [(200, first[0] + 4)] * 2
    # The stage's state changed: denied each time, never a remembered allow.
    assert [(s, calls) for _, s, _, _, calls in seen[10:]] == [
        (403, first[1] + 6), (403, first[1] + 7),
    ]  # fmt: skip
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    job_entries = [e for e in entries if e["listener"] == f"unix://{job_sock}"]
    assert len(job_entries) == len(seen)  # every request audited, remembered or not
    assert [e["status"] for e in job_entries] == [status for _, status, *_ in seen]
    assert {e["route"] for e in job_entries} == {"system.ping"}


def test_a_read_that_starts_inside_a_request_is_not_remembered(
    tmp_path: Path, docker_host: str
) -> None:
    """`GET` split as `...G` + `ET /_ping ...`: the second read is a ping there, and a
    400 when sent on its own from a boundary, never a remembered ping."""
    sock_path = tmp_path / "gw.sock"
    served = settings(listen=[f"unix://{sock_path}"], upstream=docker_host, profile="permissive")
    answers: list[int] = []

    async def scenario() -> None:
        gateway = Gateway(served, CountingPolicy())
        await gateway.start()
        try:
            client = await asyncio.to_thread(Client, sock_path)
            await asyncio.to_thread(client.send, PING + b"G")
            answers.append((await asyncio.to_thread(client.answer))[0])
            for _ in range(2):
                await asyncio.to_thread(client.send, PING[1:])
                answers.append((await asyncio.to_thread(client.answer))[0])
            client.sock.close()
        finally:
            await gateway.drain()

    asyncio.run(scenario())
    assert answers == [200, 200, 400]


def test_a_fast_lane_bug_before_sending_loses_no_request_and_no_connection(
    tmp_path: Path, docker_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's construction failing (a bug, injected here) on a fresh and on a
    remembered request: each is still answered, by the connection's task, audited once
    with its own bytes, and the daemon connection taken for it goes back to the pool."""
    sock_path, audit = tmp_path / "gw.sock", tmp_path / "a.log"
    served = settings(listen=[f"unix://{sock_path}"], upstream=docker_host,
                      profile="permissive", audit_log=str(audit))  # fmt: skip
    real = fastlane.FastRelay
    broken = {"left": 0, "raised": 0}

    def relay(*args: Any) -> Any:
        if broken["left"]:
            broken["left"] -= 1
            broken["raised"] += 1
            raise RuntimeError("injected")
        return real(*args)

    monkeypatch.setattr(fastlane, "FastRelay", relay)
    answers: list[tuple[int, bytes]] = []
    idle: list[int] = []

    async def scenario() -> None:
        gateway = Gateway(served, CountingPolicy())
        await gateway.start()
        try:
            client = await asyncio.to_thread(Client, sock_path)
            for fail in (0, 0, 1, 0, 2):  # fresh, remembered, then failures on both paths
                broken["left"] = fail
                await asyncio.to_thread(client.send, PING)
                answers.append(await asyncio.to_thread(client.answer))
                idle.append(len(gateway.pool._idle))
            client.sock.close()
        finally:
            await gateway.drain()

    asyncio.run(scenario())
    assert answers == [(200, b"OK")] * 5
    assert broken["raised"] == 3
    assert max(idle) == 1  # one daemon connection, always back in the pool
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["status"], e["bytes_in"]) for e in entries] == [(200, len(PING))] * 5


def test_a_connection_whose_requests_never_repeat_remembers_sparsely(
    tmp_path: Path, docker_host: str
) -> None:
    """After REMEMBER_UNREPEATED requests that never came again, a request is remembered
    only at every REMEMBER_SPARSELY-th; once one is sent again, every one is, as before."""
    sock_path = tmp_path / "gw.sock"
    served = settings(listen=[f"unix://{sock_path}"], upstream=docker_host,
                      profile="permissive")  # fmt: skip
    policy = CountingPolicy()
    decided: list[int] = []  # the policy's evaluations for each request

    def ping(n: int) -> bytes:
        # A header makes each request's bytes differ (a query parameter dockmoat does
        # not model would be refused: api.unmodeled).
        return PING.replace(b"Host: docker\r\n", f"Host: docker\r\nX-N: {n}\r\n".encode())

    async def scenario() -> None:
        gateway = Gateway(served, policy)
        await gateway.start()
        try:
            client = await asyncio.to_thread(Client, sock_path)

            async def send(request: bytes) -> None:
                before = policy.evaluated
                await asyncio.to_thread(client.send, request)
                assert (await asyncio.to_thread(client.answer)) == (200, b"OK")
                decided.append(policy.evaluated - before)

            # The first may reach the task; the third is a remembered one sent again,
            # which starts the count of unrepeated requests from 0.
            for _ in range(3):
                await send(ping(0))
            taken = 0
            for n in range(fastlane.REMEMBER_UNREPEATED):
                await send(ping(100 + n))
                taken += 1
            await send(ping(1000))  # beyond the budget: not remembered...
            await send(ping(1000))  # ...so decided afresh
            taken += 2
            while (taken + 1) % fastlane.REMEMBER_SPARSELY:
                await send(ping(2000 + taken))
                taken += 1
            await send(ping(3000))  # the one in REMEMBER_SPARSELY that is remembered
            await send(ping(3000))
            await send(ping(4000))  # and from here on every one again
            await send(ping(4000))
            client.sock.close()
        finally:
            await gateway.drain()

    asyncio.run(scenario())
    assert decided[2] == 0
    assert decided[3 + fastlane.REMEMBER_UNREPEATED : 5 + fastlane.REMEMBER_UNREPEATED] == [1, 1]
    assert decided[-4:] == [1, 0, 1, 0]
