"""Issue 18's classes of crossing: each shown on the raw engine, then refused through a job.

Two jobs, A and B, on one `dockmoat serve`. Each test first makes the crossing on the
engine's own socket with B's objects (the "two tenants" are the jobs' engine-side
names), or says why this engine has no such hole, then sends the same request
through A's job socket and checks the refusal and its effect on the engine.
"""

from __future__ import annotations

import http.client
import io
import json
import secrets
import socket
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from tenancy_helpers import Job, Serve, job_name

from dockmoat.api.engines import EngineVersion, from_version_answer


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def call(sock: str, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    connection = _Unix(sock)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, target, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw.decode("utf-8", "replace")


def q(**params: str) -> str:
    return urllib.parse.urlencode(params)


@dataclass
class Pair:
    a: Job
    b: Job
    raw: str
    engine: EngineVersion
    image: str


@pytest.fixture(scope="module")
def raw_socket(docker_host: str) -> str:
    assert docker_host.startswith("unix://")
    return docker_host.removeprefix("unix://")


@pytest.fixture(scope="module")
def pair(serve: Serve, raw_socket: str, busybox_image: str) -> Iterator[Pair]:
    """Two jobs for the whole module (opening and closing jobs is most of the cost);
    each test names its objects with `fresh`."""
    status, answer = call(raw_socket, "GET", "/version")
    assert status == 200
    engine = from_version_answer(json.dumps(answer).encode())
    jobs = (serve.open_job(job_name("a")), serve.open_job(job_name("b")))
    yield Pair(jobs[0], jobs[1], raw_socket, engine, busybox_image)
    for job in jobs:
        if not job.closed:
            job.close()


@pytest.fixture
def fresh() -> Callable[[str], str]:
    """fresh("web") -> "web-1a2b3c": names no other test of the module uses."""
    suffix = secrets.token_hex(3)
    return lambda base: f"{base}-{suffix}"


@pytest.fixture
def raw_made(raw_socket: str) -> Iterator[list[tuple[str, str]]]:
    """(kind, id) made on the raw socket by a test; removed after it."""
    made: list[tuple[str, str]] = []
    yield made
    for kind, ident in reversed(made):
        if kind == "container":
            call(raw_socket, "DELETE", f"/containers/{ident}?force=1&v=1")
        elif kind == "image":
            call(raw_socket, "DELETE", f"/images/{ident}?force=1")
        elif kind == "tag":
            call(raw_socket, "DELETE", f"/images/{ident}")


def sock(job: Job) -> str:
    return job.socket


def own_network(job: Job, name: str) -> str:
    status, answer = call(sock(job), "POST", "/v1.41/networks/create", {"Name": name})
    assert status == 201, answer
    return str(answer["Id"])


def exists(client: docker.DockerClient, job: Job, name: str) -> bool:
    """Whether the job has a container of this name on the engine."""
    return bool(client.containers.list(all=True, filters={"name": f"^/{job.name}--{name}$"}))


def test_endpoint_network_id_on_create_joins_another_jobs_network(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    fresh: Callable[[str], str],
) -> None:
    front, web = fresh("front"), fresh("web")
    a_net = own_network(pair.a, front)
    b_net = own_network(pair.b, fresh("secret"))
    body = {
        "Image": pair.image,
        "Cmd": ["sleep", "30"],
        "HostConfig": {"NetworkMode": f"{pair.a.name}--{front}"},
        "NetworkingConfig": {"EndpointsConfig": {f"{pair.a.name}--{front}": {"NetworkID": b_net}}},
    }
    # The crossing, on the engine itself: the key names A's network, NetworkID B's.
    status, answer = call(pair.raw, "POST", "/v1.41/containers/create", body)
    assert status == 201, answer
    raw_made.append(("container", answer["Id"]))
    assert call(pair.raw, "POST", f"/containers/{answer['Id']}/start")[0] == 204
    joined = docker_client.containers.get(answer["Id"]).attrs["NetworkSettings"]["Networks"]
    assert b_net in {net["NetworkID"] for net in joined.values()}  # on B's network
    # Through A's job socket: B's network does not exist for A.
    body["HostConfig"] = {"NetworkMode": front}
    body["NetworkingConfig"] = {"EndpointsConfig": {front: {"NetworkID": b_net}}}
    status, answer = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={web}", body)
    assert status == 400, answer
    assert answer["message"] == f"network {b_net} not found"
    assert not exists(docker_client, pair.a, web)
    # ...and A's own network by its id is resolved and used.
    body["NetworkingConfig"] = {"EndpointsConfig": {front: {"NetworkID": a_net[:12]}}}
    status, answer = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={web}", body)
    assert status == 201, answer
    networks = docker_client.containers.get(answer["Id"]).attrs["NetworkSettings"]["Networks"]
    assert {net["NetworkID"] for net in networks.values()} == {a_net}


def test_endpoint_network_id_on_connect_is_resolved_in_the_job(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    fresh: Callable[[str], str],
) -> None:
    front, name = fresh("front"), fresh("c")
    own_network(pair.a, front)
    b_net = own_network(pair.b, fresh("secret"))
    # The crossing, on the engine itself: connect to A's network by its path, with
    # B's network as the endpoint's NetworkID; dockerd attaches to B's.
    body = {"Image": pair.image, "Cmd": ["sleep", "30"]}
    status, answer = call(pair.raw, "POST", "/v1.41/containers/create", body)
    assert status == 201, answer
    raw_made.append(("container", answer["Id"]))
    assert call(pair.raw, "POST", f"/v1.41/containers/{answer['Id']}/start")[0] == 204
    call(pair.raw, "POST", f"/v1.41/networks/{pair.a.name}--{front}/connect",
         {"Container": answer["Id"], "EndpointConfig": {"NetworkID": b_net}})  # fmt: skip
    networks = docker_client.containers.get(answer["Id"]).attrs["NetworkSettings"]["Networks"]
    assert b_net in {net["NetworkID"] for net in networks.values()}
    status, answer = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={name}",
                          {"Image": pair.image, "Cmd": ["sleep", "30"]})  # fmt: skip
    assert status == 201, answer
    cid = answer["Id"]
    status, answer = call(sock(pair.a), "POST", f"/v1.41/networks/{front}/connect",
                          {"Container": name, "EndpointConfig": {"NetworkID": b_net}})  # fmt: skip
    assert status == 404, answer
    assert answer["message"] == f"network {b_net} not found"
    networks = docker_client.containers.get(cid).attrs["NetworkSettings"]["Networks"]
    assert b_net not in {net["NetworkID"] for net in networks.values()}


