"""`job close` and a job network that dockerd refuses to remove for a stale endpoint.

The soak suite (docs/soak.md, fix 6) left job networks after `job close`: dockerd
28.5 answered their removal 403 ("has active endpoints (name:... id:...)", naming the
endpoint of the day's container that `rm -f` had just removed) during the day and to
every try of the close. Two kinds of stale endpoint: one the network's inspect lists
(the one moby/moby#17217 and #23302 describe, removed by a force-disconnect by its
name), which close now removes; and the one the soak's dockerd 28.5 kept, which the
inspect does not list and a force-disconnect by name answers 404: close keeps that
network and says so, with dockerd's answers (a dockerd restart clears it). Neither
state could be made on demand on a real engine (a killed and restarted dockerd
cleans such endpoints up), so the engine here is a small model of dockerd's answers
as the soak saw them; a live container that is not the job's is checked against a
real engine in tests/engine/tenancy/test_close_reports_what_stays.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dockmoat.tenancy import cleanup
from dockmoat.tenancy.model import TENANT_LABEL, Tenant
from dockmoat.tenancy.store import OwnershipStore


class Dockerd:
    """Containers and networks as dockerd answers for them, endpoints included."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []

    def container(self, cid: str, name: str, owner: str | None) -> None:
        labels = {TENANT_LABEL: owner} if owner else {}
        self.containers[cid] = {"Id": cid, "Name": f"/{name}", "Config": {"Labels": labels}}

    def network(self, nid: str, name: str, owner: str) -> None:
        self.networks[nid] = {
            "Id": nid,
            "Name": name,
            "Labels": {TENANT_LABEL: owner},
            "Containers": {},
        }

    def endpoint(self, nid: str, key: str, name: str, *, listed: bool = True) -> None:
        """An endpoint; one not `listed` is in the network's endpoints (what its
        removal checks) but missing from its inspect and from a force-disconnect by
        name, as the soak's were on dockerd 28.5."""
        where = "Containers" if listed else "Hidden"
        self.networks[nid].setdefault(where, {})[key] = {"Name": name, "EndpointID": f"e{key}"}

    def _find(self, ref: str) -> dict[str, Any] | None:
        for c in self.containers.values():
            if c["Id"] == ref or c["Name"] == f"/{ref}":
                return c
        return None

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        status, answer = self._answer(method, path, query, body)
        return status, json.loads(json.dumps(answer))  # a fresh copy, as over the wire

    def _answer(
        self, method: str, path: str, query: Mapping[str, Any] | None, body: Any
    ) -> tuple[int, Any]:
        self.calls.append((method, path, body))
        parts = path.strip("/").split("/")
        wanted = None
        if query and "filters" in query:
            wanted = query["filters"]["label"][0].partition("=")[2]
        if method == "GET" and path == "/containers/json":
            return 200, [
                {"Id": c["Id"], "Names": [c["Name"]]}
                for c in self.containers.values()
                if c["Config"]["Labels"].get(TENANT_LABEL) == wanted
            ]
        if method == "GET" and path == "/networks":
            return 200, [
                n for n in self.networks.values() if n["Labels"].get(TENANT_LABEL) == wanted
            ]
        if method == "GET" and path == "/volumes":
            return 200, {"Volumes": []}
        if method == "GET" and path == "/images/json":
            return 200, []
        if parts[0] == "containers" and len(parts) >= 2:
            found = self._find(parts[1])
            if found is None:
                return 404, {"message": f"No such container: {parts[1]}"}
            if method == "GET":
                return 200, found
            if method == "DELETE":
                del self.containers[found["Id"]]
                for n in self.networks.values():
                    n["Containers"].pop(found["Id"], None)
                return 204, None
        if parts[0] == "networks" and len(parts) >= 2:
            net = self.networks.get(parts[1])
            if net is None:
                return 404, {"message": f"network {parts[1]} not found"}
            if method == "GET" and len(parts) == 2:
                return 200, {k: v for k, v in net.items() if k != "Hidden"}
            every = {**net["Containers"], **net.get("Hidden", {})}
            if method == "DELETE":
                if every:
                    names = " ".join(
                        f'(name:"{ep["Name"]}" id:"{ep["EndpointID"][:12]}")'
                        for ep in every.values()
                    )
                    return 403, {
                        "message": f"error while removing network: network {net['Name']} "
                        f"has active endpoints {names}"
                    }
                del self.networks[parts[1]]
                return 204, None
            if method == "POST" and parts[2:] == ["disconnect"]:
                ref = str(body["Container"])
                found = self._find(ref)
                if found is not None:  # a live container: its own endpoint
                    gone = net["Containers"].pop(found["Id"], None)
                    return (200, None) if gone else (403, {"message": "not connected"})
                if not body.get("Force"):
                    return 404, {"message": f"No such container: {ref}"}
                # ForceEndpointDelete: by its name, among the endpoints it can read
                # (not a hidden one: dockerd 28.5 answered 404 for those in the soak).
                for key, ep in list(net["Containers"].items()):
                    if ep["Name"] == ref:
                        del net["Containers"][key]
                        return 200, None
                return 404, {"message": f"endpoint {ref} not found"}
        raise AssertionError(f"unexpected call {method} {path}")


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleanup, "_NETWORK_WAIT", 0.0)


