"""Helpers to run `dockmoat serve` as a real subprocess and talk raw HTTP to sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dockmoat.gateway.config import Endpoint, ListenerSettings
from dockmoat.tenancy.names import Namespace
from support.processes import terminate

DOCKMOAT = Path(sys.executable).parent / "dockmoat"


@dataclass
class Served:
    socket: Path
    host: str  # DOCKER_HOST value
    audit: Path
    log: Path
    process: subprocess.Popen[bytes]
    tenant: str | None = None  # the listener's tenant (`--tenant`), None without tenancy

    def engine_name(self, name: str) -> str:
        """Where a container, volume or network the client names lives on the engine."""
        return Namespace.for_job(self.tenant).engine_name(name) if self.tenant else name

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env.update(extra)
        return env

    def audit_entries(self) -> list[dict[str, object]]:
        import json

        deadline = time.monotonic() + 5
        text = ""
        while time.monotonic() < deadline:
            text = self.audit.read_text() if self.audit.exists() else ""
            if text.endswith("\n") or not text:
                break
            time.sleep(0.05)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def audit_where(self, **match: object) -> list[dict[str, object]]:
        """Audit entries with these field values, waiting briefly for the writer to catch up."""
        deadline = time.monotonic() + 5
        while True:
            found = [
                e for e in self.audit_entries() if all(e.get(k) == v for k, v in match.items())
            ]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> int:
        return terminate(self.process)


def raw_get(sock: Path, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to a unix socket and read until the peer closes (or times out)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(request)
        chunks = []
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except TimeoutError:
            pass
        return b"".join(chunks)


def wait_ping(sock: Path, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockmoat serve exited with {process.returncode}")
        if sock.exists():
            try:
                reply = raw_get(sock, b"GET /_ping HTTP/1.0\r\n\r\n", timeout=2)
                if b" 200 " in reply.split(b"\r\n", 1)[0]:
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("dockmoat serve did not answer /_ping")


def isolated(directory: Path, tenant: str | None = None) -> list[str]:
    """A test gateway without tenancy (tested on its own in tests/engine/tenancy) unless
    `tenant` names the listener's tenant, and tenancy's state, control socket and job
    sockets in the test's own folder anyway."""
    return [
        *(["--tenant", tenant] if tenant else ["--no-tenancy"]),
        "--state-db", str(directory / "state.db"),
        "--control-socket", str(directory / "control.sock"),
        "--jobs-dir", str(directory / "jobs"),
    ]  # fmt: skip


def start_serve(
    directory: Path,
    upstream: str,
    *args: str,
    env: dict[str, str] | None = None,
    tenant: str | None = None,
) -> Served:
    """Start `dockmoat serve` on a socket in `directory` and wait until it answers /_ping."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "docker.sock"
    audit = directory / "audit.log"
    log = directory / "serve.log"
    argv = [
        str(DOCKMOAT), "serve", "--listen", f"unix://{sock}", "--upstream", upstream,
        "--audit-log", str(audit), *isolated(directory, tenant), *args,
    ]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    process = subprocess.Popen(
        argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**base, **(env or {})}
    )
    try:
        wait_ping(sock, process)
    except RuntimeError as error:
        process.kill()
        raise RuntimeError(f"{error}: {log.read_text()[-2000:]}") from error
    return Served(sock, f"unix://{sock}", audit, log, process, tenant)


def job_listener(sock: Path) -> ListenerSettings:
    """A unix listener whose clients are the tenant "job" (for `Gateway.add_listener`)."""
    return ListenerSettings(
        endpoint=Endpoint(url=f"unix://{sock}", kind="unix", path=sock), tenant="job"
    )