@pytest.mark.parametrize(
    "legacy",
    [
        {"Binds": ["{b}--{data}:/d"]},
        {"HostConfig": None, "Binds": ["{b}--{data}:/d"]},
        {"VolumesFrom": ["{b}--{holder}"]},
        {"Mounts": [{"Type": "volume", "Source": "{b}--{data}", "Target": "/d"}]},
    ],
)
def test_legacy_top_level_fields_are_refused_for_jobs(
    legacy: dict[str, Any],
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    fresh: Callable[[str], str],
) -> None:
    data, holder = fresh("data"), fresh("holder")
    assert call(sock(pair.b), "POST", "/v1.41/volumes/create", {"Name": data})[0] == 201
    status, made = call(sock(pair.b), "POST", f"/v1.41/containers/create?name={holder}",
                        {"Image": pair.image, "Cmd": ["true"],
                         "HostConfig": {"Binds": [f"{data}:/d"]}})  # fmt: skip
    assert status == 201, made
    text = json.dumps(legacy).replace("{b}", pair.b.name)
    fields = json.loads(text.replace("{data}", data).replace("{holder}", holder))
    body = {"Image": pair.image, "Cmd": ["true"], **fields}
    status, answer = call(pair.raw, "POST", "/v1.41/containers/create", body)
    assert status == 201, answer
    raw_made.append(("container", answer["Id"]))
    mounts = docker_client.containers.get(answer["Id"]).attrs["Mounts"]
    if pair.engine.reads_legacy_host_config:
        # The crossing (20.10): the top-level field mounts B's volume.
        assert f"{pair.b.name}--{data}" in {m.get("Name") for m in mounts}
    else:
        # No hole on this engine (28.5 ignores top-level HostConfig fields); the
        # guard refuses them anyway, for engines that read them.
        assert mounts == []
    name = fresh("legacy")
    status, answer = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={name}", body)
    assert status == 403, answer
    assert answer["message"].startswith("dockmoat: tenancy.unresolved-reference: ")
    assert not exists(docker_client, pair.a, name)


