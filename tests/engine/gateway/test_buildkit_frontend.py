"""A real custom BuildKit frontend (`# syntax=`) through `dockmoat serve` (baseline, a
tenant listener) and on the raw socket.

The frontend is `dockmoat-test/frontend:latest` (harness.frontend): a small gateway
frontend built here from Debian's BuildKit sources, found by the engine in its local
image store (no registry exists here, nothing is pulled). It reads the Dockerfile from
the client's session, runs its `RUN` lines on its `FROM` image and adds `/frontend`.
What the guard decides about frontends (`build.sources`, docs/policy.md): a frontend
image from a registry images may come from is allowed, by `# syntax=` and by the
BUILDKIT_SYNTAX build argument; one at an internal address is refused, after being
shown to reach the host's loopback on the raw socket; the 20.10 CLI's
`/build?version=2` path refuses every custom frontend (its Dockerfile is read there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from gwserve import Served
from test_buildkit import Listener

from harness import frontend
from harness.clients import client
from support.docker_cli import build

DOCKER = client("docker") or "docker"
DOCKER_26 = client("docker-26.1")
DOCKER_20 = client("docker-20.10")
SYNTAX = f"# syntax={frontend.FRONTEND_IMAGE}\n"
BODY = "FROM {image}\nRUN echo hello > /hello\nRUN wc -c < /hello > /size\n"
CHECK = ["sh", "-c", "cat /hello /size /frontend"]
EXPECTED = f"hello\n6\n{frontend.MARKER}\n"


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


def context(root: Path, name: str, dockerfile: str) -> Path:
    ctx = root / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


@pytest.mark.parametrize(
    "cli", [pytest.param(DOCKER, id="buildx-0.29"), pytest.param(DOCKER_26, id="buildx-0.13")]
)
@pytest.mark.parametrize("how", ["syntax-line", "build-arg"])
def test_a_local_frontend_builds_through_the_guard_as_on_the_raw_socket(
    cli: str | None,
    how: str,
    frontend_image: str,
    tenant: Served,
    docker_host: str,
    busybox_image: str,
    tmp_path: Path,
    tags: list[str],
    unique_name: Callable[[str], str],
    docker_client: docker.DockerClient,
) -> None:
    body = BODY.format(image=busybox_image)
    if how == "syntax-line":
        ctx, extra = context(tmp_path, "ctx", SYNTAX + body), ()
    else:
        ctx, extra = (
            context(tmp_path, "ctx", body),
            ("--build-arg", f"BUILDKIT_SYNTAX={frontend_image}"),
        )
    outputs = []
    for host in (docker_host, tenant.host):
        tag = unique_name("fe") + ":1"
        tags.append(tag)
        result = build(cli, host, "build", "--no-cache", *extra, "-t", tag, ".", cwd=ctx)
        assert result.returncode == 0, (host, result.stderr)
        assert "pull access denied" not in result.stderr
        outputs.append(docker_client.containers.run(tag, CHECK, remove=True).decode())
    assert outputs == [EXPECTED, EXPECTED]
    # The image is the tenant's by its claimed tag (`docker build -t`): it runs and
    # removes it through the guard. (The `label:dockmoat.tenant` frontend attribute the
    # guard adds is honoured by the Dockerfile frontend only; this one ignores labels.)
    ran = build(cli, tenant.host, "run", "--rm", tags[-1], "cat", "/frontend", cwd=ctx)
    assert ran.stdout == frontend.MARKER + "\n", ran.stderr
    removed = build(cli, tenant.host, "rmi", tags[-1], cwd=ctx)
    assert removed.returncode == 0, removed.stderr
    solves = tenant.audit_where(route="buildkit.Control.Solve", decision="rewrite")
    assert solves, tenant.audit_entries()[-5:]


@pytest.mark.host_namespaces  # the raw daemon must reach the tests' loopback listener
@pytest.mark.parametrize("address", ["127.0.0.1", "localhost"])
def test_a_frontend_at_an_internal_address_reaches_the_loopback_raw_and_is_refused_guarded(
    address: str,
    frontend_image: str,
    tenant: Served,
    docker_host: str,
    listener: Listener,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """The same frontend named at an internal registry address: on the raw socket the
    daemon connects to the host's loopback for it; through the guard the build argument
    is refused by the guard itself (`build.sources`) and the `# syntax=` line by the
    source policy the guard appends to the Solve; nothing connects."""
    ref = f"{address}:{listener.port}/dmtest/frontend:1"
    body = BODY.format(image=busybox_image)
    cases = {
        "syntax-line": (context(tmp_path, "line", f"# syntax={ref}\n" + body), ()),
        "build-arg": (
            context(tmp_path, "arg", body),
            ("--build-arg", f"BUILDKIT_SYNTAX={ref}"),
        ),
    }
    for name, (ctx, extra) in cases.items():
        listener.connections.clear()
        raw = build(DOCKER, docker_host, "build", "--no-cache", *extra, ".", cwd=ctx)
        assert raw.returncode != 0  # the listener is no registry
        assert listener.connections, f"{name}: the raw daemon did not connect to {address}"
        listener.connections.clear()
        guarded = build(DOCKER, tenant.host, "build", "--no-cache", *extra, ".", cwd=ctx)
        assert guarded.returncode != 0
        if name == "build-arg":
            assert "dockmoat: build.sources: " in guarded.stderr, guarded.stderr
        else:
            assert "denied by policy" in guarded.stderr, guarded.stderr
        assert listener.connections == [], name


def test_the_20_10_cli_build_path_refuses_the_local_frontend(
    frontend_image: str, tenant: Served, docker_host: str, busybox_image: str, tmp_path: Path
) -> None:
    """`/build?version=2` has no Solve to carry a source policy: the guard reads the
    Dockerfile as the session sends it and refuses any custom frontend, even this local
    one, with its reason printed by the 20.10 CLI."""
    ctx = context(tmp_path, "ctx", SYNTAX + BODY.format(image=busybox_image))
    raw = build(DOCKER_20, docker_host, "build", "--no-cache", ".", cwd=ctx)
    assert raw.returncode == 0, raw.stderr  # the frontend runs on the raw socket
    guarded = build(DOCKER_20, tenant.host, "build", "--no-cache", ".", cwd=ctx)
    assert guarded.returncode != 0
    assert "names a custom frontend" in guarded.stderr, guarded.stderr
