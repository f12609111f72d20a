"""BuildKit through `dockmoat serve` (baseline, a tenant listener) with the real clients.

buildx 0.29 (the current CLI's `docker build`), buildx 0.13 (CLI 26.1), the 20.10 CLI
with DOCKER_BUILDKIT=1 (`/session` + `/build?version=2`), Compose 2.40 and 2.26. Every
refusal is first shown to take effect on the raw socket, then refused through the
guard with the guard's reason printed, and its effect checked on the engine.
"""

from __future__ import annotations

import http.server
import os
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from gwserve import Served

from harness.clients import client
from support.docker_cli import build

DOCKER = client("docker") or "docker"
DOCKER_26 = client("docker-26.1")
DOCKER_20 = client("docker-20.10")
BUILDKIT = {"DOCKER_BUILDKIT": "1"}

#: (CLI, what it is): every `docker build` here goes through BuildKit.
BUILDERS = [
    pytest.param(DOCKER, id="buildx-0.29"),
    pytest.param(DOCKER_26, id="buildx-0.13"),
    pytest.param(DOCKER_20, id="cli-20.10-buildkit"),
]

DOCKERFILE = """\
FROM {image} AS base
ARG GREETING=hello
RUN --mount=type=cache,target=/cache echo "$GREETING" > /cache/g && cp /cache/g /greeting
RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-size
RUN <<EOT
echo heredoc > /heredoc
EOT
FROM {image} AS final
COPY --link --from=base /greeting /heredoc /secret-size /
LABEL stage=final
FROM final AS extra
RUN echo extra > /extra
"""


@pytest.fixture
def context(tmp_path: Path, busybox_image: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(image=busybox_image))
    (ctx / "tok").write_text("s3cr3t\n")
    return ctx


@pytest.fixture
def images(tags: list[str]) -> list[str]:
    """Image tags a test made, removed when it ends (tests/engine/conftest.py's `tags`)."""
    return tags


def build_foreign_image(
    docker_client: docker.DockerClient, busybox_image: str, where: Path, tag: str
) -> None:
    """`tag`: another tenant's image, made in folder `where` on the engine with that
    tenant's owner label."""
    where.mkdir()
    (where / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo theirs > /theirs\n")
    docker_client.images.build(path=str(where), tag=tag, network_mode="none", rm=True,
                               labels={"dockmoat.tenant": "someone-else"})  # fmt: skip


class Listener:
    """An HTTP listener on the host's loopback that records every request it gets."""

    def __init__(self) -> None:
        hits: list[str] = []
        connections: list[str] = []
        self.hits = hits
        self.connections = connections  # also TLS attempts, which never become requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle(self) -> None:
                connections.append(str(self.client_address))
                super().handle()

            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"reached")

            do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


@pytest.mark.parametrize("cli", BUILDERS)
def test_a_full_dockerfile_builds_through_the_guard(
    cli: str | None,
    tenant: Served,
    context: Path,
    images: list[str],
    unique_name: Callable[[str], str],
    docker_client: docker.DockerClient,
) -> None:
    tag = unique_name("bk") + ":1"
    images.append(tag)
    args = ("build", "--secret", "id=tok,src=tok", "--build-arg", "GREETING=hi",
            "--target", "final", "-t", tag, ".")  # fmt: skip
    result = build(cli, tenant.host, *args, cwd=context)
    assert result.returncode == 0, result.stderr
    image = docker_client.images.get(tag)
    labels = image.labels
    assert labels["dockmoat.tenant"] == tenant.tenant  # the tenant's image, like build -t
    assert labels["stage"] == "final"
    out = docker_client.containers.run(
        tag, ["sh", "-c", "cat /greeting /heredoc /secret-size; ls /extra || true"], remove=True
    )
    assert out.decode().split()[:3] == ["hi", "heredoc", "7"]
    if cli != DOCKER_20:  # buildx's Solve, decided and rewritten (source policy, label)
        solves = tenant.audit_where(route="buildkit.Control.Solve", decision="rewrite")
        assert solves, tenant.audit_entries()[-5:]
    assert b"extra" not in out.split(b"\n")[-2:]  # --target stopped before the extra stage


def test_outputs_to_the_client_local_and_tar(tenant: Served, context: Path, tmp_path: Path) -> None:
    local = tmp_path / "out"
    result = build(DOCKER, tenant.host, "build", "--secret", "id=tok,src=tok", "--target",
                   "final", "--output", f"type=local,dest={local}", ".", cwd=context)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (local / "greeting").read_text() == "hello\n"
    tar = tmp_path / "out.tar"
    result = build(DOCKER, tenant.host, "build", "--secret", "id=tok,src=tok", "--target",
                   "final", "--output", f"type=tar,dest={tar}", ".", cwd=context)  # fmt: skip
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(["tar", "tf", str(tar)], capture_output=True, text=True, check=True)
    assert "heredoc" in listing.stdout.split()


