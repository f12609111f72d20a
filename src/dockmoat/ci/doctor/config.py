"""Where doctor looks: the daemon address and the TLS files, resolved the way the docker CLI does.

Order (the docker CLI's): `--host`, else a context given to `--context`, else
`DOCKER_HOST`, else `DOCKER_CONTEXT` or the current context of config.json (its
host and TLS folder), else the local socket; the caller picks the context. TLS is on when
`--tlsverify`/`DOCKER_TLS_VERIFY` (any non-empty value) or `--tls` or an explicit
certificate flag is given; the files default to `DOCKER_CERT_PATH` (else
`~/.docker`) and `ca.pem`, `cert.pem`, `key.pem` in it. Pure: the environment
comes in as a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from dockmoat.ci.doctor.contexts import ContextEndpoint
from dockmoat.errors import ConfigError

DEFAULT_HOST = "unix:///var/run/docker.sock"
PLAIN_PORT = 2375
TLS_PORT = 2376
# Schemes the docker CLI knows but doctor cannot probe from here.
_FOREIGN = ("ssh", "npipe", "fd")


class Target(BaseModel):
    """A parsed daemon address; `source` says where it came from (for the report)."""

    model_config = ConfigDict(frozen=True)

    url: str
    scheme: Literal["unix", "tcp", "ssh", "npipe", "fd"]
    source: str
    path: str | None = None
    host: str | None = None
    port: int | None = None


class TlsSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    verify: bool
    ca: Path
    cert: Path
    key: Path
    source: str


class DoctorConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    target: Target
    tls: TlsSettings | None
    dind: str | None = None
    output: Literal["text", "json"] = "text"
    timeout: float = 5.0


def parse_host(url: str, source: str, tls: bool) -> Target:
    """Read a DOCKER_HOST-style URL; ConfigError with the accepted forms otherwise."""
    accepted = "expected unix:///path, tcp://HOST[:PORT], ssh://..., npipe://... or fd://"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"bad docker host {url!r} ({source}): {error}; {accepted}") from error
    scheme = parts.scheme.lower()
    if scheme == "unix":
        path = parts.path
        if parts.netloc or not path.startswith("/"):
            raise ConfigError(
                f"bad docker host {url!r} ({source}): the socket path must be absolute; {accepted}"
            )
        return Target(url=f"unix://{path}", scheme="unix", source=source, path=path)
    if scheme == "tcp":
        host = parts.hostname
        if not host or parts.path not in ("", "/"):
            raise ConfigError(f"bad docker host {url!r} ({source}): {accepted}")
        port = port if port is not None else (TLS_PORT if tls else PLAIN_PORT)
        shown = f"[{host}]" if ":" in host else host
        return Target(
            url=f"tcp://{shown}:{port}", scheme="tcp", source=source, host=host, port=port
        )
    if scheme in _FOREIGN:
        return Target(url=url, scheme=scheme, source=source)  # type: ignore[arg-type]
    raise ConfigError(f"bad docker host {url!r} ({source}): {accepted}")


def resolve(
    *,
    host: str | None,
    env: Mapping[str, str],
    home: Path,
    tls: bool = False,
    tlsverify: bool = False,
    tlscacert: Path | None = None,
    tlscert: Path | None = None,
    tlskey: Path | None = None,
    dind: str | None = None,
    output: Literal["text", "json"] = "text",
    context: ContextEndpoint | None = None,
) -> DoctorConfig:
    verify = tlsverify or bool(env.get("DOCKER_TLS_VERIFY"))
    explicit = any(p is not None for p in (tlscacert, tlscert, tlskey))
    use_tls = verify or tls or explicit
    if host:
        url, source = host, "--host"
    elif context is not None:
        url, source = context.host, f"context {context.name}"
        if context.tls_dir is not None and not explicit:
            use_tls = True
            verify = verify or not context.skip_verify
    elif env.get("DOCKER_HOST"):
        url, source = env["DOCKER_HOST"], "DOCKER_HOST"
    else:
        url, source = DEFAULT_HOST, "default"
    target = parse_host(url, source, use_tls)
    settings: TlsSettings | None = None
    if use_tls and target.scheme == "tcp":
        # The files come from one folder (the context's, else DOCKER_CERT_PATH or
        # ~/.docker); each --tls* flag overrides its own file.
        if context is not None and source.startswith("context"):
            folder = context.tls_dir or home / ".docker"
            files_from = f"context {context.name} ({folder})"
        else:
            cert_dir_env = env.get("DOCKER_CERT_PATH")
            folder = Path(cert_dir_env) if cert_dir_env else home / ".docker"
            dir_source = "DOCKER_CERT_PATH" if cert_dir_env else "~/.docker"
            files_from = "flags" if explicit else f"{dir_source} ({folder})"
        settings = TlsSettings(
            verify=verify,
            ca=tlscacert or folder / "ca.pem",
            cert=tlscert or folder / "cert.pem",
            key=tlskey or folder / "key.pem",
            source=files_from,
        )
    return DoctorConfig(target=target, tls=settings, dind=dind, output=output)