def test_build_network_mode_names_only_the_jobs_networks(
    pair: Pair, raw_made: list[tuple[str, str]], fresh: Callable[[str], str]
) -> None:
    secret = fresh("secret")
    b_net = own_network(pair.b, secret)
    dockerfile = f"FROM {pair.image}\nRUN cat /etc/hosts\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context = buffer.getvalue()

    def build(sock_path: str, mode: str) -> tuple[int, str]:
        connection = _Unix(sock_path)
        try:
            target = f"/v1.41/build?{q(networkmode=mode, rm='1')}"
            headers = {"Content-Type": "application/x-tar"}
            connection.request("POST", target, body=context, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    # The crossing: the engine runs A's build steps on B's network (by B's engine name).
    status, out = build(pair.raw, f"{pair.b.name}--{secret}")
    assert status == 200 and '"errorDetail"' not in out, out
    for line in out.splitlines():
        if "Successfully built" in line:
            raw_made.append(("image", json.loads(line)["stream"].split()[-1]))
    # Through A's socket: B's network does not exist for A (nor B's id).
    for mode in (f"{pair.b.name}--{secret}", b_net):
        status, out = build(sock(pair.a), mode)
        assert status == 400, out
        assert json.loads(out)["message"] == f"network {mode} not found"


def test_a_tag_embedded_in_repo_cannot_write_over_a_shared_tag(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    unique_name: Callable[[str], str],
    fresh: Callable[[str], str],
) -> None:
    shared_repo, src = unique_name("shared"), fresh("src")
    base = docker_client.images.get(pair.image)
    assert base.tag(shared_repo, "latest")  # a host tag: shared, owned by no job
    raw_made.append(("tag", f"{shared_repo}:latest"))
    status, answer = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={src}",
                          {"Image": pair.image, "Cmd": ["true"]})  # fmt: skip
    assert status == 201
    status, committed = call(sock(pair.a), "POST", f"/v1.41/commit?{q(container=src)}")
    assert status == 201, committed
    # dockerd reads repo=<shared>:x with tag=latest as <shared>:latest (the tag
    # parameter replaces the embedded one); the guard must claim that tag.
    target = f"/v1.41/images/{committed['Id']}/tag?{q(repo=shared_repo + ':x', tag='latest')}"
    status, answer = call(sock(pair.a), "POST", target)
    assert status == 403, answer
    assert "tenancy.image-tag" in answer["message"] and f"{shared_repo}:latest" in answer["message"]
    assert docker_client.images.get(f"{shared_repo}:latest").id == base.id
    target = f"/v1.41/commit?{q(container=src, repo=shared_repo + ':x', tag='latest')}"
    status, answer = call(sock(pair.a), "POST", target)
    assert status == 403, answer
    assert docker_client.images.get(f"{shared_repo}:latest").id == base.id


