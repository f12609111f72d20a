"""Properties of the tenancy rules: whatever the body, nothing unresolved gets through."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dockmoat.policy.decision import Deny, Rewrite
from dockmoat.tenancy import present, rules
from dockmoat.tenancy.model import TENANT_LABEL, Tenant

T = Tenant.job("j")
names = st.sampled_from(["db", "web", "other", "bridge", "none", "x--y", "/db", "abc123"])
OWN_IDS = {"db": "1" * 64, "web": "2" * 64}
OWN_NAMES = {"db": "j--db", "web": "j--web"}
OWN_NETS = {"front": "j--front", "app_default": "j--app_default"}
networks = st.sampled_from(["front", "app_default", "bridge", "none", "theirs", "host"])


def _mode(ref: str) -> str:
    return f"container:{ref}"


bodies = st.fixed_dictionaries(
    {},
    optional={
        "HostConfig": st.fixed_dictionaries(
            {},
            optional={
                "NetworkMode": st.one_of(networks, names.map(_mode)),
                "PidMode": names.map(_mode),
                "IpcMode": names.map(_mode),
                "VolumesFrom": st.lists(names, max_size=3),
                "Links": st.lists(st.tuples(names, names).map(":".join), max_size=3),
                "Binds": st.lists(st.sampled_from(["data:/d", "/ws:/w", "c:/c:ro"]), max_size=3),
            },
        ),
        "NetworkingConfig": st.fixed_dictionaries(
            {
                "EndpointsConfig": st.dictionaries(
                    networks,
                    st.fixed_dictionaries(
                        {}, optional={"Links": st.lists(st.tuples(names, names).map(":".join))}
                    ),
                    max_size=3,
                )
            }
        ),
        "Labels": st.dictionaries(st.sampled_from([TENANT_LABEL, "a", "b"]), st.text(max_size=5)),
    },
)


def _resolved() -> rules.Resolved:
    resolved_ids = {**OWN_IDS, "/db": OWN_IDS["db"]}
    resolved_names = {**OWN_NAMES, "/db": OWN_NAMES["db"]}
    return rules.Resolved(resolved_ids, resolved_names, OWN_NETS)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


@given(bodies)
def test_create_never_forwards_an_unresolved_join(body: dict[str, Any]) -> None:
    decision = rules.rewrite_create(body, {}, T, _resolved())
    if isinstance(decision, Deny):
        assert decision.status == 400 and decision.rule == "tenancy.not-found"
        return
    assert isinstance(decision, Rewrite)
    out = decision.body_json
    assert out["Labels"][TENANT_LABEL] == "j"
    host = out.get("HostConfig", {})
    for field in ("NetworkMode", "PidMode", "IpcMode"):
        value = host.get(field)
        if isinstance(value, str) and value.startswith("container:"):
            assert value.removeprefix("container:") in OWN_IDS.values()
    for entry in host.get("VolumesFrom", []):
        assert entry.split(":")[0] in OWN_IDS.values()
    for entry in host.get("Links", []):
        assert entry.split(":")[0] in OWN_NAMES.values()
    mode = host.get("NetworkMode")
    assert mode is None or mode.startswith("container:") or mode in (
        *OWN_NETS.values(), "bridge", "none", "host",
    )  # fmt: skip
    endpoints = out.get("NetworkingConfig", {}).get("EndpointsConfig", {})
    for net, endpoint in endpoints.items():
        assert net in (*OWN_NETS.values(), "bridge", "none", "host")
        for link in endpoint.get("Links", []):
            assert link.split(":")[0] in OWN_NAMES.values()
    for bind in host.get("Binds", []):
        assert bind.startswith(("/", "j--"))


labels = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from([TENANT_LABEL, "x"]), st.sampled_from(["j", "k", ""])),
)
entries = st.lists(
    st.fixed_dictionaries(
        {
            "Id": st.text(max_size=4),
            "Names": st.lists(names.map(lambda n: "/" + n.lstrip("/"))),
            "Labels": labels,
        }
    ),
    max_size=6,
)


@given(entries)
def test_lists_never_show_anything_not_labelled_for_the_job(listed: list[dict[str, Any]]) -> None:
    shown = present.present_container_list(listed, T)
    assert len(shown) == sum(1 for e in listed if (e["Labels"] or {}).get(TENANT_LABEL) == "j")
    for entry in shown:
        assert entry["Labels"][TENANT_LABEL] == "j"
        assert all("j--" not in name for name in entry["Names"])


@given(
    st.dictionaries(
        st.sampled_from(["label", "name", "status", "network"]),
        st.lists(st.text(max_size=6), max_size=3),
    )
)
def test_scoped_queries_always_carry_the_job_label(filters: dict[str, list[str]]) -> None:
    query = {"filters": [json.dumps(filters)]}
    scoped = json.loads(rules.scoped_query(query, T, name_filters=True)["filters"][0])
    assert f"{TENANT_LABEL}=j" in scoped["label"]
    assert scoped["label"][: len(filters.get("label", []))] == filters.get("label", [])
