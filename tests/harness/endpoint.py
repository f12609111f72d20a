"""Where the test engine is, and whether it answers `GET /_ping` (stdlib only)."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Endpoint:
    url: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Endpoint:
        env = os.environ if environ is None else environ
        return cls(env.get("DOCKER_HOST") or DEFAULT_HOST)

    @property
    def unix_path(self) -> str | None:
        parts = urlsplit(self.url)
        return parts.path if parts.scheme == "unix" else None

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return _UnixConnection(parts.path, timeout)
        if parts.scheme == "tcp":
            host, port = parts.hostname or "127.0.0.1", parts.port or 2375
            if os.environ.get("DOCKER_TLS_VERIFY"):
                certs = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
                ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
                ctx.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
                return http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            return http.client.HTTPConnection(host, port, timeout=timeout)
        raise ValueError(f"unsupported DOCKER_HOST {self.url!r} (use unix:// or tcp://)")

    def ping(self, timeout: float = 2.0) -> bool:
        """True when the engine answers `GET /_ping` with 200 OK."""
        try:
            conn = self.connection(timeout)
            try:
                conn.request("GET", "/_ping")
                resp = conn.getresponse()
                return resp.status == 200 and resp.read(16) == b"OK"
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def server_pid(self) -> int | None:
        """The pid of the process serving a local unix socket (SO_PEERCRED), if any."""
        path = self.unix_path
        if path is None:
            return None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect(path)
                creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        pid, _uid, _gid = struct.unpack("3i", creds)
        return pid or None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