def test_changes_are_read_as_the_builder_reads_them(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    fresh: Callable[[str], str],
) -> None:
    src = fresh("src")
    changes = ["# escape=`", "WORKDIR /pro`", "c/self/fd/8"]
    query = urllib.parse.urlencode([("changes", change) for change in changes])
    status, created = call(pair.raw, "POST", "/v1.41/containers/create",
                           {"Image": pair.image, "Cmd": ["true"]})  # fmt: skip
    assert status == 201
    raw_made.append(("container", created["Id"]))
    status, image = call(pair.raw, "POST", f"/v1.41/commit?container={created['Id']}&{query}")
    assert status == 201, image
    raw_made.append(("image", image["Id"]))
    # The crossing: the builder joined the lines with its escape character.
    assert docker_client.images.get(image["Id"]).attrs["Config"]["WorkingDir"] == (
        "/proc/self/fd/8"
    )
    status, _ = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={src}",
                     {"Image": pair.image, "Cmd": ["true"]})  # fmt: skip
    assert status == 201
    before = {image.id for image in docker_client.images.list(all=True)}
    status, answer = call(sock(pair.a), "POST", f"/v1.41/commit?container={src}&{query}")
    assert status == 403, answer
    assert answer["message"].startswith("dockmoat: containers.proc-workdir: ")
    assert {image.id for image in docker_client.images.list(all=True)} <= before
    target = f"/v1.41/commit?{q(container=src, changes='ONBUILD RUN id')}"
    status, answer = call(sock(pair.a), "POST", target)
    assert status == 403, answer
    assert "tenancy.image-changes" in answer["message"]


def test_oom_score_adj_below_zero_is_refused(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    fresh: Callable[[str], str],
) -> None:
    name = fresh("oom")
    body = {"Image": pair.image, "Cmd": ["true"], "HostConfig": {"OomScoreAdj": -1000}}
    status, answer = call(pair.raw, "POST", "/v1.41/containers/create", body)
    assert status == 201, answer
    raw_made.append(("container", answer["Id"]))
    # The engine takes it: the host's OOM killer would spare this container.
    assert docker_client.containers.get(answer["Id"]).attrs["HostConfig"]["OomScoreAdj"] == -1000
    status, answer = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={name}", body)
    assert status == 403, answer
    assert answer["message"].startswith("dockmoat: containers.resource-bounds: ")
    assert not exists(docker_client, pair.a, name)


def test_since_and_before_filters_answer_for_foreign_as_for_missing(
    pair: Pair, fresh: Callable[[str], str]
) -> None:
    hidden = fresh("hidden")
    status, _ = call(sock(pair.b), "POST", f"/v1.41/containers/create?name={hidden}",
                     {"Image": pair.image, "Cmd": ["true"]})  # fmt: skip
    assert status == 201
    foreign = f"{pair.b.name}--{hidden}"
    # On the engine, the filter finds B's container (200) where a missing one is a 404
    # (Engine 20.10 answers a missing one with 500 "no such container <name>").
    missing = 500 if pair.engine.api <= (1, 41) else 404
    for name, expected in ((foreign, 200), ("dmtest-missing-x", missing)):
        target = f"/v1.41/containers/json?{q(filters=json.dumps({'since': [name]}))}"
        assert call(pair.raw, "GET", target)[0] == expected, (pair.engine, name)
    for name in (foreign, hidden, "dmtest-missing-x"):
        for key in ("since", "before"):
            target = f"/v1.41/containers/json?{q(all='1', filters=json.dumps({key: [name]}))}"
            status, answer = call(sock(pair.a), "GET", target)
            assert (status, answer) == (404, {"message": f"No such container: {name}"})


def test_stats_answers_carry_the_jobs_names(pair: Pair, fresh: Callable[[str], str]) -> None:
    db = fresh("db")
    status, _ = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={db}",
                     {"Image": pair.image, "Cmd": ["sleep", "30"]})  # fmt: skip
    assert status == 201
    assert call(sock(pair.a), "POST", f"/v1.41/containers/{db}/start")[0] == 204
    status, raw = call(pair.raw, "GET", f"/v1.41/containers/{pair.a.name}--{db}/stats?stream=0")
    assert status == 200 and raw["name"] == f"/{pair.a.name}--{db}"  # the engine's name
    client = pair.a.client()
    assert client.containers.get(db).stats(stream=False)["name"] == f"/{db}"
    stream = client.api.stats(db, decode=True, stream=True)
    assert next(stream)["name"] == f"/{db}"
    stream.close()


# --- references inside streamed bodies: a classic build's Dockerfile, a load's tags ---


