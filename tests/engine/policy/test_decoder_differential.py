"""The decoder against the live dockerd: it reads what the daemon applied, or refuses.

Each body is POSTed verbatim to the daemon's own socket; the created container is
inspected and compared with what `gojson` (and the policy's field lookup) reads
from the same bytes. Fields are harmless but observable (Labels, Env, Memory,
NetworkMode, CapAdd NET_RAW). Where our decoder refuses, the test also shows
that a plain JSON reader would have misread the daemon (so refusing is needed).

Engines differ (read from the engine's `/version`, and checked against what
`dockmoat.api.engines` says of that version): Engine 20.10 reads HostConfig fields
at the top level of the body and ignores data after the JSON value; Engine 28.5
ignores the former and answers 400 to the latter; the NetworkMode of a container
created without one is `default` on 20.10 and `bridge` on 28.5 (asked of the
engine with a plain create).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rawdocker import call, engine_version, socket_of

from dockmoat.api import gojson
from dockmoat.api.engines import EngineVersion
from dockmoat.errors import ProtocolError

MIB64 = 64 * 1024 * 1024


@pytest.fixture
def created(docker_host: str) -> Iterator[Callable[[bytes], tuple[int, Any]]]:
    """create(raw_body) -> (status, inspect JSON or error); removes what it made."""
    sock = socket_of(docker_host)
    made: list[str] = []

    def create(raw: bytes) -> tuple[int, Any]:
        status, answer = call(sock, "POST", "/v1.41/containers/create", raw)
        if status != 201:
            return status, answer
        made.append(answer["Id"])
        status, info = call(sock, "GET", f"/v1.41/containers/{answer['Id']}/json")
        assert status == 200
        return 201, info

    yield create
    for ident in made:
        call(sock, "DELETE", f"/v1.41/containers/{ident}?force=1&v=1")


@pytest.fixture(scope="module")
def engine(docker_host: str) -> EngineVersion:
    return engine_version(socket_of(docker_host))


@pytest.fixture(scope="module")
def default_mode(docker_host: str, busybox_image: str) -> str:
    """The NetworkMode this engine reports for a create that names none."""
    sock = socket_of(docker_host)
    body = json.dumps({"Image": busybox_image, "Cmd": ["true"]}).encode()
    status, answer = call(sock, "POST", "/v1.41/containers/create", body)
    assert status == 201, answer
    try:
        status, info = call(sock, "GET", f"/v1.41/containers/{answer['Id']}/json")
        mode: str = info["HostConfig"]["NetworkMode"]
        return mode
    finally:
        call(sock, "DELETE", f"/v1.41/containers/{answer['Id']}?force=1&v=1")


def our_reading(body: Any, engine: EngineVersion, default_mode: str) -> dict[str, Any]:
    """What the guard reads: Config fields at the top; HostConfig inner, else top-level
    on engines that read top-level HostConfig fields (`engine.reads_legacy_host_config`)."""
    host = gojson.field(body, "HostConfig")
    if not isinstance(host, dict):
        host = body if engine.reads_legacy_host_config else {}
    caps = gojson.field(host, "CapAdd")
    return {
        "Labels": gojson.field(body, "Labels") or {},
        "Env": gojson.field(body, "Env") or [],
        "Memory": gojson.field(host, "Memory") or 0,
        "NetworkMode": gojson.field(host, "NetworkMode") or default_mode,
        "CapAdd": caps or None,
    }


def daemon_reading(info: dict[str, Any]) -> dict[str, Any]:
    env = [item for item in info["Config"]["Env"] or [] if not item.startswith("PATH=")]
    labels = info["Config"]["Labels"] or {}
    return {
        # the test image's own label is inherited; only the request's labels count
        "Labels": {k: v for k, v in labels.items() if not k.startswith("dockmoat.test.")},
        "Env": env,
        "Memory": info["HostConfig"]["Memory"],
        "NetworkMode": info["HostConfig"]["NetworkMode"],
        "CapAdd": info["HostConfig"]["CapAdd"],
    }


def agree_or_refuse(
    raw: bytes,
    create: Callable[[bytes], tuple[int, Any]],
    engine: EngineVersion,
    default_mode: str,
) -> str:
    """Assert the invariant; say which way it held ("agree", "refused", "daemon-refused")."""
    status, info = create(raw)
    try:
        ours = gojson.loads(raw)
    except ProtocolError:
        return "refused"
    if status != 201:
        return "daemon-refused"
    assert our_reading(ours, engine, default_mode) == daemon_reading(info), raw
    return "agree"


def image_field(image: str) -> str:
    return f'"Image": {json.dumps(image)}, "Cmd": ["true"]'


AGREE = [
    # odd key case everywhere
    '{{{img}, "labels": {{"dmtest": "case"}}, "ENV": ["A=1"], '
    '"hostconfig": {{"memory": 67108864, "capadd": ["NET_RAW"], "networkmode": "none"}}}}',
    # Unicode folds: long s in "Labels", Kelvin sign in "NetworkMode"
    '{{{img}, "Label\u017f": {{"dmtest": "fold"}}, '
    '"HostConfig": {{"Networ\u212aMode": "none", "Memory": 67108864}}}}',
    # escaped key spellings
    '{{{img}, "\\u004cabels": {{"dmtest": "esc"}}, "HostConfig": {{"\\u004demory": 67108864}}}}',
    # HostConfig fields at the top level, no "HostConfig" key: dockerd 20.10 applies
    # them, 28.5 ignores them
    '{{{img}, "Labels": {{"dmtest": "top"}}, "Memory": 67108864, "CapAdd": ["NET_RAW"]}}',
    # a null HostConfig: dockerd 20.10 falls back to the top-level fields
    '{{{img}, "HostConfig": null, "Memory": 67108864}}',
]
#: Data after the JSON value: dockerd 20.10 ignores it, 28.5 answers 400.
TRAILING = [
    '{{{img}, "Labels": {{"dmtest": "trail"}}}} {{"Labels": {{"x": "y"}}}}',
    '{{{img}, "Labels": {{"dmtest": "trail"}}}}garbage',
]

REFUSE = [
    # duplicate map key: Go merges the two Labels maps, a plain reader keeps the last
    '{{{img}, "Labels": {{"dmtest": "a"}}, "Labels": {{"other": "b"}}}}',
    # case-colliding keys: both are the Labels field; Go merges them
    '{{{img}, "Labels": {{"dmtest": "a"}}, "labels": {{"other": "b"}}}}',
    # a folded spelling colliding with the plain one
    '{{{img}, "Labels": {{"dmtest": "a"}}, "Label\u017f": {{"other": "b"}}}}',
    # merged HostConfig objects: Go decodes both into one struct
    '{{{img}, "HostConfig": {{"Memory": 67108864}}, "HostConfig": {{"CapAdd": ["NET_RAW"]}}}}',
    *TRAILING,
    # a lone surrogate escape: Go turns it into U+FFFD
    '{{{img}, "Env": ["A=\\ud800"]}}',
]


@pytest.mark.parametrize("template", AGREE)
def test_decoder_reads_what_the_daemon_applied(
    template: str,
    busybox_image: str,
    created: Callable[[bytes], tuple[int, Any]],
    engine: EngineVersion,
    default_mode: str,
) -> None:
    raw = template.format(img=image_field(busybox_image)).encode()
    assert agree_or_refuse(raw, created, engine, default_mode) == "agree"


@pytest.mark.parametrize("template", REFUSE)
def test_decoder_refuses_what_a_plain_reader_would_misread(
    template: str,
    busybox_image: str,
    created: Callable[[bytes], tuple[int, Any]],
    engine: EngineVersion,
    default_mode: str,
) -> None:
    raw = template.format(img=image_field(busybox_image)).encode()
    status, info = created(raw)
    if template in TRAILING and engine.api > (1, 41):
        # Engines after 20.10 refuse trailing data themselves (28.5: 400 "unexpected
        # content after JSON"): no hole on this engine; the guard refuses it anyway.
        assert status == 400, (engine, info)
        assert "after JSON" in str(info)
        with pytest.raises(ProtocolError):
            gojson.loads(raw)
        return
    assert status == 201, info  # the daemon took it...
    with pytest.raises(ProtocolError):  # ...and we refuse it
        gojson.loads(raw)
    # A plain JSON reader (last key wins, no folding) disagrees with the daemon here,
    # or cannot read the body at all: refusing is the only safe answer.
    try:
        plain = json.loads(raw.decode("utf-8", "surrogatepass"))
    except ValueError:
        return
    naive = {
        "Labels": plain.get("Labels") or {},
        "Env": plain.get("Env") or [],
        "Memory": (plain.get("HostConfig") or {}).get("Memory") or 0,
        "NetworkMode": default_mode,
        "CapAdd": (plain.get("HostConfig") or {}).get("CapAdd"),
    }
    assert naive != daemon_reading(info)


def test_invalid_utf8_is_refused(
    busybox_image: str, created: Callable[[bytes], tuple[int, Any]]
) -> None:
    raw = ("{" + image_field(busybox_image) + ', "Labels": {"dmtest": "').encode() + b'\xff"}}'
    status, info = created(raw)
    assert status == 201
    assert info["Config"]["Labels"]["dmtest"] == "\ufffd"  # Go repaired it silently
    with pytest.raises(ProtocolError, match="UTF-8"):
        gojson.loads(raw)
