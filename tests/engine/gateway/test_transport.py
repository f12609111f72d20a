"""Transport behaviour of `dockmoat serve` against the real engine, in raw bytes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import NotFound
from gwserve import DOCKMOAT, Served, isolated, raw_get


def split(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def test_pipelined_keep_alive_head_and_http10(permissive: Served) -> None:
    reply = raw_get(
        permissive.socket,
        b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
        b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
        b"GET /v1.41/version HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    )
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert b"OK" in reply.split(b"\r\n\r\n")[1]
    assert b'"ApiVersion"' in reply.rsplit(b"HTTP/1.1 200 OK", 1)[1]
    status, _headers, body = split(raw_get(permissive.socket, b"GET /_ping HTTP/1.0\r\n\r\n"))
    assert (status, body) == (200, b"OK")


def test_one_connection_mixes_the_fast_lane_and_the_task_in_order(baseline: Served) -> None:
    """Bodiless requests go by the fast lane, others by the connection's task; whichever
    takes one, answers come back in request order, each audited once with its bytes."""
    # A unique target: a negative limit is no limit to dockerd (a query parameter
    # dockmoat does not model would be refused).
    marker = f"/v1.41/containers/json?limit=-{time.monotonic_ns()}"
    requests = [
        f"GET {marker} HTTP/1.1\r\nHost: d\r\n\r\n".encode(),
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
        b"\r\nContent-Length: 2\r\n\r\n{}",  # a body: the task; the daemon refuses it
        b"GET /v1.41/version HTTP/1.1\r\nHost: d\r\n\r\n",
        b"GET /v1.41/swarm HTTP/1.1\r\nHost: d\r\n\r\n",  # denied by the policy
        b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n",  # HEAD: the task
    ]
    expected = [b" 200 ", b" 400 ", b" 200 ", b" 403 ", b" 200 "]
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(baseline.socket))
        conn.settimeout(20)
        for round_ in range(3):
            replies = b""
            if round_ < 2:  # one at a time, then all in one write
                for request, status in zip(requests, expected, strict=True):
                    conn.sendall(request)
                    reply = b""
                    while status not in reply or not _complete(reply, head_only=b"HEAD" in request):
                        data = conn.recv(65536)
                        assert data, "closed"
                        reply += data
                    replies += reply
            else:
                conn.sendall(b"".join(requests))
                while replies.count(b"HTTP/1.1 ") < len(requests):
                    data = conn.recv(65536)
                    assert data, "closed"
                    replies += data
            statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", replies)
            assert statuses == [status.strip() for status in expected]
    conn_id = baseline.audit_where(path=marker)[0]["conn"]
    deadline = time.monotonic() + 10
    while len(entries := baseline.audit_where(conn=conn_id)) < 3 * len(requests):
        assert time.monotonic() < deadline, entries
        time.sleep(0.1)
    assert [e["status"] for e in entries] == [int(s) for s in statuses] * 3
    # Sent one at a time, every request's own bytes are counted with it.
    assert all(int(str(e["bytes_in"])) > 0 for e in entries[: 2 * len(requests)])


def _complete(reply: bytes, *, head_only: bool) -> bool:
    _head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        return False
    if head_only:
        return True
    _status, headers, _body = split(reply)
    return len(body) >= int(headers.get("content-length", "0"))


def test_bad_framing_is_400_and_not_forwarded(permissive: Served) -> None:
    reply = raw_get(
        permissive.socket,
        b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    status, headers, body = split(reply)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert "message" in json.loads(body)
    assert raw_get(permissive.socket, b"GET /a%zz HTTP/1.1\r\nHost: d\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )


def test_chunked_create_reaches_the_engine(
    baseline: Served, busybox_image: str, unique_name: Callable[[str], str],
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    name = unique_name("chunk")
    body = json.dumps({"Image": busybox_image, "Cmd": ["true"]}).encode()
    request = (
        (
            f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (body[:5], body[5:]))
        + b"0\r\n\r\n"
    )
    try:
        status, _h, _b = split(raw_get(baseline.socket, request))
        assert status == 201
        created = docker_client.containers.get(name)
        assert created.attrs["Config"]["Cmd"] == ["true"]
    finally:
        with contextlib.suppress(NotFound):
            docker_client.containers.get(name).remove(force=True)


def test_too_large_inspected_body_is_413(baseline: Served) -> None:
    big = b'{"Image":"' + b"a" * (5 * 1024 * 1024) + b'"}'
    reply = raw_get(
        baseline.socket,
        b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n" % len(big)
        + big,
    )
    assert reply.startswith(b"HTTP/1.1 413")


def test_unknown_endpoint_denied_by_default(baseline: Served) -> None:
    status, _h, body = split(raw_get(baseline.socket, b"GET /debug/vars HTTP/1.0\r\n\r\n"))
    assert status == 403
    assert json.loads(body)["message"]
    entry = baseline.audit_where(path="/debug/vars")[-1]
    assert entry["route"] == "unknown.unknown"
    assert entry["decision"] == "deny"


def test_upstream_down_gives_502_then_recovers(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    link = tmp_path / "up" / "docker.sock"
    link.parent.mkdir()
    link.symlink_to("/var/run/docker.sock")
    # No bind pins: their sweep asks the daemon at start-up, and a connection it leaves
    # pooled after the readiness ping would still reach the daemon once the link is gone.
    gw = serve("--profile", "permissive", "--bind-pins", "off", "--upstream", f"unix://{link}")
    link.unlink()
    status, _h, body = split(raw_get(gw.socket, b"GET /_ping HTTP/1.0\r\n\r\n"))
    assert status == 502
    assert "not reachable" in json.loads(body)["message"]
    link.symlink_to("/var/run/docker.sock")
    assert split(raw_get(gw.socket, b"GET /_ping HTTP/1.0\r\n\r\n"))[0] == 200
    assert gw.process.poll() is None


def test_socket_mode_stale_socket_and_sigterm(
    serve: Callable[..., Served], docker_host: str, tmp_path: Path
) -> None:
    gw = serve("--profile", "permissive")
    assert stat.S_IMODE(gw.socket.stat().st_mode) == 0o660
    assert gw.stop() == 0
    assert not gw.socket.exists()
    # A stale socket (nobody listening) is replaced.
    stale = tmp_path / "stale" / "docker.sock"
    stale.parent.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    proc = subprocess.Popen([str(DOCKMOAT), "serve", "--listen", f"unix://{stale}", "--profile",
                             "permissive", "--upstream", docker_host,
                             *isolated(tmp_path / "state")])  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                reply = raw_get(stale, b"GET /_ping HTTP/1.0\r\n\r\n", 2)
                if reply.startswith(b"HTTP/1.0 200"):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("no answer on the replaced socket")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_non_loopback_tcp_without_tls_is_refused(docker_host: str) -> None:
    result = subprocess.run(
        [str(DOCKMOAT), "serve", "--listen", "tcp://0.0.0.0:23750", "--profile", "permissive",
         "--upstream", docker_host],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"mutual TLS" in result.stderr


def test_tcp_loopback_listener(serve: Callable[..., Served]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve("--profile", "permissive", "--listen", f"tcp://127.0.0.1:{port}")
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", version="1.41")
    try:
        assert client.ping()
        assert client.version()["ApiVersion"]
    finally:
        client.close()


def test_sighup_reloads_and_keeps_old_policy_on_bad_file(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("extends: permissive\n")
    gw = serve("--policy", str(policy))
    ask = b"GET /debug/vars HTTP/1.0\r\n\r\n"
    assert split(raw_get(gw.socket, ask))[0] != 403
    policy.write_text("extends: baseline\n")
    gw.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while split(raw_get(gw.socket, ask))[0] != 403:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    policy.write_text("extends: [not, a, profile\n")
    gw.process.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    assert gw.process.poll() is None
    assert split(raw_get(gw.socket, ask))[0] == 403
    assert "keeping the old policy" in gw.log.read_text()


def test_idle_keep_alive_times_out_but_silent_streams_do_not(
    serve: Callable[..., Served], busybox_image: str, unique_name: Callable[[str], str],
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    gw = serve("--profile", "permissive", "--idle-timeout", "1")
    with socket.socket(socket.AF_UNIX) as idle:
        idle.connect(str(gw.socket))
        idle.settimeout(10)
        idle.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        first = b""
        while not first.endswith(b"\r\n\r\nOK"):
            first += idle.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert idle.recv(4096) == b""  # closed by the gateway
        assert time.monotonic() - started < 8
    name = unique_name("quiet")
    result = subprocess.run(
        ["docker", "run", "--rm", "--name", name, busybox_image, "sh", "-c",
         "echo a; sleep 3; echo b"],
        capture_output=True, timeout=60, env=gw.env(), check=False,
    )  # fmt: skip
    assert result.stdout == b"a\nb\n", result.stderr


def test_a_busy_connection_outlives_the_idle_timeout(serve: Callable[..., Served]) -> None:
    """The idle timer is re-armed lazily; a connection sending requests is never idle."""
    gw = serve("--profile", "permissive", "--idle-timeout", "1")
    with socket.socket(socket.AF_UNIX) as busy:
        busy.connect(str(gw.socket))
        busy.settimeout(10)
        started = time.monotonic()
        while time.monotonic() - started < 3.5:
            busy.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
            answer = b""
            while not answer.endswith(b"\r\n\r\nOK"):
                data = busy.recv(4096)
                assert data, "closed while busy"
                answer += data
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.6)  # under the timeout each time, over it in total


def test_half_close_still_returns_output(permissive: Served, busybox_image: str) -> None:
    result = subprocess.run(
        ["docker", "run", "--rm", "-i", busybox_image, "sh", "-c",
         "cat >/dev/null; sleep 1; echo after-eof"],
        input=b"data", capture_output=True, timeout=60, env=permissive.env(), check=False,
    )  # fmt: skip
    assert result.stdout == b"after-eof\n"


def test_audit_fields(permissive: Served) -> None:
    raw_get(permissive.socket, b"GET /v1.41/info HTTP/1.0\r\n\r\n")
    entry = permissive.audit_where(path="/v1.41/info")[-1]
    for key in ("time", "conn", "uid", "pid", "tenant", "method", "routed_path", "route",
                "decision", "rule", "status", "bytes_in", "bytes_out", "duration_ms"):  # fmt: skip
        assert key in entry
    assert entry["uid"] == os.getuid()
    assert entry["route"] == "system.info"
    assert entry["status"] == 200
    assert entry["bytes_out"] > 100


def test_expect_continue_is_answered_by_the_gateway(
    baseline: Served, busybox_image: str, unique_name: Callable[[str], str],
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    name = unique_name("expect")
    body = json.dumps({"Image": busybox_image, "Cmd": ["true"]}).encode()
    try:
        reply = raw_get(
            baseline.socket,
            f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\n"
            f"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body,
        )
        assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201")
        assert docker_client.containers.get(name).attrs["Config"]["Cmd"] == ["true"]
    finally:
        with contextlib.suppress(NotFound):
            docker_client.containers.get(name).remove(force=True)


def test_buildkit_session_switches_protocols(permissive: Served, baseline: Served) -> None:
    def request(session: str) -> bytes:
        return (
            b"POST /v1.41/session HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\nX-Docker-Expose-Session-Uuid: " + session.encode() + b"\r\n"
            b"X-Docker-Expose-Session-Name: t\r\nX-Docker-Expose-Session-Sharedkey: k\r\n"
            b"Content-Length: 0\r\n\r\n"
        )

    for served in (permissive, baseline):
        # baseline reads the session's calls (dockmoat.buildkit) instead of closing it
        session = f"dmtestsession{secrets.token_hex(6)}"
        assert raw_get(served.socket, request(session), timeout=3).startswith(b"HTTP/1.1 101")
