"""A tenant's filtered events stream ends when its client leaves, not at the next event
the tenant is shown (found by the soak suite: an abandoned `docker events` on a job
socket held its daemon connection, and its request had no audit entry, for as long as
only other tenants' events came)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from dockmoat.api.request import ApiRequest
from dockmoat.gateway.config import Endpoint, ListenerSettings
from dockmoat.gateway.server import Gateway
from dockmoat.gateway.stages import (
    UNTOUCHED,
    Context,
    Json,
    LineKind,
    PermissivePolicy,
    RouteFacts,
    Stage,
)
from support.serve_settings import settings

OTHER_TENANTS_EVENT = b'{"Type":"container","Action":"start","Actor":{"Attributes":{}}}\n'


class DropsEveryEvent(Stage):
    """A stage that shows its tenant none of the daemon's events (all are another's)."""

    def facts(self, request: ApiRequest) -> RouteFacts:
        if request.route.name == "system.events":
            return RouteFacts(answer="events")
        return UNTOUCHED

    def on_line(self, ctx: Context, request: ApiRequest, kind: LineKind, line: Json) -> Json:
        return None


async def fake_daemon(sock: Path, events_closed: asyncio.Event) -> asyncio.Server:
    """Answers /events with another tenant's event every 20 ms until its client closes;
    anything else with 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b" /v1.41/events" not in head.split(b"\r\n", 1)[0]:
                body = json.dumps({"message": "page not found"}).encode()
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
            closed = asyncio.ensure_future(reader.read())  # b"" when the gateway closes
            while not closed.done():
                writer.write(b"%x\r\n%s\r\n" % (len(OTHER_TENANTS_EVENT), OTHER_TENANTS_EVENT))
                await writer.drain()
                await asyncio.wait((closed,), timeout=0.02)
            events_closed.set()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            events_closed.set()
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, path=str(sock))


def test_an_abandoned_filtered_events_stream_ends_and_is_audited(tmp_path: Path) -> None:
    daemon_sock, main_sock, job_sock = (tmp_path / n for n in ("d.sock", "m.sock", "j.sock"))
    audit = tmp_path / "audit.log"

    async def scenario() -> None:
        events_closed = asyncio.Event()
        daemon = await fake_daemon(daemon_sock, events_closed)
        served = settings(
            listen=[f"unix://{main_sock}"], upstream=f"unix://{daemon_sock}",
            profile="permissive", audit_log=str(audit),
        )  # fmt: skip
        gateway = Gateway(served, PermissivePolicy())
        await gateway.start()
        try:
            job = ListenerSettings(
                endpoint=Endpoint(url=f"unix://{job_sock}", kind="unix", path=job_sock),
                tenant="job",
            )
            await gateway.add_listener(job, stage=DropsEveryEvent())
            reader, writer = await asyncio.open_unix_connection(str(job_sock))
            writer.write(b"GET /v1.41/events HTTP/1.1\r\nHost: d\r\n\r\n")
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.2)  # events flow, all dropped for this tenant
            assert not events_closed.is_set()
            writer.close()  # `docker events` ended with ^C
            await asyncio.wait_for(events_closed.wait(), 3)
        finally:
            await gateway.drain()
            daemon.close()

    asyncio.run(scenario())
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["tenant"], e["route"], e["status"]) for e in entries if e["tenant"] == "job"] == [
        ("job", "system.events", 200)
    ]
