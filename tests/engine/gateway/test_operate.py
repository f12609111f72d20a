"""Operating serve (issue 21): warn mode, metrics and readiness, logs naming the
tenant, the audit log reopened on SIGHUP, the audit-log summary, job close's
summary of denials."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gwserve import DOCKMOAT, Served, raw_get, start_serve
from prometheus_client.parser import text_string_to_metric_families

from dockmoat.gateway.pins import SOURCES

PRIVILEGED = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _docker(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], env=served.env(), capture_output=True, text=True, timeout=120
    )


def _create_privileged(sock: Path) -> bytes:
    request = (
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(PRIVILEGED)).encode() + b"\r\n\r\n" + PRIVILEGED
    )
    return raw_get(sock, request)


def _dockmoat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DOCKMOAT), *args], capture_output=True, text=True, timeout=120)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_warn_mode_forwards_a_privileged_run_and_audits_would_deny(
    serve: Callable[..., Served], busybox_image: str, unique_name: Callable[[str], str]
) -> None:
    gw = serve("--warn")
    name = unique_name("warn")
    done = _docker(gw, "run", "--rm", "--name", name, "--privileged", busybox_image, "true")
    assert done.returncode == 0, done.stderr
    entries = gw.audit_where(route="containers.create")
    assert entries, gw.audit_entries()
    assert entries[0]["decision"] == "would_deny"
    assert entries[0]["rule"] == "containers.privileged"
    log = gw.log.read_text()
    assert "warn mode" in log
    assert f"{gw.host}: POST " in log and "would_deny containers.privileged" in log
    summary = _dockmoat("audit-log", "summary", str(gw.audit))
    assert summary.returncode == 0, summary.stderr
    assert "would_deny" in summary.stdout and "containers.privileged" in summary.stdout
    assert "0 denied, 1 would have been" in summary.stdout


def test_enforcing_serve_denies_and_the_summary_says_so(baseline: Served) -> None:
    answer = _create_privileged(baseline.socket)
    assert b" 403 " in answer.split(b"\r\n", 1)[0]
    assert baseline.audit_where(decision="deny", rule="containers.privileged")
    summary = _dockmoat("audit-log", "summary", "--format", "json", str(baseline.audit))
    rows = json.loads(summary.stdout)["denials"]
    assert any(
        row["decision"] == "deny" and row["rule"] == "containers.privileged" for row in rows
    ), rows


def test_metrics_scraped_with_prometheus_parser_and_ready(
    serve: Callable[..., Served],
) -> None:
    port = _free_port()
    gw = serve("--metrics-listen", f"tcp://127.0.0.1:{port}")
    for _ in range(3):
        assert b" 200 " in raw_get(gw.socket, b"GET /_ping HTTP/1.0\r\n\r\n").split(b"\r\n")[0]
    _create_privileged(gw.socket)
    status, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(text)}
    requests = families["dockmoat_requests"]
    samples = {
        (s.labels["route"], s.labels["decision"], s.labels["rule"]): s.value
        for s in requests.samples
        if s.name == "dockmoat_requests_total"
    }
    assert samples[("system.ping", "allow", "allow")] >= 3
    assert samples[("containers.create", "deny", "containers.privileged")] == 1
    latency = families["dockmoat_request_duration_seconds"]
    count = next(s.value for s in latency.samples if s.name.endswith("_count"))
    assert count >= 4
    assert any(s.labels.get("direction") == "out" and s.value > 0
               for s in families["dockmoat_bytes"].samples)  # fmt: skip
    for name in ("dockmoat_open_connections", "dockmoat_hijacked_streams", "dockmoat_open_jobs",
                 "dockmoat_upstream_errors", "dockmoat_audit_dropped",
                 "dockmoat_audit_write_errors", "dockmoat_audit_failing"):  # fmt: skip
        assert name in families, sorted(families)
    assert _get(f"http://127.0.0.1:{port}/ready") == (200, "ready\n")
    assert _get(f"http://127.0.0.1:{port}/live")[0] == 200


def test_ready_fails_when_the_daemon_behind_the_guard_does_not_answer(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    argv = [
        str(DOCKMOAT), "serve", "--upstream", f"unix://{tmp_path}/no-daemon.sock",
        "--listen", f"unix://{tmp_path}/gw.sock", "--no-tenancy", "--bind-pins", "off",
        "--state-db", str(tmp_path / "s.db"), "--control-socket", str(tmp_path / "c.sock"),
        "--jobs-dir", str(tmp_path / "jobs"), "--metrics-listen", f"tcp://127.0.0.1:{port}",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/live")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        status, why = _get(f"http://127.0.0.1:{port}/ready")
        assert status == 503 and "does not answer" in why, why
    finally:
        process.terminate()
        assert process.wait(30) == 0, log.read_text()


def test_sighup_reopens_the_audit_log(serve: Callable[..., Served]) -> None:
    gw = serve()
    raw_get(gw.socket, b"GET /_ping HTTP/1.0\r\n\r\n")
    assert gw.audit_where(route="system.ping")
    rotated = gw.audit.with_name("audit.log.1")
    gw.audit.rename(rotated)
    gw.process.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    raw_get(gw.socket, b"GET /version HTTP/1.0\r\n\r\n")
    assert gw.audit_where(route="system.version"), "no new audit log after SIGHUP"
    assert "system.version" not in rotated.read_text()


def test_job_close_prints_the_jobs_denials(
    tmp_path: Path, docker_host: str, unique_name: Callable[[str], str]
) -> None:
    gw = start_serve(tmp_path / "gw", docker_host)
    try:
        control = str(tmp_path / "gw" / "control.sock")
        job = unique_name("deny").replace("dmtest-", "dmt")
        opened = _dockmoat("job", "open", job, "--control", control)
        assert opened.returncode == 0, opened.stderr
        env = opened.stdout.strip()
        assert env.startswith("DOCKER_HOST=unix://") and env.endswith("; export DOCKER_HOST")
        sock = Path(env.removeprefix("DOCKER_HOST=unix://").split(";")[0])
        _create_privileged(sock)
        _create_privileged(sock)
        assert f"tenant {job} (unix://{sock})" in gw.log.read_text()
        closed = _dockmoat("job", "close", job, "--control", control)
        assert closed.returncode == 0, closed.stderr
        assert "denied 2x containers.privileged" in closed.stdout, closed.stdout
    finally:
        gw.stop()


def _pins(pin_dir: Path) -> list[Path]:
    """The pins left under a pin folder (each with its source written down beside it)."""
    pins = [pin for daemon in pin_dir.glob("*") for pin in daemon.iterdir() if pin.name != SOURCES]
    written = [s.name for daemon in pin_dir.glob("*") for s in (daemon / SOURCES).glob("*")]
    assert sorted(written) == sorted(pin.name for pin in pins), "a pin without its source"
    return pins


def test_job_close_and_serve_stop_remove_the_pins_they_made(
    tmp_path: Path, docker_host: str, busybox_image: str, unique_name: Callable[[str], str]
) -> None:
    pin_dir = tmp_path / "pins"
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    gw = start_serve(
        tmp_path / "gw", docker_host, "--bind-pins", "on", "--pin-dir", str(pin_dir),
        "--allow-bind", str(workspace),
    )  # fmt: skip
    try:
        control = str(tmp_path / "gw" / "control.sock")
        job = unique_name("pins").replace("dmtest-", "dmt")
        opened = _dockmoat("job", "open", job, "--workspace", str(workspace), "--control", control)
        assert opened.returncode == 0, opened.stderr
        job_env = {**gw.env(), "DOCKER_HOST": opened.stdout.split("=", 1)[1].split(";")[0]}
        made = subprocess.run(
            ["docker", "create", "-v", f"{workspace}/src:/src", busybox_image, "true"],
            env=job_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert len(_pins(pin_dir)) == 1
        closed = _dockmoat("job", "close", job, "--control", control)
        assert closed.returncode == 0, closed.stderr
        assert _pins(pin_dir) == [], "the job's pin outlived job close"
        # A listener's container: its pin stays while the container exists, and goes
        # with serve once the container is gone.
        name = unique_name("pinned")
        made = _docker(gw, "create", "--name", name, "-v", f"{workspace}/src:/src",
                       busybox_image, "true")  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert len(_pins(pin_dir)) == 1
        assert _docker(gw, "rm", name).returncode == 0
    finally:
        assert gw.stop() == 0
    assert _pins(pin_dir) == [], "a pin outlived serve"


def test_job_open_warn_forwards_what_the_job_would_be_denied(
    tmp_path: Path, docker_host: str, busybox_image: str, unique_name: Callable[[str], str]
) -> None:
    gw = start_serve(tmp_path / "gw", docker_host)
    try:
        control = str(tmp_path / "gw" / "control.sock")
        job = unique_name("warn").replace("dmtest-", "dmt")
        opened = _dockmoat("job", "open", job, "--warn", "--control", control)
        assert opened.returncode == 0, opened.stderr
        job_env = {**gw.env(), "DOCKER_HOST": opened.stdout.split("=", 1)[1].split(";")[0]}
        ran = subprocess.run(
            ["docker", "run", "--rm", "--privileged", busybox_image, "true"],
            env=job_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        entries = gw.audit_where(tenant=job, route="containers.create")
        assert entries and entries[0]["decision"] == "would_deny", entries
        assert entries[0]["rule"] == "containers.privileged"
        closed = _dockmoat("job", "close", job, "--control", control)
        assert "would have denied 1x containers.privileged" in closed.stdout, closed.stdout
        # The listener itself still enforces.
        assert b" 403 " in _create_privileged(gw.socket).split(b"\r\n", 1)[0]
    finally:
        gw.stop()


def test_permissive_pins_nothing_so_inspect_shows_the_clients_source(
    serve: Callable[..., Served], tmp_path: Path, busybox_image: str,
    unique_name: Callable[[str], str],
) -> None:  # fmt: skip
    pin_dir = tmp_path / "pins"
    source = tmp_path / "src"
    source.mkdir()
    gw = serve("--profile", "permissive", "--bind-pins", "on", "--pin-dir", str(pin_dir))
    name = unique_name("asis")
    made = _docker(gw, "create", "--name", name, "-v", f"{source}:/src", busybox_image, "true")
    assert made.returncode == 0, made.stderr
    try:
        shown = _docker(gw, "inspect", "-f", "{{range .Mounts}}{{.Source}}{{end}}", name)
        assert shown.stdout.strip() == str(source), shown.stdout
        assert _pins(pin_dir) == []
    finally:
        _docker(gw, "rm", "-f", name)


def test_serve_names_what_a_policy_weakens_at_start_and_on_reload(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("extends: baseline\nenable: [containers.no-new-privileges]\n")
    gw = serve("--policy", str(policy))
    assert "weakens" not in gw.log.read_text()
    policy.write_text("extends: baseline\ndisable: [containers.privileged]\nallow_bind: [/]\n")
    gw.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while "policy reloaded" not in gw.log.read_text():
        assert time.monotonic() < deadline, gw.log.read_text()
        time.sleep(0.1)
    log = gw.log.read_text()
    assert "weakens baseline: disables containers.privileged" in log
    assert "allow_bind: / lets containers bind every file of the host" in log


def test_inspect_of_a_name_nothing_has_says_no_such_object(
    baseline: Served, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("nothing")
    looked = _docker(baseline, "inspect", name)
    assert looked.returncode != 0
    assert f"No such object: {name}" in looked.stderr, looked.stderr
    assert "system.plugins" not in looked.stderr


def test_a_job_policy_contradicting_serves_explicit_profile_is_refused(
    tmp_path: Path, docker_host: str, unique_name: Callable[[str], str]
) -> None:
    gw = start_serve(tmp_path / "gw", docker_host, "--profile", "restricted")
    try:
        control = str(tmp_path / "gw" / "control.sock")
        policy = tmp_path / "job.yaml"
        policy.write_text("extends: baseline\ndisable: [containers.privileged]\n")
        job = unique_name("loose").replace("dmtest-", "dmt")
        opened = _dockmoat("job", "open", job, "--policy", str(policy), "--control", control)
        assert opened.returncode == 2, opened.stdout + opened.stderr
        assert "extends: baseline contradicts --profile restricted" in opened.stderr
        assert "weakens baseline: disables containers.privileged" in opened.stderr
        assert job not in _dockmoat("job", "ls", "--control", control).stdout
    finally:
        gw.stop()


def test_job_open_faults_after_start_are_one_line(tmp_path: Path, docker_host: str) -> None:
    gw = start_serve(tmp_path / "gw", docker_host)
    try:
        control = str(tmp_path / "gw" / "control.sock")
        long_name = "dmt" + "x" * 45  # 48 characters, a valid job name
        too_long = _dockmoat("job", "open", long_name, "--control", control)
        assert too_long.returncode == 2, too_long.stderr
        assert too_long.stderr.count("\n") == 1 and "use a shorter job name" in too_long.stderr
        jobs = tmp_path / "gw" / "jobs"
        if jobs.is_dir():
            jobs.rmdir()
        jobs.write_text("")  # the folder became a file while serve runs
        refused = _dockmoat("job", "open", "dmtfile", "--control", control)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and "--jobs-dir must be a folder" in refused.stderr
        assert "Traceback" not in gw.log.read_text()
    finally:
        gw.stop()