def context_tar(files: dict[str, bytes], *, links: dict[str, str] | None = None,
                compress: str = "") -> bytes:  # fmt: skip
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compress}") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def post_body(
    sock_path: str, target: str, body: bytes, *, chunked: bool = False
) -> tuple[int, str]:
    connection = _Unix(sock_path)
    try:
        headers = {"Content-Type": "application/x-tar"}
        if chunked:
            connection.putrequest("POST", target)
            connection.putheader("Content-Type", "application/x-tar")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for start in range(0, len(body), 7000):
                piece = body[start : start + 7000]
                connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            connection.send(b"0\r\n\r\n")
        else:
            connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def built_id(out: str) -> str | None:
    for line in out.splitlines():
        if "Successfully built" in line:
            return str(json.loads(line)["stream"].split()[-1])
    return None


def build_in(job: Job, dockerfile: bytes, tag: str) -> str:
    status, out = post_body(job.socket, f"/v1.41/build?{q(t=tag, rm='1')}",
                            context_tar({"Dockerfile": dockerfile}))  # fmt: skip
    assert status == 200 and built_id(out) is not None, out
    return tag


def test_a_classic_build_cannot_start_from_another_jobs_image(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    fresh: Callable[[str], str],
) -> None:
    secret = build_in(pair.b, f"FROM {pair.image}\nRUN echo b-only > /secret\n".encode(),
                      fresh("b-secret"))  # fmt: skip
    b_id = docker_client.images.get(secret).id
    # The crossing: the engine builds FROM B's image, by tag or id, for anyone.
    for ref in (secret, b_id, b_id.removeprefix("sha256:")[:12]):
        status, out = post_body(pair.raw, f"/v1.41/build?{q(rm='1')}",
                                context_tar({"Dockerfile": f"FROM {ref}\n".encode()}))  # fmt: skip
        made = built_id(out)
        assert status == 200 and made is not None, out
    out_tag = fresh("a-out")
    dockerfiles = [
        (f"FROM {secret}\n", {}),
        (f"FROM {b_id}\n", {}),
        (f"FROM {b_id.removeprefix('sha256:')[:12]} AS x\nFROM x\n", {}),
        ("ARG BASE=scratch\nFROM ${BASE}\n", {"BASE": secret}),
        (f"FROM {pair.image}\nCOPY --from={secret} /secret /secret\n", {}),
        (f"# escape=`\nFROM {pair.image}\nCOPY `\n  --from={secret} /secret /s\n", {}),
    ]
    for text, args in dockerfiles:
        target = f"/v1.41/build?{q(t=out_tag, rm='1', buildargs=json.dumps(args))}"
        for compress, chunked in (("", False), ("gz", True)):
            context = context_tar({"Dockerfile": text.encode()}, compress=compress)
            status, out = post_body(sock(pair.a), target, context, chunked=chunked)
            assert status == 404, (text, out)
            assert json.loads(out)["message"].startswith("No such image: "), out
    # A shared base image whose ONBUILD trigger copies from B's image: the trigger runs
    # in A's build, so its COPY --from is checked as A's own.
    status, out = post_body(pair.raw, f"/v1.41/build?{q(rm='1')}", context_tar(
        {"Dockerfile": f"FROM {pair.image}\nONBUILD COPY --from={secret} /secret /s\n".encode()}
    ))  # fmt: skip
    trigger_base = built_id(out)
    assert status == 200 and trigger_base is not None, out
    raw_made.append(("image", trigger_base))
    context = context_tar({"Dockerfile": f"FROM {trigger_base}\n".encode()})
    status, out = post_body(sock(pair.a), f"/v1.41/build?{q(t=out_tag)}", context)
    assert status == 404, out
    assert json.loads(out)["message"].startswith(f"No such image: {secret}"), out
    # The effect: nothing was built under A's tag.
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(out_tag)
    # A's own builds from shared and own images go on, also compressed and chunked.
    own = build_in(pair.a, f"FROM {pair.image}\nRUN echo a > /a\n".encode(), fresh("a-own"))
    for text in (f"FROM {own}\nCOPY --from={pair.image} /bin/sh /sh2\n", f"FROM {pair.image}\n"):
        context = context_tar({"Dockerfile": text.encode(), "x": b"1" * 100_000}, compress="gz")
        status, out = post_body(sock(pair.a), f"/v1.41/build?{q(t=out_tag)}", context,
                                chunked=True)  # fmt: skip
        assert status == 200 and built_id(out) is not None, out