@pytest.mark.parametrize("cli", [DOCKER, DOCKER_26], ids=["compose-2.40", "compose-2.26"])
def test_compose_build_and_up_build(
    cli: str | None,
    tenant: Served,
    context: Path,
    images: list[str],
    unique_name: Callable[[str], str],
) -> None:
    project = unique_name("bkc")
    tag = project + "-app:1"
    images.append(tag)
    (context / "compose.yaml").write_text(
        "services:\n  app:\n    image: " + tag + "\n    build:\n      context: .\n"
        "      target: final\n      secrets: [tok]\n    command: [cat, /greeting]\n"
        "secrets:\n  tok:\n    file: ./tok\n"
    )
    built = build(cli, tenant.host, "compose", "-p", project, "build", cwd=context)
    assert built.returncode == 0, built.stderr
    up = build(cli, tenant.host, "compose", "-p", project, "up", "--build", cwd=context)
    try:
        assert up.returncode == 0, up.stderr
        assert "hello" in up.stdout
    finally:
        build(cli, tenant.host, "compose", "-p", project, "down", cwd=context)


def test_network_host_reaches_the_host_on_the_raw_socket_and_is_refused_through_the_guard(
    tenant: Served,
    docker_host: str,
    listener: Listener,
    tmp_path: Path,
    busybox_image: str,
    images: list[str],
) -> None:
    ctx = tmp_path / "hostnet"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\n"
        f"ARG NONCE\nRUN --network=host wget -qO- http://127.0.0.1:{listener.port}/$NONCE\n"
    )
    raw = build(DOCKER, docker_host, "build", "-q", "--no-cache", "--allow", "network.host",
                "--build-arg", "NONCE=raw", ".", cwd=ctx)  # fmt: skip
    assert raw.returncode == 0, raw.stderr
    images.append(raw.stdout.strip())  # the untagged image, by id
    assert "/raw" in listener.hits  # the build step reached the host's loopback
    attempts = [
        (DOCKER, ["--allow", "network.host"]),
        (DOCKER, ["--network", "host"]),
        (DOCKER_26, ["--allow", "network.host"]),
        (DOCKER_20, ["--network", "host"]),
    ]
    for cli, extra in attempts:
        nonce = f"guard{len(listener.hits)}"
        result = build(cli, tenant.host, "build", "--no-cache", *extra, "--build-arg",
                       f"NONCE={nonce}", ".", cwd=ctx)  # fmt: skip
        assert result.returncode != 0
        assert "build.network-host" in result.stderr, (cli, extra, result.stderr)
        assert f"/{nonce}" not in listener.hits
    # Each decided BuildKit call is in the audit log, the refused ones with their rule.
    calls = tenant.audit_where(route="buildkit.Control.Solve", decision="deny")
    assert any(e["rule"] == "build.network-host" for e in calls), calls
    assert all(e["tenant"] == tenant.tenant for e in calls)
    # without the entitlement the daemon refuses the step itself, on both sockets
    plain = build(DOCKER, tenant.host, "build", "--no-cache", "--build-arg", "NONCE=plain", ".",
                  cwd=ctx)  # fmt: skip
    assert plain.returncode != 0
    assert "/plain" not in listener.hits


