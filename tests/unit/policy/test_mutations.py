"""Property: however a dangerous create body is spelled, it never gets through.

Mutations: key case, Unicode folds (long s, Kelvin sign), `\\u` escapes in keys,
HostConfig fields at the top level (dockerd reads them there too), duplicated and
merged HostConfig objects, harmless decoys. Each body either is refused by the
decoder (ProtocolError, a 400) or denied by the policy; never allowed or rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.api.request import ApiRequest
from dockmoat.errors import ProtocolError
from dockmoat.policy.decision import Deny
from dockmoat.policy.engine import load_policy
from dockmoat.policy.trial import routed, with_json_body

POLICY = load_policy("baseline", env={})

DANGERS: list[tuple[str, Any]] = [
    ("Privileged", True),
    ("Binds", ["/:/host"]),
    ("Binds", ["/var/run/docker.sock:/s"]),
    ("Mounts", [{"Type": "bind", "Source": "/etc", "Target": "/e"}]),
    ("CapAdd", ["SYS_ADMIN"]),
    ("CapAdd", ["cap_sys_ptrace"]),
    ("NetworkMode", "host"),
    ("PidMode", "host"),
    ("UsernsMode", "host"),
    ("PidsLimit", -1),
    ("SecurityOpt", ["seccomp=unconfined"]),
    ("SecurityOpt", ["apparmor:unconfined"]),
    ("Devices", [{"PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem"}]),
    ("Sysctls", {"kernel.core_pattern": "|/tmp/x"}),
    ("MaskedPaths", []),
    ("CgroupParent", "/"),
    ("VolumesFrom", ["victim"]),
    ("LogConfig", {"Type": "syslog"}),
    ("PublishAllPorts", True),
]
_FOLDS = {"s": "\u017f", "S": "\u017f", "k": "\u212a", "K": "\u212a"}


@st.composite
def spelling(draw: st.DrawFn, name: str) -> str:
    out = []
    for char in name:
        choice = draw(st.integers(0, 3))
        if choice == 1:
            char = char.swapcase()
        elif choice == 2 and char in _FOLDS:
            char = _FOLDS[char]
        out.append(char)
    return "".join(out)


def key_text(key: str, escape: list[bool]) -> str:
    """A JSON string for `key`, some characters as `\\u` escapes."""
    parts = []
    for index, char in enumerate(key):
        if escape[index % len(escape)]:
            parts.append(f"\\u{ord(char):04x}")
        else:
            parts.append(json.dumps(char)[1:-1])
    return '"' + "".join(parts) + '"'


def obj_text(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


@st.composite
def dangerous_body(draw: st.DrawFn) -> bytes:
    field, value = draw(st.sampled_from(DANGERS))
    escape = draw(st.lists(st.booleans(), min_size=1, max_size=5))
    danger = (key_text(draw(spelling(field)), escape), json.dumps(value))
    hc_key = key_text(draw(spelling("HostConfig")), escape)
    decoy = (key_text(field, [False]), json.dumps(None))
    inner: list[tuple[str, str]] = [danger]
    if draw(st.booleans()):
        inner.insert(draw(st.integers(0, 1)), ('"Memory"', "67108864"))
    outer: list[tuple[str, str]] = [('"Image"', '"busybox"')]
    placement = draw(st.sampled_from(["inner", "top", "merged", "both"]))
    if placement == "inner":
        outer.append((hc_key, obj_text(inner)))
    elif placement == "top":
        outer.extend(inner)
    elif placement == "merged":
        # Go decodes a repeated object key into the same struct: the copies merge.
        outer.append((hc_key, obj_text(inner)))
        outer.append((key_text("HostConfig", [False]), obj_text([decoy])))
    else:
        outer.append((hc_key, obj_text([decoy])))
        outer.extend(inner)
    if draw(st.booleans()):
        outer.append(('"Labels"', json.dumps({"dmtest": "1"})))
    order = draw(st.permutations(outer))
    return obj_text(list(order)).encode()


def _request(raw: bytes) -> ApiRequest:
    return with_json_body(routed("POST", "/v1.41/containers/create", listener="test"), raw)


def refused_or_denied(raw: bytes, evaluate: Callable[[ApiRequest], Any]) -> bool:
    try:
        request = _request(raw)
    except ProtocolError:
        return True
    return isinstance(evaluate(request), Deny)


@settings(max_examples=300, deadline=None)
@given(dangerous_body())
def test_mutated_dangerous_bodies_never_pass(raw: bytes) -> None:
    assert refused_or_denied(raw, POLICY.evaluate), raw


@settings(max_examples=100, deadline=None)
@given(dangerous_body(), st.sampled_from([b" ", b"\n", b" {}", b"x", b"]"]))
def test_trailing_data_never_hides_anything(raw: bytes, tail: bytes) -> None:
    body = raw + tail
    try:
        request = _request(body)
    except ProtocolError:
        return
    assert tail.strip() == b""
    assert isinstance(POLICY.evaluate(request), Deny)
