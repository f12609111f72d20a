"""A CI job's day through `dockmoat serve` in front of a nested engine of each version
of the matrix (20.10, 26.1 and the host's 28.x, each started by `dockmoat dind up`),
reached over mutual TLS, with the current CLI and the 20.10 CLI.

Builds use the classic builder (DOCKER_BUILDKIT=0); BuildKit through the guard has
its own tests. Piped stdin (`run -i`, `exec -i`, `start -a -i`) must end as on a raw
socket: over TLS the guard half-closes the TCP connection (gateway/halfclose.py);
before that, every one of these hung until killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from matrix_support import DOCKMOAT, Guard, Nested, guard_up

from harness.clients import client
from harness.images import BUSYBOX_IMAGE

CLIS = [name for name in ("docker", "docker-20.10") if client(name) is not None]
CLASSIC = {"DOCKER_BUILDKIT": "0"}
#: A piped-stdin command that has not ended by then hangs (they end in about a second).
STDIN_TIMEOUT = 30
PIPELINE = Path(__file__).resolve().parents[3] / "examples" / "pipeline"


def run(
    cli: str, env: dict[str, str], *args: str, input: bytes | None = None,
    timeout: float = 120, cwd: Path | None = None, check: bool = True,
) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    path = client(cli)
    assert path is not None, f"{cli} is not installed: run scripts/install-engine"
    result = subprocess.run(
        [path, *args], input=input, capture_output=True, timeout=timeout, env=env, cwd=cwd,
        check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"{cli} {args}: rc={result.returncode} {result.stderr[-2000:]!r}")
    return result


def test_the_guard_answers_as_the_nested_engine(nested: Nested, guarded: Guard) -> None:
    fmt = ("version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}")
    raw = run("docker", nested.env(), *fmt).stdout
    assert raw.startswith(nested.version.encode() + b".")
    assert run("docker", guarded.env(), *fmt).stdout == raw


@pytest.mark.parametrize("cli", CLIS)
def test_piped_stdin_ends(cli: str, guarded: Guard, unique_name: Callable[[str], str]) -> None:
    env = guarded.env()
    text = b"hello\n" * 1000
    out = run(cli, env, "run", "--rm", "-i", BUSYBOX_IMAGE, "sh", "-c", "cat; echo done",
              input=text, timeout=STDIN_TIMEOUT)  # fmt: skip
    assert out.stdout == text + b"done\n"
    name = unique_name("mxin")
    run(cli, env, "run", "-d", "--name", name, BUSYBOX_IMAGE, "sleep", "600")
    try:
        data = os.urandom(3 << 20)
        out = run(cli, env, "exec", "-i", name, "sh", "-c", "cat > /tmp/in; md5sum < /tmp/in",
                  input=data, timeout=STDIN_TIMEOUT)  # fmt: skip
        local = subprocess.run(["md5sum"], input=data, capture_output=True, check=True)
        assert out.stdout.split()[0] == local.stdout.split()[0]
        lines = run(cli, env, "exec", "-i", name, "wc", "-l", input=b"a\nb\n",
                    timeout=STDIN_TIMEOUT)  # fmt: skip
        assert lines.stdout.strip() == b"2"
    finally:
        run(cli, env, "rm", "-f", name)
    attached = unique_name("mxatt")
    run(cli, env, "create", "-i", "--name", attached, BUSYBOX_IMAGE, "sh", "-c",
        "read x; echo got $x")  # fmt: skip
    try:
        out = run(cli, env, "start", "-a", "-i", attached, input=b"abc\n", timeout=STDIN_TIMEOUT)
        assert out.stdout == b"got abc\n"
    finally:
        run(cli, env, "rm", "-f", attached)


@pytest.mark.parametrize("cli", CLIS)
def test_ci_day(
    cli: str,
    nested: Nested,
    guarded: Guard,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    env = guarded.env()
    name, net, vol, tag = (unique_name(k) for k in ("mxday", "mxnet", "mxvol", "mximg"))
    run(cli, env, "network", "create", net)
    run(cli, env, "volume", "create", vol)
    try:
        run(cli, env, "create", "--name", name, "--network", net, "--network-alias", "web",
            "-v", f"{vol}:/data", BUSYBOX_IMAGE, "sh", "-c",
            "echo started; echo kept > /data/f; while true; do sleep 0.2; done")  # fmt: skip
        run(cli, env, "start", name)
        assert b"started" in run(cli, env, "logs", name).stdout
        assert run(cli, env, "exec", name, "cat", "/data/f").stdout == b"kept\n"
        assert run(cli, env, "exec", name, "sh", "-c", "exit 5", check=False).returncode == 5
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(300000))
        run(cli, env, "cp", str(src), f"{name}:/tmp/in.bin")
        run(cli, env, "cp", f"{name}:/tmp/in.bin", str(tmp_path / "back.bin"))
        assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
        peer = run(cli, env, "run", "--rm", "--network", net, BUSYBOX_IMAGE,
                   "ping", "-c", "1", "-W", "5", "web", check=False)  # fmt: skip
        assert peer.returncode == 0, peer.stdout + peer.stderr
        (tmp_path / "ctx").mkdir()
        (tmp_path / "ctx" / "Dockerfile").write_text(
            f'FROM {BUSYBOX_IMAGE}\nRUN echo built > /built\nCMD ["cat", "/built"]\n'
        )
        run(cli, guarded.env(**CLASSIC), "build", "-t", tag, str(tmp_path / "ctx"))
        assert run(cli, env, "run", "--rm", tag).stdout == b"built\n"
        run(cli, env, "stop", "-t", "1", name)
        run(cli, env, "rm", name)
        run(cli, env, "rmi", tag)
    finally:
        run(cli, env, "rm", "-f", name, check=False)
        run(cli, env, "rmi", "-f", tag, check=False)
        run(cli, env, "volume", "rm", "-f", vol, check=False)
        run(cli, env, "network", "rm", net, check=False)
    # On the nested engine itself (the tenant's names carry a prefix, so containers
    # reach each other by network alias): nothing is left.
    raw = nested.env()
    left = [
        run("docker", raw, "ps", "-a", "--format", "{{.Names}}").stdout,
        run("docker", raw, "volume", "ls", "--format", "{{.Name}}").stdout,
        run("docker", raw, "network", "ls", "--format", "{{.Name}}").stdout,
        run("docker", raw, "images", "--format", "{{.Repository}}").stdout,
    ]
    for made in (name, vol, net, tag):
        assert all(made.encode() not in listing for listing in left), made


def test_doctor_on_the_nested_engine(nested: Nested) -> None:
    """`dockmoat doctor` with the environment `dind up` printed: mutual TLS, version."""
    proc = subprocess.run(
        [str(DOCKMOAT), "doctor", "--format", "json"],
        capture_output=True, text=True, env=nested.env(), timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["check"]: c for c in json.loads(proc.stdout)}
    assert checks["daemon.reachable"]["status"] == "ok"
    assert f"Docker/{nested.version}." in checks["daemon.reachable"]["detail"]
    assert checks["daemon.transport"]["status"] == "ok"
    assert checks["tls.server-san"]["status"] == "ok"
    assert not [c for c in checks.values() if c["status"] == "fail"]


@pytest.mark.parametrize("cli", CLIS)
def test_the_seeds_pipeline(
    cli: str, guarded: Guard, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """examples/pipeline (build, test in the image, tag) through the guard, classic builder."""
    path = client(cli)
    assert path is not None
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").symlink_to(path)  # the pipeline calls `docker`
    image, tagged = unique_name("mxapp") + ":ci", "registry.example.com/" + unique_name("mxapp")
    env = guarded.env(
        **CLASSIC, IMAGE=image, REGISTRY_IMAGE=tagged, PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin"
    )
    try:
        out = subprocess.run(
            ["sh", "pipeline.sh"], cwd=PIPELINE, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert f"pipeline ok: {tagged}" in out.stdout
        run(cli, env, "image", "inspect", image, tagged)
    finally:
        run(cli, env, "rmi", "-f", image, tagged, check=False)


def test_event_streams_show_only_the_tenants_own_objects(
    nested: Nested, guarded: Guard, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    """Two tenants on one nested engine: each one's `docker events` (live and replayed
    with --since) shows its own container's events and none of the other's. Reported
    on Engine 28.5 as crossing; checked on every engine of the matrix."""
    other = guard_up(nested, tmp_path / "other", "--tenant", f"mxo{os.urandom(3).hex()}")
    mine, theirs = unique_name("mxev"), unique_name("mxev")
    fmt = ("--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}")
    try:
        live = subprocess.Popen(
            [str(client("docker")), "events", "--filter", "type=container", *fmt],
            env=guarded.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(1)  # the stream is open before anything happens
            run("docker", other.env(), "run", "--rm", "--name", theirs, BUSYBOX_IMAGE, "true")
            run("docker", guarded.env(), "run", "--rm", "--name", mine, BUSYBOX_IMAGE, "true")
            time.sleep(2)
        finally:
            live.terminate()
            seen, _ = live.communicate(timeout=10)
        replayed = run("docker", guarded.env(), "events", "--since", "2m", "--until", "0s", *fmt)
        for stream in (seen, replayed.stdout):
            names = {line.split()[-1] for line in stream.decode().splitlines() if line.strip()}
            assert mine in names, stream
            assert theirs not in names and not any(theirs in n for n in names), stream
    finally:
        assert other.stop() == 0
