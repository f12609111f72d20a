"""Closed by construction: every reference of the table is resolved by tenancy or refused."""

from __future__ import annotations

from typing import Any

import pytest

from dockmoat.api import reference
from dockmoat.api.reference import Kind, Ref
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import route_path
from dockmoat.policy.decision import Deny
from dockmoat.policy.rules import ALL_RULES
from dockmoat.tenancy import refs, rules
from dockmoat.tenancy.model import TENANT_LABEL, Tenant

T = Tenant.job("ci-1")
CLIENT = ClientIdentity(listener="unix:///j.sock", tenant="ci-1")


def request(
    method: str, target: str, body: Any = None, query: dict[str, list[str]] | None = None
) -> ApiRequest:
    path, version, route = route_path(method, target)
    return ApiRequest(method, target, path, version, route, query or {}, (), CLIENT, body)


def test_every_resolved_entry_names_a_reference_of_the_table() -> None:
    for route, place, name in refs.RESOLVED:
        item = reference.find(route, place, name)  # type: ignore[arg-type]
        assert item is not None, (route, place, name)
        assert isinstance(item.treatment, Ref), (route, place, name)


def test_rules_the_table_names_exist() -> None:
    known = {rule.id for rule in ALL_RULES} | {
        "tenancy.owner-label",
        "tenancy.quota.memory",
    }
    for entry in reference.ENDPOINT_FIELDS:
        for item in entry.fields:
            treatment = item.treatment
            named = treatment.rules if isinstance(treatment, (Ref, reference.Ruled)) else ()
            for rule in named:
                assert rule in known, (entry.route, item.name, rule)


@pytest.mark.parametrize(
    "body",
    [
        {"Image": "x", "Binds": ["data:/d"]},  # legacy top-level: another job's volume
        {"Image": "x", "HostConfig": None, "NetworkMode": "other-net"},
        {"Image": "x", "PidMode": "container:theirs"},
        {"Image": "x", "IpcMode": "container:theirs"},
        {"Image": "x", "VolumesFrom": ["theirs"]},
        {"Image": "x", "Links": ["theirs:db"]},
        {"Image": "x", "Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}]},
        {"Image": "x", "HostConfig": {"Cgroup": "container:theirs"}},
        {"Image": "x", "OnBuild": ["WORKDIR /proc/self/fd/8"]},
    ],
)
def test_create_references_tenancy_does_not_resolve_are_named(body: dict[str, Any]) -> None:
    item = refs.unresolved(request("POST", "/v1.41/containers/create", body))
    assert item is not None
    deny = refs.refusal(request("POST", "/containers/create", body), item)
    assert isinstance(deny, Deny) and deny.rule == "tenancy.unresolved-reference"
    assert repr(item.name) in deny.message


@pytest.mark.parametrize(
    "body",
    [
        {"Image": "x", "HostConfig": {"Binds": ["data:/d"], "NetworkMode": "n"}},
        {"Image": "x", "PidMode": "host"},  # a mode: the policy's, not a reference
        {"Image": "x", "NetworkMode": "none", "Binds": ["/ws/a:/a"]},  # host path: policy's
        {"Image": "x", "Runtime": None, "OnBuild": None, "MacAddress": ""},  # docker-py nulls
        {"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"n": {"NetworkID": "n"}}}},
    ],
)
def test_what_tenancy_resolves_or_the_policy_decides_passes(body: dict[str, Any]) -> None:
    assert refs.unresolved(request("POST", "/v1.41/containers/create", body)) is None


def test_a_route_whose_reference_is_unresolved_is_refused_whole() -> None:
    # images/{name}/attestations (API 1.52) names an image tenancy does not check.
    item = refs.unresolved(request("GET", "/v1.52/images/someone-else/attestations"))
    assert item is not None and item.place == "path"


def test_build_ids_and_host_paths_are_not_tenancy_references() -> None:
    assert {Kind.HOST_PATH, Kind.BUILD} == refs.NOT_TENANCY
    body = {"BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 10}]}
    assert refs.unresolved(request("POST", "/v1.41/containers/x/update", body)) is None


@pytest.mark.parametrize(
    ("repo", "tag", "expected"),
    [
        ("app", "", "app:latest"),
        ("app", None, "app:latest"),
        ("app:v1", "", "app:v1"),  # the tag embedded in repo is the one set
        ("app:v1", "v2", "app:v2"),  # the tag parameter replaces it
        ("registry:5000/app", "", "registry:5000/app:latest"),
        ("registry:5000/app:v1", None, "registry:5000/app:v1"),
    ],
)
def test_effective_tag_is_what_dockerd_sets(repo: str, tag: str | None, expected: str) -> None:
    assert rules.effective_tag(repo, tag) == expected


OWN = f"LABEL {TENANT_LABEL}=ci-1"


def test_changes_are_read_as_the_builder_reads_them() -> None:
    assert rules.changes_problem(["WORKDIR /srv", 'CMD ["sh"]', OWN], T) is None
    onbuild = rules.changes_problem(["ONBUILD RUN id", OWN], T)
    assert isinstance(onbuild, Deny) and "ONBUILD" in onbuild.message
    swallowed = rules.changes_problem(["LABEL a=b \\", OWN], T)
    assert isinstance(swallowed, Deny) and "continuation" in swallowed.message
    escaped = rules.changes_problem(["# escape=`", "LABEL a=b `", OWN], T)
    assert isinstance(escaped, Deny)
    hidden = rules.changes_problem(["ON\\", "BUILD RUN id", OWN], T)  # "ONBUILD RUN id"
    assert isinstance(hidden, Deny) and "ONBUILD" in hidden.message


def test_cache_from_and_build_network_modes() -> None:
    assert rules.cache_from(None) == [] and rules.cache_from("null") == []
    assert rules.cache_from('["a:1", ""]') == ["a:1"]
    with pytest.raises(ValueError):
        rules.cache_from('{"a": 1}')
    assert not rules.build_network_ref("default") and not rules.build_network_ref("")
    assert rules.build_network_ref("app_default")
    assert rules.build_network_ref("container:x")


def test_create_endpoint_network_ids_are_resolved_in_the_tenant_space() -> None:
    body = {"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"n": {"NetworkID": "abc"}}}}
    missing = rules.rewrite_create(body, {}, T, rules.Resolved(networks={"n": "ci-1--n"}))
    assert isinstance(missing, Deny) and missing.status == 400 and "abc" in missing.message
    resolved = rules.Resolved(networks={"n": "ci-1--n"}, network_ids={"abc": "f" * 64})
    decision = rules.rewrite_create(body, {}, T, resolved)
    assert not isinstance(decision, Deny)
    endpoints = decision.body_json["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints == {"ci-1--n": {"NetworkID": "f" * 64}}


def test_closed_endpoints_are_refused_for_tenants_even_when_a_policy_opens_them() -> None:
    req = request("POST", "/v1.41/services/create", {"Name": "s"})
    item = refs.unresolved(req)
    assert item is not None
    deny = refs.refusal(req, item)
    assert deny.rule == "system.swarm" and deny.message.startswith("dockmoat: system.swarm: ")
    # checkpoints: tenancy still resolves their container
    assert refs.unresolved(request("GET", "/v1.41/containers/db/checkpoints")) is None


def test_a_plugin_lookup_answers_as_for_a_missing_plugin() -> None:
    req = request("GET", "/v1.41/plugins/some/thing/json")
    item = refs.unresolved(req)
    assert item is not None
    deny = refs.refusal(req, item)
    assert (deny.status, deny.message) == (404, 'plugin "some/thing" not found')