def _close(engine: Dockerd, store: OwnershipStore, tenant: Tenant) -> cleanup.Removed:
    return asyncio.run(cleanup.clean_up(store, engine, tenant))


def test_a_stale_endpoint_of_a_removed_container_does_not_keep_the_job_network(
    tmp_path: Path,
) -> None:
    tenant = Tenant.job("ci7")
    ns = tenant.namespace
    engine = Dockerd()
    net = ns.engine_name("loadnet2")
    engine.network("n1", net, tenant.name)
    # The container is gone, its endpoint stays (dockerd shows it under the old id).
    engine.endpoint("n1", "c0ffee" * 10 + "abcd", ns.engine_name("loadc2"))
    store = OwnershipStore(tmp_path / "s.db")
    store.add(tenant.name, "network", net)

    removed = _close(engine, store, tenant)

    assert engine.networks == {}, removed.as_dict()
    assert removed.networks == ["loadnet2"] and removed.kept == []
    assert (
        "POST",
        "/networks/n1/disconnect",
        {"Container": ns.engine_name("loadc2"), "Force": True},
    ) in engine.calls


def test_an_endpoint_dockerd_cannot_disconnect_is_named_with_its_answers(
    tmp_path: Path,
) -> None:
    """What the soak's private dockerd 28.5 did (reruns at 60 and 80 jobs): the
    refusal named the removed container's endpoint, the network's inspect listed
    none, and a force-disconnect by that name answered 404 "endpoint ... not found".
    Nothing the API offers removes it (a dockerd restart does): close keeps the
    network and says all of it."""
    tenant = Tenant.job("ci6")
    ns = tenant.namespace
    engine = Dockerd()
    net = ns.engine_name("loadnet2")
    engine.network("n0", net, tenant.name)
    engine.endpoint("n0", "a1581ea2e84f" * 5 + "abcd", ns.engine_name("loadc2"), listed=False)
    store = OwnershipStore(tmp_path / "s.db")
    store.add(tenant.name, "network", net)

    removed = _close(engine, store, tenant)

    assert "n0" in engine.networks
    (kept,) = removed.kept
    assert kept.startswith("network loadnet2 (the engine answered 403: "), kept
    assert f'has active endpoints (name:"{ns.engine_name("loadc2")}"' in kept, kept
    assert "(0 endpoints listed; force-disconnecting " in kept, kept
    assert "404 endpoint " in kept, kept
    # It was tried by name, the one way dockerd finds a stale endpoint.
    assert (
        "POST",
        "/networks/n0/disconnect",
        {"Container": ns.engine_name("loadc2"), "Force": True},
    ) in engine.calls


def test_a_live_container_that_is_not_the_job_s_is_left_alone(tmp_path: Path) -> None:
    tenant = Tenant.job("ci8")
    ns = tenant.namespace
    engine = Dockerd()
    net = ns.engine_name("shared")
    engine.network("n2", net, tenant.name)
    # The host's live container on the job's network, and a stale endpoint whose
    # name a live container of another job took since: neither is the job's.
    engine.container("h" * 64, "host-holder", None)
    engine.endpoint("n2", "h" * 64, "host-holder")
    engine.container("o" * 64, "other--c1", "other")
    engine.endpoint("n2", "ep-" + "d" * 64, "other--c1")
    store = OwnershipStore(tmp_path / "s.db")
    store.add(tenant.name, "network", net)

    removed = _close(engine, store, tenant)

    assert set(engine.networks["n2"]["Containers"]) == {"h" * 64, "ep-" + "d" * 64}
    assert set(engine.containers) == {"h" * 64, "o" * 64}
    assert not [c for c in engine.calls if c[1].endswith("/disconnect")]
    (kept,) = removed.kept
    assert kept.startswith("network shared (the engine answered 403"), kept
    assert "host-holder" in kept and "other--c1" in kept
