"""The reference table against the Engine API specs: nothing the specs define is unlisted.

Walks every path, operation, parameter and body schema (with `$ref`, `allOf`, arrays
and maps followed) of the 1.41 and the newest spec in /work/shared, and fails naming
each endpoint, parameter or body field the table (dockmoat.api.reference) lacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from dockmoat.api import reference
from dockmoat.api.endpoints import ENDPOINTS
from dockmoat.api.gojson import fold
from dockmoat.api.reference import Closed, Endpoint, Ref, unmodeled
from dockmoat.api.routing import route_path

SPECS = Path("/work/shared/reference/docker-engine-api")
VERSIONS = {"v1.41.yaml": (1, 41), "latest.yaml": (1, 56)}


@cache
def load(name: str) -> dict[str, Any]:
    path = SPECS / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    data: dict[str, Any] = YAML(typ="safe", pure=False).load(path.read_text())
    return data


def _resolve(spec: Mapping[str, Any], schema: Any) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = spec["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def body_fields(spec: Mapping[str, Any], schema: Any, prefix: str = "") -> Iterator[str]:
    """Every field path of a body schema: `a.b`, `a[].b` (array items), `a.*.b` (maps)."""
    yield from _walk(spec, schema, prefix, (), 0)


def _walk(
    spec: Mapping[str, Any], schema: Any, prefix: str, seen: tuple[str, ...], depth: int
) -> Iterator[str]:
    if depth > 14:
        return
    if isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return
        seen = (*seen, name)
    schema = _resolve(spec, schema)
    if not isinstance(schema, dict):
        return
    for part in schema.get("allOf", []):
        yield from _walk(spec, part, prefix, seen, depth + 1)
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        yield from _walk(spec, sub, path, seen, depth + 1)
    if schema.get("type") == "array" and "items" in schema:
        yield from _walk(spec, schema["items"], prefix + "[]", seen, depth + 1)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _walk(spec, extra, prefix + ".*", seen, depth + 1)


def _folded(name: str) -> str:
    return ".".join(fold(part) for part in name.split("."))


def missing(
    spec: Mapping[str, Any], version: tuple[int, int], table: Mapping[str, Endpoint]
) -> list[str]:
    """What `spec` defines that `table` does not list (or lists for the wrong versions)."""
    problems: list[str] = []
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", template)
            _path, _version, route = route_path(method.upper(), concrete)
            where = f"{method.upper()} {template} ({route.name})"
            entry = table.get(route.name)
            if entry is None:
                problems.append(f"{where}: the endpoint is not in the table")
                continue
            closed = any(isinstance(item.treatment, Closed) for item in entry.fields)
            listed = {(item.place, item.name) for item in entry.fields}
            headers = {item.name.lower() for item in entry.fields if item.place == "header"}
            body_names = {_folded(item.name): item for item in entry.fields if item.place == "body"}
            path_params = sum(1 for item in entry.fields if item.place == "path")
            spec_path_params = 0
            for param in operation.get("parameters", []):
                place, name = param["in"], param["name"]
                if place == "path":
                    spec_path_params += 1
                elif place == "query":
                    field = (
                        reference.find(route.name, "query", name)
                        if table is reference.TABLE
                        else None
                    )
                    if ("query", name) not in listed:
                        problems.append(f"{where}: query parameter {name!r}")
                    elif field is not None and field.since > version:
                        problems.append(
                            f"{where}: {name!r} exists at {version}, listed from {field.since}"
                        )
                elif place == "header":
                    if name.lower() not in headers:
                        problems.append(f"{where}: header {name!r}")
                elif place == "body":
                    names = list(body_fields(spec, param.get("schema", {})))
                    if closed:
                        continue
                    if not names:
                        if "<stream>" not in body_names:
                            problems.append(f"{where}: body stream {param['name']!r}")
                        continue
                    for name in names:
                        item = body_names.get(_folded(name))
                        if item is None:
                            problems.append(f"{where}: body field {name!r}")
                        elif item.since > version:
                            problems.append(
                                f"{where}: body field {name!r} exists at {version}, listed "
                                f"from {item.since}"
                            )
            if spec_path_params != path_params and not (closed and spec_path_params <= path_params):
                problems.append(f"{where}: {spec_path_params} path parameters, table {path_params}")
    return problems


@pytest.mark.parametrize("name", sorted(VERSIONS))
def test_every_input_of_the_spec_is_in_the_table(name: str) -> None:
    problems = missing(load(name), VERSIONS[name], reference.TABLE)
    assert problems == [], "\n".join(problems)


def test_fields_newer_than_1_41_say_so() -> None:
    """A body field the 1.41 spec lacks but the newest has is listed with since > 1.41."""
    old, new = load("v1.41.yaml"), load("latest.yaml")
    problems = []
    for template, operations in new["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            old_op = old["paths"].get(template, {}).get(method, {})
            old_fields = {
                _folded(f)
                for p in old_op.get("parameters", [])
                if p["in"] == "body"
                for f in body_fields(old, p.get("schema", {}))
            }
            route = route_path(method.upper(), re.sub(r"\{[^}]+\}", "x", template))[2].name
            for param in operation.get("parameters", []):
                if param["in"] != "body":
                    continue
                for field in body_fields(new, param.get("schema", {})):
                    item = reference.find(route, "body", field)
                    if item is None or isinstance(item.treatment, Closed):
                        continue
                    if _folded(field) not in old_fields and item.since <= (1, 41):
                        problems.append(
                            f"{route}: {field} is new after 1.41, listed as {item.since}"
                        )
    assert problems == [], "\n".join(problems)


def test_the_walker_fails_when_an_entry_is_removed() -> None:
    """The test of the test: drop one body field and one query parameter, it names both."""
    create = reference.TABLE["containers.create"]
    without = replace(
        create,
        fields=tuple(
            item for item in create.fields if item.name not in ("HostConfig.OomScoreAdj", "name")
        ),
    )
    table = {**reference.TABLE, "containers.create": without}
    problems = missing(load("latest.yaml"), (1, 56), table)
    assert any("body field 'HostConfig.OomScoreAdj'" in p for p in problems), problems
    assert any("query parameter 'name'" in p for p in problems), problems
    table = {k: v for k, v in reference.TABLE.items() if k != "networks.connect"}
    assert any(
        "networks.connect" in p and "not in the table" in p
        for p in missing(load("v1.41.yaml"), (1, 41), table)
    )


def test_every_route_of_the_router_is_in_the_table() -> None:
    routes = {f"{resource}.{action}" for _m, _p, resource, action in ENDPOINTS}
    assert routes - set(reference.TABLE) == set()
    assert set(reference.TABLE) - routes == set()


def test_each_input_is_listed_once() -> None:
    for entry in reference.ENDPOINT_FIELDS:
        keys = [
            (item.place, _folded(item.name) if item.place == "body" else item.name)
            for item in entry.fields
        ]
        assert len(keys) == len(set(keys)), entry.route


def test_references_name_their_kind_and_form() -> None:
    refs = reference.references("containers.create")
    names = {item.name for item in refs}
    for expected in (
        "Image",
        "HostConfig.Binds",
        "HostConfig.VolumesFrom",
        "HostConfig.NetworkMode",
        "HostConfig.Links",
        "NetworkingConfig.EndpointsConfig.*.NetworkID",
        "Binds",  # legacy top-level
        "NetworkMode",
        "PidMode",
        "IpcMode",
        "VolumesFrom",
        "Links",
        "Mounts[].Source",
    ):
        assert expected in names, expected
    legacy = reference.find("containers.create", "body", "binds")
    assert legacy is not None and legacy.legacy and isinstance(legacy.treatment, Ref)


# --- unmodeled: what the guard refuses ------------------------------------------------


def test_unmodeled_names_an_unknown_query_parameter() -> None:
    assert unmodeled("containers.create", {"name": ["x"]}, {"Image": "x"}) is None
    assert unmodeled("containers.create", {"nmae": ["x"]}, {"Image": "x"}) == (
        "the query parameter 'nmae'"
    )


def test_unmodeled_names_an_unknown_body_field_at_any_depth() -> None:
    body = {"Image": "x", "HostConfig": {"Binds": [], "Mounts": [{"Type": "volume", "Sorce": "v"}]}}
    assert unmodeled("containers.create", {}, body) == "the body field 'HostConfig.Mounts[].Sorce'"
    body = {
        "Image": "x",
        "NetworkingConfig": {"EndpointsConfig": {"net": {"NetworkId": "n", "X": 1}}},
    }
    assert unmodeled("containers.create", {}, body) == (
        "the body field 'NetworkingConfig.EndpointsConfig.*.X'"
    )


def test_unmodeled_matches_keys_as_go_does() -> None:
    # Go matches struct fields case-insensitively, with Unicode folding (ſ is s).
    body = {"image": "x", "hostconfig": {"privileged": False, "ſhmSize": 1}}
    assert unmodeled("containers.create", {}, body) is None


def test_free_form_maps_are_values_not_fields() -> None:
    body = {
        "Image": "x",
        "Labels": {"anything": "goes"},
        "HostConfig": {
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
            "Sysctls": {"net.ipv4.ip_forward": "1"},
        },
    }
    assert unmodeled("containers.create", {}, body) is None
    body["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIP6"] = "x"  # type: ignore[index]
    assert unmodeled("containers.create", {}, body) == (
        "the body field 'HostConfig.PortBindings.*[].HostIP6'"
    )


def test_closed_endpoints_are_not_walked() -> None:
    assert unmodeled("services.create", {"anything": ["1"]}, {"Whatever": 1}) is None


_CREATE_TOP = sorted(
    {item.name for item in reference.fields_of("containers.create", "body") if "." not in item.name}
)
_HOST = sorted(
    {
        item.name.removeprefix("HostConfig.")
        for item in reference.fields_of("containers.create", "body")
        if item.name.startswith("HostConfig.")
        and item.name.count(".") == 1
        and "[" not in item.name
    }
)


@given(
    st.lists(st.sampled_from(_CREATE_TOP), max_size=8, unique=True),
    st.lists(st.sampled_from(_HOST), max_size=8, unique=True),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ_", min_size=1, max_size=12),
    st.booleans(),
)
def test_listed_fields_pass_and_any_other_key_is_named(
    top: list[str], host: list[str], extra: str, inside: bool
) -> None:
    body: dict[str, Any] = {name: "x" for name in top if name != "HostConfig"}
    body["HostConfig"] = {name: "x" for name in host}
    assert unmodeled("containers.create", {}, body) is None
    known = {fold(n) for n in (_HOST if inside else _CREATE_TOP)}
    if fold(extra) in known:
        return
    (body["HostConfig"] if inside else body)[extra] = 1
    where = f"HostConfig.{extra}" if inside else extra
    assert unmodeled("containers.create", {}, body) == f"the body field {where!r}"
