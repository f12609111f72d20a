import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dockmoat.policy.decision import Allow, Deny, Rewrite
from dockmoat.tenancy import rules
from dockmoat.tenancy.model import (
    TENANT_LABEL,
    ContainerFact,
    NetworkFact,
    Quotas,
    Tenant,
    resolve_container,
    resolve_network,
)

T = Tenant.job("ci-1")
DB = ContainerFact("d" * 64, ("/ci-1--db",), running=True)
WEB = ContainerFact("de" + "0" * 62, ("/ci-1--web",))


def _create(body: dict[str, Any], resolved: rules.Resolved | None = None, name: str = "") -> Any:
    query = {"name": [name]} if name else {}
    return rules.rewrite_create(body, query, T, resolved or rules.Resolved())


def test_create_is_labelled_and_named_in_the_job_space() -> None:
    decision = _create({"Image": "x", "Labels": {"a": "b", TENANT_LABEL: "other"}}, name="db")
    assert isinstance(decision, Rewrite)
    assert decision.body_json["Labels"] == {"a": "b", TENANT_LABEL: "ci-1"}
    assert decision.query == {"name": ["ci-1--db"]}


def test_create_keys_are_matched_like_go() -> None:
    body = {"image": "x", "labels": {"k": "v"}, "hostconfig": {"binds": ["data:/d", "/ws:/w"]}}
    decision = _create(body)
    assert isinstance(decision, Rewrite)
    assert decision.body_json["labels"] == {"k": "v", TENANT_LABEL: "ci-1"}
    assert "Labels" not in decision.body_json
    assert decision.body_json["hostconfig"]["binds"] == ["ci-1--data:/d", "/ws:/w"]


def test_volume_mounts_are_prefixed_binds_are_not() -> None:
    body = {
        "HostConfig": {
            "Mounts": [
                {"Type": "volume", "Source": "cache", "Target": "/c"},
                {"Type": "bind", "Source": "/ws", "Target": "/w"},
            ]
        }
    }
    decision = _create(body)
    assert isinstance(decision, Rewrite)
    mounts = decision.body_json["HostConfig"]["Mounts"]
    assert mounts[0]["Source"] == "ci-1--cache" and mounts[1]["Source"] == "/ws"


def test_joins_only_between_own_containers() -> None:
    body = {
        "HostConfig": {
            "NetworkMode": "container:db",
            "PidMode": "container:db",
            "VolumesFrom": ["db:ro"],
            "Links": ["db:database"],
        }
    }
    assert _create(body) == Deny("tenancy.not-found", "No such container: db", 400)
    resolved = rules.Resolved({"db": DB.id}, {"db": "ci-1--db"}, {})
    decision = _create(body, resolved)
    assert isinstance(decision, Rewrite)
    host = decision.body_json["HostConfig"]
    assert host["NetworkMode"] == host["PidMode"] == f"container:{DB.id}"
    assert host["VolumesFrom"] == [f"{DB.id}:ro"]
    assert host["Links"] == ["ci-1--db:database"]


def test_user_networks_resolve_and_predefined_stay() -> None:
    body = {
        "HostConfig": {"NetworkMode": "app_default"},
        "NetworkingConfig": {"EndpointsConfig": {"app_default": {"Aliases": ["web"]}}},
    }
    assert _create(body) == Deny("tenancy.not-found", "network app_default not found", 400)
    decision = _create(body, rules.Resolved({}, {}, {"app_default": "ci-1--app_default"}))
    assert isinstance(decision, Rewrite)
    assert decision.body_json["HostConfig"]["NetworkMode"] == "ci-1--app_default"
    assert list(decision.body_json["NetworkingConfig"]["EndpointsConfig"]) == ["ci-1--app_default"]
    plain = _create({"HostConfig": {"NetworkMode": "bridge"}})
    assert isinstance(plain, Rewrite)
    assert plain.body_json["HostConfig"]["NetworkMode"] == "bridge"


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5))
def test_any_labels_end_up_owned_by_the_tenant(labels: dict[str, str]) -> None:
    decision = _create({"Labels": labels})
    assert isinstance(decision, Rewrite)
    assert decision.body_json["Labels"][TENANT_LABEL] == "ci-1"


