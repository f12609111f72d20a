"""The embedding API and the stage extension point, with the real daemon.

A real (small) stage object filters the container list to one label and drops
events of other containers; a second listener is added and removed at run time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from gwserve import job_listener, raw_get

from dockmoat.api.request import ApiRequest
from dockmoat.gateway.server import Gateway
from dockmoat.gateway.stages import Context, LineKind, PermissivePolicy, RouteFacts, Stage
from dockmoat.policy.decision import Allow, Decision, Deny
from support.serve_settings import settings


class LabelStage(Stage):
    """Shows a tenant only containers labelled with its name; looks up through the gateway."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.looked_up: list[int] = []

    async def on_request(self, ctx: Context, request: ApiRequest) -> Decision:
        if request.route.name == "containers.inspect":
            status, _headers, body = await ctx.upstream.request(
                "GET", f"/containers/{request.route.params['name']}/json"
            )
            self.looked_up.append(status)
            labels = json.loads(body).get("Config", {}).get("Labels") or {} if status == 200 else {}
            if labels.get("dmtest") != self.label:
                return Deny("test.not-yours", "No such container", 404)
        return Allow()

    def facts(self, request: ApiRequest) -> RouteFacts:
        name = request.route.name
        if name == "containers.list":
            return RouteFacts(answer="json")
        if name == "system.events":
            return RouteFacts(answer="events")
        return RouteFacts(inline=name != "containers.inspect")

    def on_json_response(self, ctx: Context, request: ApiRequest, status: int, answer: Any) -> Any:
        if status >= 400:
            return answer
        return [c for c in answer if (c.get("Labels") or {}).get("dmtest") == self.label]

    def on_line(self, ctx: Context, request: ApiRequest, kind: LineKind, line: Any) -> Any:
        attributes = line.get("Actor", {}).get("Attributes", {})
        return line if attributes.get("dmtest") == self.label else None


def test_stage_filters_and_runtime_listeners(
    tmp_path: Path, docker_host: str, docker_client: docker.DockerClient, busybox_image: str,
    unique_name: Callable[[str], str],
) -> None:  # fmt: skip
    mine, theirs = unique_name("mine"), unique_name("theirs")
    since = int(time.time()) - 1
    made = [
        docker_client.containers.create(busybox_image, "true", name=mine, labels={"dmtest": mine}),
        docker_client.containers.create(busybox_image, "true", name=theirs,
                                        labels={"dmtest": theirs}),
    ]  # fmt: skip
    until = int(time.time()) + 1
    time.sleep(1.2)
    main_sock, job_sock = tmp_path / "main.sock", tmp_path / "job.sock"
    served = settings(listen=[f"unix://{main_sock}"], upstream=docker_host, profile="permissive")
    stage = LabelStage(mine)
    results: dict[str, bytes] = {}

    async def scenario() -> None:
        gateway = Gateway(served, PermissivePolicy())
        await gateway.start()
        try:
            job = job_listener(job_sock)
            await gateway.add_listener(job, stage=stage)

            def ask(sock: Path, target: str) -> bytes:
                return raw_get(sock, f"GET {target} HTTP/1.0\r\n\r\n".encode())

            for key, sock, target in (
                ("job-list", job_sock, "/v1.41/containers/json?all=1"),
                ("main-list", main_sock, "/v1.41/containers/json?all=1"),
                ("job-mine", job_sock, f"/v1.41/containers/{mine}/json"),
                ("job-theirs", job_sock, f"/v1.41/containers/{theirs}/json"),
                ("job-events", job_sock, f"/v1.41/events?since={since}&until={until}"),
            ):
                results[key] = await asyncio.to_thread(ask, sock, target)
            await gateway.remove_listener(job.endpoint.url)
            assert not job_sock.exists()
        finally:
            await gateway.drain()

    try:
        asyncio.run(scenario())
    finally:
        for container in made:
            container.remove(force=True)

    def body(key: str) -> bytes:
        return results[key].split(b"\r\n\r\n", 1)[1]

    job_names = {n for c in json.loads(body("job-list")) for n in c["Names"]}
    assert job_names == {f"/{mine}"}
    main_names = {n for c in json.loads(body("main-list")) for n in c["Names"]}
    assert {f"/{mine}", f"/{theirs}"} <= main_names
    assert results["job-mine"].split(b" ")[1] == b"200"
    assert results["job-theirs"].split(b" ")[1] == b"404"
    assert stage.looked_up == [200, 200]
    events = [json.loads(line) for line in body("job-events").splitlines() if line.strip()]
    assert events, results["job-events"][:300]
    assert all(e["Actor"]["Attributes"].get("dmtest") == mine for e in events)


@pytest.mark.parametrize("cli", ["/usr/local/bin/docker"])
def test_websocket_attach_switches(
    permissive: Any, cli: str, docker_client: docker.DockerClient, busybox_image: str,
    unique_name: Callable[[str], str],
) -> None:  # fmt: skip
    name = unique_name("ws")
    container = docker_client.containers.run(
        busybox_image, ["sh", "-c", "sleep 1; echo from-ws; sleep 2"], name=name, detach=True
    )
    try:
        reply = raw_get(
            permissive.socket,
            (
                f"GET /v1.41/containers/{name}/attach/ws?stream=1&stdout=1 HTTP/1.1\r\n"
                "Host: docker\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Origin: http://docker\r\n\r\n"
            ).encode(),
            timeout=8,
        )
        assert reply.startswith(b"HTTP/1.1 101")
        assert b"from-ws" in reply
    finally:
        container.remove(force=True)
