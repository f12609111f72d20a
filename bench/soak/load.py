"""The load: every job runs a small CI day in a loop; idle keep-alive connections; streams."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from bench.soak.client import Broken, Conn, Stats
from bench.soak.harness import BUSYBOX, Serve

API = "/v1.47"


@dataclass
class Load:
    serve: Serve
    jobs: list[str]
    idle: int
    streams: int
    tag: str = "d"
    stats: dict[str, Stats] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    days: int = 0
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)
    stream_ends: int = 0

    def __post_init__(self) -> None:
        for job in self.jobs:
            self.stats[job] = Stats()

    def total(self) -> Stats:
        total = Stats()
        for s in self.stats.values():
            total.merge(s)
        return total

    async def run(self, duration: float, during: asyncio.Future[None] | None = None) -> None:
        """Run for `duration` seconds (and until `during`, a fault, is done)."""
        stop = time.monotonic() + duration
        idle = await self._open_idle()
        tasks = [asyncio.create_task(self._day_loop(job, stop)) for job in self.jobs]
        streams = [
            asyncio.create_task(self._stream(self.jobs[i % len(self.jobs)], stop))
            for i in range(self.streams)
        ]
        sampler = asyncio.create_task(self._sample(stop))
        await asyncio.gather(*tasks, *streams, sampler)
        if during is not None:
            await during
        for conn in idle:
            await conn.close()

    async def _open_idle(self) -> list[Conn]:
        conns = []
        for i in range(self.idle):
            job = self.jobs[i % len(self.jobs)]
            conn = Conn(self.serve.job_socket(job), self.stats[job], timeout=30)
            try:
                await conn.request("GET", "/_ping", route="idle ping")
            except Broken as e:
                self.errors.append(f"idle: {e}")
                continue
            conns.append(conn)
        return conns

    async def _sample(self, stop: float) -> None:
        while time.monotonic() < stop:
            try:
                rss, fds, cpu = self.serve.sample()
                self.samples.append((time.monotonic(), rss, fds, cpu))
            except (OSError, AssertionError):
                pass  # the gateway is down (a fault)
            await asyncio.sleep(1.0)

    async def _stream(self, job: str, stop: float) -> None:
        """An events stream held open until the end; reopened when it ends (a fault)."""
        stats = self.stats[job]
        while time.monotonic() < stop:
            conn = Conn(
                self.serve.job_socket(job), stats, timeout=max(1.0, stop - time.monotonic())
            )
            try:
                await conn.request("GET", f"{API}/events", route="events (stream)")
            except Broken:
                if time.monotonic() >= stop - 1:
                    stats.broken -= 1  # our own end of the stream, not a break
            self.stream_ends += 1
            await conn.close()
            await asyncio.sleep(0.5)

    async def _day_loop(self, job: str, stop: float) -> None:
        stats = self.stats[job]
        conn = Conn(self.serve.job_socket(job), stats)
        n = 0
        # Days a fault broke, whose objects are removed once the daemon answers again
        # (as a CI runner's clean-up step would): left, their networks used up the
        # daemon's address pools in a 100-job run.
        broken: list[int] = []
        while time.monotonic() < stop:
            n += 1
            try:
                await self._sweep(conn, broken)
                await self._day(conn, job, n, stats)
                self.days += 1
            except Broken as e:
                self.errors.append(f"{job}: {e}")
                broken.append(n)
                await asyncio.sleep(0.5)
            except (AssertionError, KeyError, TypeError) as e:
                self.errors.append(f"{job}: unexpected answer {e!r}")
                broken.append(n)
                await asyncio.sleep(0.5)
        with contextlib.suppress(Broken):
            await self._sweep(conn, broken)
        await conn.close()

    async def _sweep(self, conn: Conn, broken: list[int]) -> None:
        """Remove what broken days made (container, network, volume, each by name);
        a day stays on the list until each answer is 2xx or 404."""
        for n in list(broken[:5]):
            done = True
            for method, path, route in (
                ("DELETE", f"{API}/containers/{self.tag}c{n}?force=1", "sweep container"),
                ("DELETE", f"{API}/networks/{self.tag}net{n}", "sweep network"),
                ("DELETE", f"{API}/volumes/{self.tag}vol{n}", "sweep volume"),
            ):
                r = await conn.request(method, path, route=route)
                done = done and (r.status < 300 or r.status == 404)
            if done:
                broken.remove(n)

    async def _day(self, conn: Conn, job: str, n: int, stats: Stats) -> None:
        """create, start, logs -f, exec, network, volume, rm: one CI step."""
        net = f"{self.tag}net{n}"
        vol = f"{self.tag}vol{n}"
        r = await conn.request("POST", f"{API}/networks/create", {"Name": net}, "networks.create")
        if r.status == 201:
            stats.created["network"].add(net)
        r = await conn.request("POST", f"{API}/volumes/create", {"Name": vol}, "volumes.create")
        if r.status == 201:
            stats.created["volume"].add(vol)
        body = {
            "Image": BUSYBOX,
            "Cmd": ["sh", "-c", "echo hello; sleep 1; echo bye"],
            "HostConfig": {"NetworkMode": net, "Binds": [f"{vol}:/data"]},
        }
        r = await conn.request(
            "POST", f"{API}/containers/create?name={self.tag}c{n}", body, "containers.create"
        )
        if r.status != 201:
            await self._cleanup(conn, net, vol)
            return
        cid = str(r.json()["Id"])  # type: ignore[index]
        stats.created["container"].add(cid)
        await conn.request("POST", f"{API}/containers/{cid}/start", None, "containers.start")
        r = await conn.request(
            "POST",
            f"{API}/containers/{cid}/exec",
            {"Cmd": ["echo", "exec"], "AttachStdout": True},
            "containers.exec",
        )
        if r.status == 201:
            eid = str(r.json()["Id"])  # type: ignore[index]
            econn = Conn(conn.sock, stats)
            await econn.request(
                "POST",
                f"{API}/exec/{eid}/start",
                {"Detach": False},
                "exec.start",
                raw_stream=True,
            )
        logs = Conn(conn.sock, stats)
        await logs.request(
            "GET",
            f"{API}/containers/{cid}/logs?follow=1&stdout=1&stderr=1",
            route="containers.logs -f",
        )
        await logs.close()
        await conn.request("GET", f"{API}/containers/json?all=1", route="containers.list")
        await conn.request("DELETE", f"{API}/containers/{cid}?force=1", route="containers.delete")
        await self._cleanup(conn, net, vol)

    async def _cleanup(self, conn: Conn, net: str, vol: str) -> None:
        await conn.request("DELETE", f"{API}/networks/{net}", route="networks.delete")
        await conn.request("DELETE", f"{API}/volumes/{vol}", route="volumes.delete")