def test_resolution_order_and_scope() -> None:
    owned = [DB, WEB]
    assert resolve_container(DB.id, owned, T.namespace) is DB
    assert resolve_container("db", owned, T.namespace) is DB
    assert resolve_container("/db", owned, T.namespace) is DB
    assert resolve_container("d", owned, T.namespace) is None  # ambiguous prefix
    assert resolve_container("dd", owned, T.namespace) is DB
    assert resolve_container("ci-1--db", owned, T.namespace) is DB  # its own engine name
    generated = ContainerFact("e" * 64, ("/happy_turing",))
    assert resolve_container("happy_turing", [generated], T.namespace) is generated
    assert resolve_container("other", owned, T.namespace) is None
    nets = [NetworkFact("a" * 64, "ci-1--app_default")]
    assert resolve_network("app_default", nets, T.namespace) is nets[0]
    assert resolve_network("aaa", nets, T.namespace) is nets[0]
    assert resolve_network("bridge", nets, T.namespace) is None


def test_scoped_query_keeps_client_filters() -> None:
    query = {
        "all": ["1"],
        "filters": ['{"label":["x=y"],"name":["^/db$"],"status":{"exited":true}}'],
    }
    scoped = rules.scoped_query(query, T, name_filters=True)
    filters = json.loads(scoped["filters"][0])
    assert filters["label"] == ["x=y", f"{TENANT_LABEL}=ci-1"]
    assert filters["name"] == ["^/ci\\-1\\-\\-db$"]
    assert filters["status"] == ["exited"]
    assert scoped["all"] == ["1"]
    assert json.loads(rules.scoped_query({}, T)["filters"][0]) == {
        "label": [f"{TENANT_LABEL}=ci-1"]
    }


def test_replace_path_param() -> None:
    assert rules.replace_path_param("/containers/db/json", "containers", "db", "f" * 64) == (
        "/containers/" + "f" * 64 + "/json"
    )
    assert rules.replace_path_param("/volumes/a/b", "volumes", "a/b", "j--a/b") == "/volumes/j--a/b"


def test_volume_and_network_create() -> None:
    vol = rules.rewrite_volume_create({"Name": "data"}, T)
    assert vol.body_json == {"Name": "ci-1--data", "Labels": {TENANT_LABEL: "ci-1"}}
    anon = rules.rewrite_volume_create({}, T)
    assert anon.body_json == {"Labels": {TENANT_LABEL: "ci-1"}}
    net = rules.rewrite_network_create({"Name": "app_default", "Labels": {"a": "1"}}, T)
    assert isinstance(net, Rewrite)
    assert net.body_json == {
        "Name": "ci-1--app_default",
        "Labels": {"a": "1", TENANT_LABEL: "ci-1"},
    }
    assert rules.rewrite_network_create({"Name": "bridge"}, T) == Allow()


def test_quotas() -> None:
    limited = Tenant.job("q", Quotas(running_containers=2, memory_bytes=1000, volumes=1))
    assert rules.check_running_quota(limited, 1) == Allow()
    denied = rules.check_running_quota(limited, 2)
    assert isinstance(denied, Deny) and "running-containers" in denied.message
    assert rules.check_memory_quota(limited, [400], 600) == Allow()
    over = rules.check_memory_quota(limited, [400], 601)
    assert isinstance(over, Deny) and "memory" in over.rule
    assert isinstance(rules.check_memory_quota(limited, [], 0), Deny)  # unlimited container
    assert isinstance(rules.check_volume_quota(limited, 1), Deny)
    assert rules.check_running_quota(T, 10_000) == Allow()
    assert rules.memory_of({"HostConfig": {"Memory": 5}}) == 5
    assert rules.memory_of({"memory": 7}) == 7


def test_links_on_user_networks_resolve_too() -> None:
    body = {"NetworkingConfig": {"EndpointsConfig": {"net": {"Links": ["db:database"]}}}}
    assert rules.create_refs(body) == rules.CreateRefs(frozenset({"db"}), frozenset({"net"}))
    assert isinstance(_create(body), Deny)
    resolved = rules.Resolved({"db": DB.id}, {"db": "ci-1--db"}, {"net": "ci-1--net"})
    decision = _create(body, resolved)
    assert isinstance(decision, Rewrite)
    endpoints = decision.body_json["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints == {"ci-1--net": {"Links": ["ci-1--db:database"]}}


def test_event_filters_move_into_the_job_space() -> None:
    query = {"filters": ['{"container":["db","' + "a" * 64 + '"],"type":["container"]}']}
    moved = rules.events_query(query, T)
    assert moved is not None
    assert json.loads(moved["filters"][0]) == {
        "container": ["ci-1--db", "a" * 64],
        "type": ["container"],
    }
    assert rules.events_query({"since": ["1"]}, T) is None
