"""Two jobs on one `dockmoat serve`: each endpoint family, tried by one job on the other's
resources, answers "No such ..." and the engine shows the resource unchanged."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from tenancy_helpers import DOCKER_OLD, Job, Serve, job_name


@dataclass
class Pair:
    a: Job
    b: Job
    db_id: str  # a's running container "db"
    exec_id: str  # an exec of a's "db"
    image_tag: str  # an image a built


def _http(sock_path: str, method: str, path: str, body: object = None) -> tuple[int, str]:
    """One raw request on a job socket (for endpoints the CLI does not reach directly)."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} /v1.41{path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(sock_path)
        sock.sendall(head.encode() + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


@pytest.fixture(scope="module")
def pair(
    serve: Serve, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    a = serve.open_job(job_name("a"))
    b = serve.open_job(job_name("b"))
    try:
        db_id = a.docker(
            "run", "-d", "--network", "none", "--name", "db", busybox_image, "sleep", "600"
        ).stdout.strip()
        a.docker("volume", "create", "data")
        a.docker("network", "create", "net")
        exec_id = a.client().api.exec_create("db", ["true"])["Id"]
        context = Path(tmp_path_factory.mktemp("ctx"))
        (context / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo a > /a\n")
        tag = f"{a.name}-app:1"
        a.docker("build", "-q", "--network", "none", "-t", tag, str(context))
        yield Pair(a, b, db_id, exec_id, tag)
    finally:
        for job in (a, b):
            serve.job("close", job.name, check=False)


def _state(client: docker.DockerClient, container_id: str) -> tuple[object, ...]:
    info = client.api.inspect_container(container_id)
    return (
        info["Name"],
        info["State"]["Status"],
        info["State"]["StartedAt"],
        info["HostConfig"]["Memory"],
        info["Config"]["Labels"].get("dockmoat.tenant"),
    )


CONTAINER_ATTEMPTS = [
    ("container", "inspect", "{ref}"),
    ("logs", "{ref}"),
    ("top", "{ref}"),
    ("port", "{ref}"),
    ("diff", "{ref}"),
    ("stats", "--no-stream", "{ref}"),
    ("cp", "{ref}:/etc/passwd", "-"),
    ("export", "{ref}"),
    ("exec", "{ref}", "true"),
    ("commit", "{ref}", "stolen:1"),
    ("update", "--memory", "64m", "{ref}"),
    ("rename", "{ref}", "mine"),
    ("pause", "{ref}"),
    ("kill", "{ref}"),
    ("stop", "-t", "1", "{ref}"),
    ("restart", "-t", "1", "{ref}"),
    ("wait", "{ref}"),
    ("rm", "-f", "{ref}"),
]


@pytest.mark.parametrize(
    "attempt", CONTAINER_ATTEMPTS, ids=lambda a: "-".join(p for p in a[:2] if "{" not in p)
)
def test_other_jobs_containers_do_not_exist(
    pair: Pair, docker_client: docker.DockerClient, attempt: tuple[str, ...]
) -> None:
    before = _state(docker_client, pair.db_id)
    for ref in ("db", f"{pair.a.name}--db", pair.db_id, pair.db_id[:12]):
        args = [part.format(ref=ref) for part in attempt]
        result = pair.b.docker(*args, check=False)
        # `rm -f` of a missing container exits 0 in newer CLIs; the daemon's answer shows.
        assert result.returncode != 0 or args[:2] == ["rm", "-f"], f"{args}: {result.stdout}"
        assert f"No such container: {ref}" in result.stderr, result.stderr
    assert _state(docker_client, pair.db_id) == before
    docker_client.images.list(name="stolen")  # commit made nothing
    assert docker_client.api.images(name="stolen") == []


def test_attach_and_archive_and_exec_by_raw_api(
    pair: Pair, docker_client: docker.DockerClient
) -> None:
    before = _state(docker_client, pair.db_id)
    sock = pair.b.socket
    for method, path in [
        ("POST", f"/containers/{pair.db_id}/attach?stream=1&stdout=1"),
        ("GET", f"/containers/{pair.db_id}/attach/ws?stream=1"),
        ("GET", f"/containers/{pair.db_id}/archive?path=/etc"),
        ("HEAD", f"/containers/{pair.db_id}/archive?path=/etc"),
        ("POST", f"/containers/{pair.db_id}/resize?h=10&w=10"),
        ("POST", f"/containers/{pair.db_id}/exec"),
    ]:
        status, _ = _http(sock, method, path, {"Cmd": ["true"]} if path.endswith("exec") else None)
        assert status == 404, (method, path)
    for method, path in [
        ("GET", f"/exec/{pair.exec_id}/json"),
        ("POST", f"/exec/{pair.exec_id}/start"),
        ("POST", f"/exec/{pair.exec_id}/resize?h=1&w=1"),
    ]:
        status, body = _http(sock, method, path, {"Detach": True} if "start" in path else None)
        assert status == 404 and "No such exec instance" in body, (method, path, body)
    assert docker_client.api.exec_inspect(pair.exec_id)["Running"] is False
    assert docker_client.api.exec_inspect(pair.exec_id)["Pid"] == 0  # never started
    assert _state(docker_client, pair.db_id) == before


def test_lists_and_prunes_see_only_the_job(pair: Pair, docker_client: docker.DockerClient) -> None:
    assert pair.b.docker("ps", "-aq").stdout.strip() == ""
    assert pair.b.docker("volume", "ls", "-q").stdout.strip() == ""
    networks = set(pair.b.docker("network", "ls", "--format", "{{.Name}}").stdout.split())
    assert networks <= {"bridge", "host", "none"}
    images = pair.b.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert pair.image_tag not in images
    for prune in (
        ["container", "prune", "-f"],
        ["volume", "prune", "-f"],
        ["network", "prune", "-f"],
        ["image", "prune", "-af"],
    ):
        pair.b.docker(*prune)
    pair.b.docker("system", "df")
    assert docker_client.api.inspect_container(pair.db_id)["State"]["Running"]
    assert docker_client.api.inspect_volume(f"{pair.a.name}--data")
    assert docker_client.api.inspect_network(f"{pair.a.name}--net")
    assert docker_client.api.images(name=pair.image_tag.split(":")[0])
    # b's own view of a's list entries through the older CLI, too.
    assert pair.b.docker("ps", "-aq", cli=DOCKER_OLD).stdout.strip() == ""


def test_other_jobs_volumes_networks_images_do_not_exist(
    pair: Pair, docker_client: docker.DockerClient, busybox_image: str, tmp_path: Path
) -> None:
    for args, message in [
        (("volume", "inspect", "data"), "no such volume"),
        (("volume", "rm", "data"), "no such volume"),
        (("volume", "rm", f"{pair.a.name}--data"), "no such volume"),
        (("network", "inspect", "net"), "network net not found"),
        (("network", "rm", "net"), "not found"),
        (("network", "connect", "net", "db"), "not found"),
        (("image", "inspect", pair.image_tag), "No such image"),
        (("rmi", pair.image_tag), "No such image"),
        (("tag", pair.image_tag, "x:1"), "No such image"),
        (("history", pair.image_tag), "No such image"),
        (("save", "-o", str(tmp_path / "x.tar"), pair.image_tag), "No such image"),
        (("run", "--rm", "--pull", "never", pair.image_tag), "No such image"),
        (
            ("run", "--rm", "--network", "none", "--volumes-from", "db", busybox_image, "true"),
            "No such container: db",
        ),
        (
            ("run", "--rm", "--network", "container:db", busybox_image, "true"),
            "No such container: db",
        ),
        (("run", "--rm", "--network", "net", busybox_image, "true"), "network net not found"),
    ]:
        result = pair.b.docker(*args, check=False)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
    assert (
        docker_client.api.inspect_volume(f"{pair.a.name}--data")["Labels"]["dockmoat.tenant"]
        == pair.a.name
    )
    assert docker_client.api.inspect_network(f"{pair.a.name}--net")["Containers"] == {}
    assert docker_client.api.images(name=pair.image_tag.split(":")[0])


def test_shared_images_are_usable_not_removable(pair: Pair, busybox_image: str) -> None:
    assert (
        pair.b.docker(
            "run", "--rm", "--network", "none", busybox_image, "echo", "ok"
        ).stdout.strip()
        == "ok"
    )
    pair.b.docker("image", "inspect", busybox_image)
    result = pair.b.docker("rmi", busybox_image, check=False)
    assert result.returncode != 0 and "tenancy.shared-image" in result.stderr
    result = pair.b.docker("tag", busybox_image, busybox_image, check=False)  # retag over shared
    assert result.returncode != 0 and "tenancy.image-tag" in result.stderr
    pair.b.docker("image", "inspect", busybox_image)


def test_build_and_commit_cannot_write_over_shared_or_foreign_tags(
    pair: Pair,
    busybox_image: str,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The red-team report: build -t and commit retagging a shared or another job's tag."""
    before = {tag: docker_client.images.get(tag).id for tag in (busybox_image, pair.image_tag)}
    context = Path(tmp_path_factory.mktemp("ctx"))
    (context / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo b > /b\n")
    own = pair.b.docker(
        "run", "-d", "--network", "none", busybox_image, "sleep", "600"
    ).stdout.strip()
    for tag in before:
        result = pair.b.docker(
            "build", "-q", "--network", "none", "-t", tag, str(context), check=False
        )
        assert result.returncode != 0 and "tenancy.image-tag" in result.stderr, tag
        result = pair.b.docker("commit", own, tag, check=False)
        assert result.returncode != 0 and "tenancy.image-tag" in result.stderr, tag
        # A second -t naming the tag does not slip by behind a free first one.
        result = pair.b.docker(
            "build", "-q", "--network", "none", "-t", f"{pair.b.name}-free:1", "-t", tag,
            str(context), check=False,
        )  # fmt: skip
        assert result.returncode != 0 and "tenancy.image-tag" in result.stderr, tag
    after = {tag: docker_client.images.get(tag).id for tag in before}
    assert after == before
    pair.b.docker("rm", "-f", own)


def test_a_load_that_would_move_a_shared_tag_is_refused(
    pair: Pair,
    busybox_image: str,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The tags are inside a load's tarball, read as it streams past: a load that would
    move a tag that is not the job's is refused before it completes."""
    shared = f"dmtest-shared-{secrets.token_hex(4)}:1"
    context = Path(tmp_path_factory.mktemp("evil"))
    (context / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo evil > /evil\n")
    evil, _ = docker_client.images.build(
        path=str(context), tag=shared, network_mode="none", rm=True
    )
    tar = context / "evil.tar"
    with tar.open("wb") as out:
        for chunk in evil.save(named=True):
            out.write(chunk)
    original = docker_client.images.get(busybox_image)
    original.tag(shared)  # the shared tag names the shared image again; the tar says evil
    docker_client.images.remove(evil.id, force=True)
    try:
        # The same image loaded again (a save/load cache) changes nothing.
        same = Path(tmp_path_factory.mktemp("same")) / "same.tar"
        pair.b.docker("save", "-o", str(same), shared)
        pair.b.docker("load", "-i", str(same))
        assert docker_client.images.get(shared).id == original.id

        result = pair.b.docker("load", "-i", str(tar), check=False)
        assert result.returncode != 0
        assert f"dockmoat: tenancy.image-tag: the tag {shared} is in use" in result.stderr
        assert docker_client.images.get(shared).id == original.id
        result = pair.b.docker(
            "run", "--rm", "--network", "none", shared, "cat", "/evil", check=False
        )
        assert result.returncode != 0  # the shared image, not the loaded one
        result = pair.a.docker(
            "run", "--rm", "--network", "none", shared, "cat", "/evil", check=False
        )
        assert result.returncode != 0
    finally:
        docker_client.images.remove(shared)
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(evil.id, force=True)


def test_rm_all_in_one_job_leaves_the_other_running(
    pair: Pair, docker_client: docker.DockerClient, busybox_image: str
) -> None:
    pair.b.docker("run", "-d", "--network", "none", busybox_image, "sleep", "600")
    pair.b.docker("run", "-d", "--network", "none", busybox_image, "sleep", "600")
    ids = pair.b.docker("ps", "-q").stdout.split()
    assert len(ids) == 2
    pair.b.docker("rm", "-f", *ids)
    assert pair.b.docker("ps", "-aq").stdout.strip() == ""
    assert docker_client.api.inspect_container(pair.db_id)["State"]["Running"]
    assert pair.a.docker("ps", "-q").stdout.split() == [pair.db_id[:12]]


def test_same_names_in_two_jobs_do_not_collide(pair: Pair, busybox_image: str) -> None:
    pair.b.docker("run", "-d", "--network", "none", "--name", "db", busybox_image, "sleep", "600")
    assert pair.b.docker("inspect", "-f", "{{.Name}}", "db").stdout.strip() == "/db"
    assert pair.a.docker("inspect", "-f", "{{.Id}}", "db").stdout.strip() == pair.db_id
    pair.b.docker("volume", "create", "data")
    pair.b.docker("network", "create", "net")
    assert pair.b.docker("volume", "ls", "-q").stdout.split() == ["data"]
    pair.b.docker("rm", "-f", "db")
    pair.b.docker("volume", "rm", "data")
    pair.b.docker("network", "rm", "net")
    assert pair.a.docker("volume", "ls", "-q").stdout.split() == ["data"]


def test_events_show_only_the_job(pair: Pair, busybox_image: str) -> None:
    pair.a.docker("run", "--rm", "--network", "none", "--name", "evt", busybox_image, "true")
    pair.b.docker("run", "--rm", "--network", "none", "--name", "mine", busybox_image, "true")
    # `--until 0s` is "now" in whole seconds: let the second of the last event pass.
    time.sleep(1.5)
    events_b = pair.b.docker(
        "events", "--since", "60s", "--until", "0s", "--format", "{{json .}}"
    ).stdout.splitlines()
    names = {json.loads(line)["Actor"]["Attributes"].get("name") for line in events_b}
    assert "mine" in names
    assert "evt" not in names and f"{pair.a.name}--evt" not in names
    assert all(pair.a.name not in line for line in events_b)
    # Filters name the job's own containers by the names it chose.
    filtered = pair.b.docker(
        "events",
        "--since",
        "60s",
        "--until",
        "0s",
        "-f",
        "container=mine",
        "--format",
        "{{.Action}}",
    ).stdout.split()
    assert "start" in filtered
