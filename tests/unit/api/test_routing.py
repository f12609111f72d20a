"""Routing as dockerd (gorilla/mux) routes: table, odd forms, and properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from dockmoat.api.routing import classify, split_target
from dockmoat.errors import ProtocolError

SPECS = Path(__file__).parents[4] / "shared" / "reference" / "docker-engine-api"
RESOURCES = {
    "containers", "exec", "images", "build", "volumes", "networks", "system",
    "distribution", "plugins", "swarm", "nodes", "services", "tasks", "secrets",
    "configs", "session", "grpc", "unknown",
}  # fmt: skip


def _spec_endpoints() -> list[tuple[str, str, str]]:
    out = []
    for name in ("v1.41.yaml", "latest.yaml"):
        spec = YAML(typ="safe").load((SPECS / name).read_text())
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                if method in {"get", "post", "put", "delete", "head"}:
                    out.append((method.upper(), path, op.get("operationId", "")))
    return out


@pytest.mark.skipif(not SPECS.exists(), reason="specs not present")
def test_every_spec_endpoint_is_classified() -> None:
    for method, path, op in _spec_endpoints():
        concrete = path.replace("{id}", "abc123").replace("{name}", "img")
        _routed, version, route = classify(method, "/v1.41" + concrete)
        assert route.resource != "unknown", (method, path, op)
        assert route.resource in RESOURCES
        assert version == "1.41"


@pytest.mark.parametrize(
    ("method", "target", "name", "params"),
    [
        ("GET", "/_ping", "system.ping", {}),
        ("HEAD", "/_ping", "system.ping", {}),
        ("POST", "/v1.41/containers/create?name=x", "containers.create", {}),
        ("POST", "/containers/abc/start", "containers.start", {"name": "abc"}),
        ("POST", "/v1.41/containers/abc/exec", "containers.exec", {"name": "abc"}),
        ("POST", "/exec/e1/start", "exec.start", {"name": "e1"}),
        ("GET", "/exec/e1/json", "exec.inspect", {"id": "e1"}),
        ("GET", "/containers/abc/archive?path=/x", "containers.archive_get", {"name": "abc"}),
        ("PUT", "/containers/abc/archive?path=/x", "containers.archive_put", {"name": "abc"}),
        ("HEAD", "/containers/abc/archive", "containers.archive_info", {"name": "abc"}),
        ("GET", "/containers/abc/attach/ws", "containers.attach_ws", {"name": "abc"}),
        ("POST", "/containers/abc/attach", "containers.attach", {"name": "abc"}),
        ("POST", "/build", "build.build", {}),
        ("POST", "/build/prune", "build.prune", {}),
        ("POST", "/images/create?fromImage=a", "images.create", {}),
        ("POST", "/images/load", "images.load", {}),
        ("GET", "/images/get?names=a", "images.get_all", {}),
        ("GET", "/images/reg.io:5000/a/b:1/json", "images.inspect", {"name": "reg.io:5000/a/b:1"}),
        ("GET", "/images/a%2Fb/json", "images.inspect", {"name": "a/b"}),
        ("DELETE", "/images/a/b/c", "images.delete", {"name": "a/b/c"}),
        ("POST", "/images/a/b/tag", "images.tag", {"name": "a/b"}),
        ("GET", "/images/json", "images.list", {}),
        ("GET", "/images/json/json", "images.inspect", {"name": "json"}),
        ("POST", "/volumes/create", "volumes.create", {}),
        ("GET", "/volumes/", "volumes.inspect", {"name": ""}),
        ("POST", "/networks/n1/connect", "networks.connect", {"id": "n1"}),
        ("GET", "/networks/", "networks.list", {}),
        ("GET", "/networks/a/b", "networks.inspect", {"id": "a/b"}),
        ("POST", "/session", "session.session", {}),
        ("POST", "/grpc", "grpc.grpc", {}),
        ("GET", "/services/s1", "services.inspect", {"id": "s1"}),
        ("GET", "/services/a/b", "unknown.unknown", {}),
        ("DELETE", "/containers/a/checkpoints/b", "containers.checkpoint_delete",
         {"name": "a", "checkpoint": "b"}),
        ("DELETE", "/containers/a/b", "containers.delete", {"name": "a/b"}),
        ("POST", "/containers/a/stop/kill", "containers.kill", {"name": "a/stop"}),
        ("OPTIONS", "/anything/at/all", "system.options", {"anyroute": "anything/at/all"}),
        ("POST", "/commit?container=a", "images.commit", {}),
        ("GET", "/distribution/a/b/json", "distribution.inspect", {"name": "a/b"}),
        ("GET", "/debug/pprof/", "unknown.unknown", {}),
    ],
)  # fmt: skip
def test_routes(method: str, target: str, name: str, params: dict[str, str]) -> None:
    _routed, _version, route = classify(method, target)
    assert route.name == name
    if name != "unknown.unknown":
        assert route.params == params


@pytest.mark.parametrize(
    ("target", "version", "name"),
    [
        ("/v1.41./containers/json", "1.41.", "containers.list"),
        ("/v01.041/containers/json", "01.041", "containers.list"),
        ("/v./containers/json", ".", "containers.list"),
        ("/v/containers/json", None, "unknown.unknown"),
        ("/V1.41/containers/json", None, "unknown.unknown"),
        ("/v1.41/v1.41/containers/json", "1.41", "unknown.unknown"),
        ("//containers/json", None, "unknown.unknown"),
        ("/./containers/json", None, "unknown.unknown"),
        ("/containers/../containers/json", None, "unknown.unknown"),
        ("/v1.41//containers/json", None, "unknown.unknown"),
        ("/containers/json/", None, "unknown.unknown"),
        ("/containers/x/json/", None, "unknown.unknown"),
        ("/%63ontainers/json", None, "containers.list"),
        ("/v1.41%2Fcontainers/json", "1.41", "containers.list"),
        ("http://docker/v1.41/containers/json", "1.41", "containers.list"),
        ("http://docker", None, "unknown.unknown"),
        ("*", None, "unknown.unknown"),
        ("unix:foo", None, "unknown.unknown"),
        ("/containers/json?a=1", None, "containers.list"),
        ("/containers/a%0Ab/json", None, "unknown.unknown"),
    ],
)
def test_odd_forms(target: str, version: str | None, name: str) -> None:
    _routed, got_version, route = classify("GET", target)
    assert route.name == name
    assert got_version == version


def test_method_is_case_sensitive() -> None:
    assert classify("get", "/containers/json")[2].name == "unknown.unknown"
    assert classify("HEAD", "/containers/json")[2].name == "unknown.unknown"


@pytest.mark.parametrize("target", ["/containers/%zz/json", "/a%2", "containers/json", "/a\x01"])
def test_refused_targets(target: str) -> None:
    with pytest.raises(ProtocolError):
        classify("GET", target)


def test_split_target_keeps_raw_query_and_plus_in_path() -> None:
    assert split_target("/images/a+b/json?x=%20") == ("/images/a+b/json", "x=%20")


@given(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]), st.text())
def test_classify_never_crashes(method: str, target: str) -> None:
    try:
        routed, _version, route = classify(method, target)
    except ProtocolError:
        return
    assert route.resource in RESOURCES
    assert isinstance(routed, str)