def test_a_build_context_whose_dockerfile_is_a_link_is_refused(
    pair: Pair, docker_client: docker.DockerClient, fresh: Callable[[str], str]
) -> None:
    out_tag = fresh("a-link")
    for context in (
        context_tar({"real": f"FROM {pair.image}\n".encode()}, links={"Dockerfile": "real"}),
        context_tar({"d/Dockerfile": f"FROM {pair.image}\n".encode()}, links={"sub": "d"}),
    ):
        dockerfile = "Dockerfile" if b"real" in context else "sub/Dockerfile"
        target = f"/v1.41/build?{q(t=out_tag, dockerfile=dockerfile)}"
        status, out = post_body(sock(pair.a), target, context)
        assert status == 400, out
        assert json.loads(out)["message"].startswith("dockmoat: api.unreadable-body: "), out
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(out_tag)


@pytest.mark.host_namespaces
def test_a_dockerfile_cannot_pull_or_fetch_from_the_hosts_loopback(
    pair: Pair, fresh: Callable[[str], str]
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    ref = f"127.0.0.1:{port}/{fresh('internal')}:1"
    accepted: list[int] = []
    stop = threading.Event()

    def accept() -> None:  # closes every connection at once: the fetch fails fast
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.close()
            accepted.append(1)

    def connections() -> int:
        count = len(accepted)
        accepted.clear()
        return count

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        context = context_tar({"Dockerfile": f"FROM {ref}\n".encode()})
        # The crossing: the engine's builder fetches from the host's loopback.
        post_body(pair.raw, f"/v1.41/build?{q(rm='1')}", context)
        assert connections() > 0
        status, out = post_body(sock(pair.a), f"/v1.41/build?{q(rm='1')}", context)
        assert status == 403, out
        message = json.loads(out)["message"]
        assert message.startswith("dockmoat: images.registry-address: "), message
        assert "FROM on line 1 of Dockerfile" in message
        assert connections() == 0
        # ADD of a URL: the daemon downloads it, from the host's loopback too.
        text = f"FROM {pair.image}\nADD http://127.0.0.1:{port}/x /x\n"
        context = context_tar({"Dockerfile": text.encode()})
        post_body(pair.raw, f"/v1.41/build?{q(rm='1')}", context)
        assert connections() > 0
        status, out = post_body(sock(pair.a), f"/v1.41/build?{q(rm='1')}", context)
        assert status == 403, out
        message = json.loads(out)["message"]
        assert message.startswith("dockmoat: images.remote-fetch: "), message
        assert "ADD on line 2 of Dockerfile" in message
        assert connections() == 0
    finally:
        stop.set()
        thread.join()
        listener.close()


def saved(docker_client: docker.DockerClient, image: str) -> bytes:
    return b"".join(docker_client.images.get(image).save(named=True))


def retagged(tarball: bytes, tags: list[str], *, legacy: bool = False) -> bytes:
    """A `docker save` tarball whose manifest.json names other tags (or, legacy, whose
    manifest.json is gone and whose repositories file names them)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(tarball)) as source,
        tarfile.open(fileobj=out, mode="w") as tar,
    ):
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "manifest.json":
                if legacy:
                    continue
                manifest = json.loads(data or b"")
                manifest[0]["RepoTags"] = tags
                data = json.dumps(manifest).encode()
            elif member.name == "repositories" and data is not None:
                layer = next(iter(next(iter(json.loads(data).values())).values()))
                repositories: dict[str, dict[str, str]] = {}
                for tag in tags:
                    repo, _, name = tag.rpartition(":")
                    repositories.setdefault(repo, {})[name] = layer
                data = json.dumps(repositories).encode()
            elif member.name == "index.json":
                continue  # the OCI index names the tags too (Engine 25+)
            if data is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return out.getvalue()


@dataclass
class LoadCase:
    shared: str  # a host tag on the shared base image: no job's
    base: Any  # that image
    own: str  # an image job A built


@pytest.fixture
def load_case(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    unique_name: Callable[[str], str],
    fresh: Callable[[str], str],
) -> LoadCase:
    shared = f"{unique_name('shared')}:latest"
    base = docker_client.images.get(pair.image)
    assert base.tag(shared)
    raw_made.append(("tag", shared))
    own = build_in(pair.a, f"FROM {pair.image}\nRUN echo a > /own\n".encode(), fresh("a-own"))
    return LoadCase(shared, base, own)


def test_a_load_cannot_move_a_shared_tag(
    pair: Pair,
    docker_client: docker.DockerClient,
    load_case: LoadCase,
    unique_name: Callable[[str], str],
) -> None:
    shared, base, own = load_case.shared, load_case.base, load_case.own
    tarball = retagged(saved(docker_client, own), [shared])
    own_id = docker_client.images.get(own).id
    # The crossing: on the engine, the load moves the shared tag to A's image.
    status, out = post_body(pair.raw, "/v1.41/images/load?quiet=1", tarball)
    assert status == 200, out
    assert docker_client.images.get(shared).id == own_id
    assert base.tag(shared)  # set back
    # Through A's socket: refused before the load, and the tag never moved.
    status, out = post_body(sock(pair.a), "/v1.41/images/load?quiet=1", tarball, chunked=True)
    assert status == 403, out
    assert json.loads(out)["message"].startswith("dockmoat: tenancy.image-tag: "), out
    assert docker_client.images.get(shared).id == base.id
    # A save/load cache of the shared image itself changes nothing and goes on.
    status, out = post_body(sock(pair.a), "/v1.41/images/load?quiet=1",
                            retagged(saved(docker_client, shared), [shared]))  # fmt: skip
    assert status == 200, out
    assert docker_client.images.get(shared).id == base.id
    # A's own tag, and a free one, load as before.
    free = f"{unique_name('free')}:1"
    tarball = retagged(saved(docker_client, own), [f"{own}:latest", free])
    status, out = post_body(sock(pair.a), "/v1.41/images/load?quiet=1", tarball)
    assert status == 200 and "errorDetail" not in out, out
    assert docker_client.images.get(free).id == own_id


def test_a_legacy_load_tarball_is_refused(
    pair: Pair, docker_client: docker.DockerClient, load_case: LoadCase
) -> None:
    shared, base = load_case.shared, load_case.base
    tarball = retagged(saved(docker_client, load_case.own), [shared], legacy=True)
    status, out = post_body(pair.raw, "/v1.41/images/load", tarball)
    if status == 200 and "errorDetail" not in out:
        # The crossing (where the engine still loads the legacy format): the tag moved,
        # and dockerd printed no "Loaded image" line to undo it by.
        assert docker_client.images.get(shared).id != base.id
        assert "Loaded image" not in out
        assert base.tag(shared)
    status, out = post_body(sock(pair.a), "/v1.41/images/load", tarball)
    assert status == 403, out
    assert json.loads(out)["message"].startswith("dockmoat: tenancy.load-format: "), out
    assert docker_client.images.get(shared).id == base.id


def test_a_failed_build_releases_the_tag_it_claimed(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    unique_name: Callable[[str], str],
) -> None:
    name = f"{unique_name('failed')}:1"
    failing = context_tar({"Dockerfile": f"FROM {pair.image}\nRUN false\n".encode()})
    status, out = post_body(sock(pair.a), f"/v1.41/build?{q(t=name, rm='1')}", failing)
    assert status == 200 and "errorDetail" in out, out  # the build failed
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(name)
    # The claim went with the failure: job B may take the name (it was refused with
    # tenancy.image-tag, "in use outside job A", while no image carried it) ...
    deadline = time.monotonic() + 5
    plain = context_tar({"Dockerfile": f"FROM {pair.image}\n".encode()})
    while True:
        status, out = post_body(sock(pair.b), f"/v1.41/build?{q(t=name, rm='1')}", plain)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the release follows the failure line by a look-up
    assert status == 200 and built_id(out) is not None, out
    b_image = docker_client.images.get(name).id
    # ... and job A, which never had it, cannot write over it now.
    status, out = post_body(sock(pair.a), f"/v1.41/build?{q(t=name, rm='1')}", failing)
    assert status == 403 and "tenancy.image-tag" in out, out
    assert docker_client.images.get(name).id == b_image


def test_a_failed_commit_releases_the_tag_it_claimed(
    pair: Pair,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    fresh: Callable[[str], str],
    unique_name: Callable[[str], str],
) -> None:
    """A claim becomes real only with the image: a commit dockerd refuses (a config it
    cannot read) leaves the name free for others."""
    box = fresh("box")
    status, answer = call(sock(pair.a), "POST", f"/v1.41/containers/create?name={box}",
                          {"Image": pair.image, "Cmd": ["true"]})  # fmt: skip
    assert status == 201, answer
    name = unique_name("claimed")
    commit = f"/v1.41/commit?{q(container=box, repo=name, tag='1')}"
    status, answer = call(sock(pair.a), "POST", commit, {"Cmd": 5})
    # dockerd cannot read the config: nothing committed (400 on 28.5, 500 on 20.10)
    assert status in (400, 500), answer
    deadline = time.monotonic() + 5
    target = f"/v1.41/images/{pair.image}/tag?{q(repo=name, tag='1')}"
    while True:  # the release follows the failed answer by a look-up
        status, answer = call(sock(pair.b), "POST", target)
        if status == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 201, answer  # job B may take the name: job A never had it
    raw_made.append(("tag", f"{name}:1"))


def test_a_close_untags_only_what_still_names_the_jobs_image(
    serve: Serve,
    raw_socket: str,
    busybox_image: str,
    docker_client: docker.DockerClient,
    raw_made: list[tuple[str, str]],
    unique_name: Callable[[str], str],
) -> None:
    """Clean-up by ownership, not by name: the job's tag that the host moved to an image
    of its own since stays the host's; the job's tag that still names what the job
    tagged goes."""
    job = serve.open_job(job_name("close"))
    moved, kept = unique_name("moved"), unique_name("kept")
    for name in (moved, kept):
        target = f"/v1.41/images/{busybox_image}/tag?{q(repo=name, tag='1')}"
        status, answer = call(sock(job), "POST", target)
        assert status == 201, answer
    # The host moves one of them to an image of its own (a raw `docker build -t`).
    host_image = docker_client.images.build(
        fileobj=io.BytesIO(f"FROM {busybox_image}\nLABEL host=1\n".encode()),
        tag=f"{moved}:1", rm=True,
    )[0]  # fmt: skip
    raw_made.append(("image", host_image.id))
    time.sleep(0.5)  # the job's tags were recorded by a look-up after their answers
    removed = job.close()
    assert f"{kept}:1" in removed["images"], removed
    assert any(entry.startswith(f"image {moved}:1 ") for entry in removed["kept"]), removed
    assert docker_client.images.get(f"{moved}:1").id == host_image.id
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"{kept}:1")


def test_an_import_is_the_jobs_and_goes_with_its_close(
    serve: Serve, docker_client: docker.DockerClient, unique_name: Callable[[str], str]
) -> None:
    """An import's image is recorded as the job's from its progress (it carries no
    owner label): the close untags it and removes it."""
    job = serve.open_job(job_name("import"))
    name = unique_name("imported")
    target = f"/v1.41/images/create?{q(fromSrc='-', repo=name, tag='1')}"
    status, out = post_body(sock(job), target, context_tar({"hello": b"x"}))
    assert status == 200 and "error" not in out, out
    image = docker_client.images.get(f"{name}:1")
    removed = job.close()
    assert f"{name}:1" in removed["images"], removed
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image.id)