def test_a_push_to_a_loopback_registry_is_refused(
    tenant: Served, docker_host: str, listener: Listener, context: Path, images: list[str]
) -> None:
    target = f"127.0.0.1:{listener.port}/dmtest/pushed:1"
    images.append(target)  # the raw build stores the image under that name before pushing
    output = f"type=image,name={target},push=true"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=docker_host, **BUILDKIT)
    argv = [DOCKER, "build", "--secret", "id=tok,src=tok", "--target", "final", "--output",
            output, "."]  # fmt: skip
    with subprocess.Popen(argv, cwd=context, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as raw:  # fmt: skip
        deadline = time.monotonic() + 60
        while not listener.hits and raw.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        raw.kill()  # the daemon retries the push for a while; its first connection is enough
    assert any(hit.startswith("/v2/") for hit in listener.hits), listener.hits
    listener.hits.clear()
    guarded = build(DOCKER, tenant.host, "build", "--secret", "id=tok,src=tok", "--target",
                    "final", "--output", output, ".", cwd=context)  # fmt: skip
    assert guarded.returncode != 0
    assert "build.exporters" in guarded.stderr
    assert listener.hits == []


def test_insecure_steps_are_refused_with_the_guards_reason(
    tenant: Served, tmp_path: Path, busybox_image: str
) -> None:
    ctx = tmp_path / "insecure"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN --security=insecure id\n")
    result = build(DOCKER, tenant.host, "build", "--allow", "security.insecure", ".", cwd=ctx)
    assert result.returncode != 0
    assert "build.insecure" in result.stderr


def test_a_build_through_the_guard_never_falls_back_to_a_container_builder(
    tenant: Served, tmp_path: Path
) -> None:
    result = build(DOCKER, tenant.host, "buildx", "ls", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    default = [line for line in result.stdout.splitlines() if line.startswith("default")]
    assert default and "docker" in default[0]
    assert "docker-container" not in result.stdout


def test_build_tag_save_load_with_buildkit(
    tenant: Served,
    busybox_image: str,
    images: list[str],
    unique_name: Callable[[str], str],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """The BuildKit variant of test_ci_day.py::test_build_tag_save_load (20 MiB context)."""
    tag = unique_name("bkimg") + ":1"
    images.append(tag)
    ctx = tmp_path / "big"
    ctx.mkdir()
    (ctx / "blob").write_bytes(os.urandom(20 * 1024 * 1024))
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY blob /blob\nRUN echo built >/b\n")
    result = build(DOCKER, tenant.host, "build", "-q", "-t", tag, ".", cwd=ctx)
    assert result.returncode == 0, result.stderr
    out = docker_client.containers.run(tag, ["sh", "-c", "cat /b; wc -c </blob"], remove=True)
    assert out.split() == [b"built", b"20971520"]
    tar = tmp_path / "img.tar"
    saved = build(DOCKER, tenant.host, "save", "-o", str(tar), tag, cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    removed = build(DOCKER, tenant.host, "rmi", tag, cwd=tmp_path)  # the tenant's own image
    assert removed.returncode == 0, removed.stderr
    loaded = build(DOCKER, tenant.host, "load", "-i", str(tar), cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr


@pytest.mark.parametrize("cli", [pytest.param(DOCKER, id="buildx-0.29"),
                                 pytest.param(DOCKER_20, id="cli-20.10-buildkit")])  # fmt: skip
def test_sources_at_internal_addresses_are_fetched_on_the_raw_socket_and_refused_through_the_guard(
    cli: str | None,
    tenant: Served,
    docker_host: str,
    listener: Listener,
    tmp_path: Path,
    busybox_image: str,
) -> None:
    """The Dockerfile's own sources never cross the guard: buildx's Solve gets a source
    policy that makes BuildKit refuse them (`build.sources`); a /build?version=2 build's
    Dockerfile is read as the session sends it and its sources decided as a classic
    build's are (`images.registry-address`, ...); a custom frontend is refused there."""
    port = listener.port
    cases = {
        "from": f"FROM 127.0.0.1:{port}/dmtest/base:1\nRUN true\n",
        "add": f"FROM {busybox_image}\nADD http://127.0.0.1:{port}/file /file\n",
        "syntax": f"# syntax=127.0.0.1:{port}/dmtest/frontend:1\nFROM {busybox_image}\n",
    }
    for name, text in cases.items():
        ctx = tmp_path / name
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(text)
        listener.connections.clear()
        build(cli, docker_host, "build", "--no-cache", ".", cwd=ctx)
        assert listener.connections, f"{name}: the raw daemon did not connect to the loopback"
        listener.connections.clear()
        guarded = build(cli, tenant.host, "build", "--no-cache", ".", cwd=ctx)
        assert guarded.returncode != 0
        if name != "syntax":  # the Dockerfile read as it travels: the guard's own reason
            assert "dockmoat: images." in guarded.stderr, (name, guarded.stderr)
        elif cli == DOCKER:  # a frontend image: buildx's source policy refuses it
            assert "denied by policy" in guarded.stderr, (name, guarded.stderr)
        else:
            assert "names a custom frontend" in guarded.stderr, guarded.stderr
        assert listener.connections == [], name


def test_where_buildkit_is_off_every_client_prints_why(
    serve: Callable[..., Served], context: Path
) -> None:
    """restricted: no HTTP 403 on /grpc (buildx would boot a docker-container builder and
    try to pull moby/buildkit); the guard answers in HTTP/2 and each client prints it."""
    restricted = serve("--profile", "restricted")
    for cli, args in (
        (DOCKER, ["build", "."]),
        (DOCKER_26, ["build", "."]),
        (DOCKER_20, ["build", "."]),
    ):
        result = build(cli, restricted.host, *args, cwd=context, timeout=60)
        assert result.returncode != 0
        assert "dockmoat: system.session: " in result.stderr, (cli, result.stderr)
        assert "docker-container" not in result.stderr
        assert "moby/buildkit" not in result.stderr


@pytest.mark.parametrize(
    "cli",
    [
        pytest.param(DOCKER, id="buildx-0.29"),
        pytest.param(DOCKER_26, id="buildx-0.13"),
        # /build?version=2: no Solve to add a source policy to; the Dockerfile is read
        # as the session sends it to the daemon (buildkit/filesync.py).
        pytest.param(DOCKER_20, id="cli-20.10-buildkit"),
    ],
)
def test_a_build_cannot_start_from_another_tenants_image(
    cli: str | None,
    tenant: Served,
    busybox_image: str,
    docker_host: str,
    docker_client: docker.DockerClient,
    images: list[str],
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    # Another tenant's image: made on the engine with that tenant's owner label.
    foreign = f"{unique_name('foreign')}:1"
    build_foreign_image(docker_client, busybox_image, tmp_path / "made", foreign)
    images.append(foreign)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    out = unique_name("out")
    for text in (f"FROM {foreign}\nRUN cat /theirs\n",
                 f"FROM {busybox_image}\nCOPY --from={foreign} /theirs /t\n"):  # fmt: skip
        (ctx / "Dockerfile").write_text(text)
        # The crossing: on the raw socket, BuildKit resolves the tag in the image store.
        raw = build(cli, docker_host, "build", "-t", f"{out}:raw", str(ctx), cwd=tmp_path)
        assert raw.returncode == 0, raw.stderr[-2000:]
        images.append(f"{out}:raw")
        guarded = build(cli, tenant.host, "build", "-t", f"{out}:1", str(ctx), cwd=tmp_path)
        assert guarded.returncode != 0, guarded.stderr[-2000:]
        # The Dockerfile read from the session: the foreign image "not found" as for any
        # other request (buildx's source policy would refuse it too). Once in a loaded run
        # the 20.10 CLI printed dockerd's "failed to read dockerfile: context canceled"
        # instead (the refusal raced a cancel inside the daemon); what is checked always
        # is that nothing was built.
        said = f"No such image: {foreign}" in guarded.stderr
        assert said or (cli == DOCKER_20 and "context canceled" in guarded.stderr), guarded.stderr[
            -2000:
        ]
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(f"{out}:1")


def test_a_failed_build_releases_the_tag_it_claimed(
    tenant: Served,
    busybox_image: str,
    docker_client: docker.DockerClient,
    images: list[str],
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    """A claim becomes real with the image: a build that fails leaves the name free. A
    claim kept would let the job untag (and its close remove) whatever later takes the
    name, here the host's own tag."""
    tag = unique_name("failed") + ":1"
    ctx = tmp_path / "fails"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN false\n")
    failed = build(DOCKER, tenant.host, "build", "-t", tag, ".", cwd=ctx)
    assert failed.returncode != 0, failed.stderr[-2000:]
    docker_client.images.get(busybox_image).tag(tag)  # the host takes the name
    images.append(tag)
    removed = build(DOCKER, tenant.host, "rmi", tag, cwd=tmp_path)
    assert removed.returncode != 0, removed.stdout
    docker_client.images.get(tag)  # still the host's


@pytest.mark.parametrize("cli", BUILDERS)
def test_an_ssh_mount_forwards_the_clients_agent(
    cli: str | None,
    tenant: Served,
    busybox_image: str,
    docker_client: docker.DockerClient,
    images: list[str],
    tmp_path: Path,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`RUN --mount=type=ssh` with `--ssh default`: the daemon asks the client's session
    for the agent (SSH.CheckAgent, then ForwardAgent when the step connects), through
    the guard, and the step sees the forwarded socket."""
    sock = tmp_path / "agent.sock"
    started = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], capture_output=True,
                             text=True, check=True)  # fmt: skip
    pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        key = tmp_path / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)  # fmt: skip
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True)
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM {busybox_image}\n"
            'RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo forwarded > /ssh\n'
        )
        tag = unique_name("ssh") + ":1"
        images.append(tag)
        result = build(cli, tenant.host, "build", "--no-cache", "--ssh", "default", "-t", tag, ".",
                       cwd=ctx)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        out = docker_client.containers.run(tag, ["cat", "/ssh"], remove=True)
        assert out == b"forwarded\n"
    finally:
        os.kill(pid, 15)
