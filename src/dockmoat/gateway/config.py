"""The settings of `dockmoat serve`, parsed and checked once at start-up.

Everything wrong here is a ConfigError before any socket is opened: a
non-loopback TCP listener without mutual TLS, missing TLS files, an upstream
URL we cannot speak.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from dockmoat.errors import ConfigError
from dockmoat.tenancy.names import listener_tenant_name, validate_job_name

DEFAULT_LISTEN = "unix:///run/dockmoat/docker.sock"
DEFAULT_UPSTREAM = "unix:///var/run/docker.sock"
LogLevel = Literal["debug", "info", "warning", "error"]
PinMode = Literal["auto", "on", "off"]
#: Where `serve` pins bind sources (gateway/pins.py): in /run/dockmoat, which no bind may expose.
DEFAULT_PIN_DIR = Path("/run/dockmoat/pins")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsFiles(_Frozen):
    cert: Path
    key: Path
    ca: Path | None = None
    verify: bool = True


class Endpoint(_Frozen):
    """A socket address: a unix path or a TCP host and port, optionally with TLS."""

    url: str
    kind: Literal["unix", "tcp"]
    path: Path | None = None
    host: str | None = None
    port: int | None = None
    tls: TlsFiles | None = None

    @property
    def elsewhere(self) -> bool:
        """A TCP address that is not this machine's loopback: maybe another machine."""
        return self.kind == "tcp" and not _is_loopback(self.host or "")


class ListenerSettings(_Frozen):
    endpoint: Endpoint
    # The tenant of every client of this listener (None: no tenancy), or, with
    # `tenant_from_cn`, each mutual-TLS client is the tenant its certificate's CN names.
    tenant: str | None = None
    tenant_from_cn: bool = False


class Limits(_Frozen):
    max_head: int = 64 * 1024
    max_body: int = 4 * 1024 * 1024  # JSON/form bodies buffered for inspection
    max_json_response: int = 64 * 1024 * 1024  # answers a stage filters
    idle_timeout: float = 120.0  # keep-alive connections between requests
    head_timeout: float = 60.0  # a started request head must complete in this time
    drain_grace: float = 10.0  # SIGTERM: time for requests in flight
    upstream_connect_timeout: float = 10.0
    # Idle daemon connections kept for reuse. Above the number of clients busy at once,
    # so a busy gateway does not close and reopen daemon connections per request.
    upstream_idle_pool: int = 256


class ServeSettings(_Frozen):
    listeners: tuple[ListenerSettings, ...]
    upstream: Endpoint
    profile: str = "baseline"
    policy_file: Path | None = None
    allow_bind: tuple[Path, ...] = ()
    audit_log: str | None = None
    socket_group: str | None = None
    log_level: LogLevel = "info"
    limits: Limits = Field(default_factory=Limits)
    bind_pins: PinMode = "auto"
    pin_dir: Path = DEFAULT_PIN_DIR
    # Issue 21: warn mode (would-be denials forwarded, audited as would_deny), the
    # metrics listener (None: off), and whether the policy file may name another profile.
    mode: Literal["enforce", "warn"] = "enforce"
    metrics: Endpoint | None = None
    profile_given: bool = False
    policy_overrides_profile: bool = False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_private(host: str) -> bool:
    """A literal private address (RFC 1918, ULA): never a wildcard, a name or link-local."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_private and not (address.is_unspecified or address.is_link_local)


def _tcp_parts(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"{url}: bad port") from error
    if not parts.hostname or port is None:
        raise ConfigError(f"{url}: expected tcp://HOST:PORT")
    if parts.path not in ("", "/"):
        raise ConfigError(f"{url}: a TCP address takes no path")
    return parts.hostname, port


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist or is not a file")
    return path


def parse_listen(
    url: str,
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    tenant: str | None = None,
    private_network: bool = False,
) -> ListenerSettings:
    """One `--listen` URL; a non-loopback TCP address requires all three TLS files.

    `private_network` (serve's `--private-network-port`, an explicit opt-in) also lets a
    plain TCP listener use a private, non-wildcard address: a container network's.
    """
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path.startswith("/"):
            raise ConfigError(f"{url}: a unix socket path must be absolute")
        return ListenerSettings(
            endpoint=Endpoint(url=url, kind="unix", path=Path(path)), tenant=tenant
        )
    if url.startswith("tcp://"):
        host, port = _tcp_parts(url)
        tls: TlsFiles | None = None
        given = [f for f in (tls_cert, tls_key, tls_ca) if f is not None]
        if given and len(given) != 3:
            raise ConfigError("--tls-cert, --tls-key and --tls-ca go together (mutual TLS)")
        if tls_cert is not None and tls_key is not None and tls_ca is not None:
            tls = TlsFiles(
                cert=_existing(tls_cert, "--tls-cert"),
                key=_existing(tls_key, "--tls-key"),
                ca=_existing(tls_ca, "--tls-ca"),
            )
        elif not _is_loopback(host) and not (private_network and _is_private(host)):
            raise ConfigError(
                f"{url}: refusing to listen on a non-loopback address without mutual TLS "
                "(give --tls-cert, --tls-key and --tls-ca)"
            )
        return ListenerSettings(
            endpoint=Endpoint(url=url, kind="tcp", host=host, port=port, tls=tls), tenant=tenant
        )
    raise ConfigError(f"{url}: --listen takes unix:///path or tcp://HOST:PORT")


def parse_upstream(url: str | None, env: Mapping[str, str]) -> Endpoint:
    """`--upstream`, else DOCKER_HOST, else the local socket; TLS from DOCKER_TLS_VERIFY."""
    url = url or env.get("DOCKER_HOST") or DEFAULT_UPSTREAM
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path.startswith("/"):
            raise ConfigError(f"upstream {url}: a unix socket path must be absolute")
        return Endpoint(url=url, kind="unix", path=Path(path))
    if url.startswith(("tcp://", "https://", "http://")):
        host, port = _tcp_parts(url.replace("https://", "tcp://").replace("http://", "tcp://"))
        verify = env.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
        tls: TlsFiles | None = None
        if verify or url.startswith("https://") or env.get("DOCKER_TLS", "") not in ("", "0"):
            cert_dir = Path(env.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
            ca = cert_dir / "ca.pem"
            tls = TlsFiles(
                cert=_existing(cert_dir / "cert.pem", "upstream client certificate"),
                key=_existing(cert_dir / "key.pem", "upstream client key"),
                ca=_existing(ca, "upstream CA") if verify else None,
                verify=verify,
            )
        return Endpoint(url=url, kind="tcp", host=host, port=port, tls=tls)
    raise ConfigError(f"upstream {url}: expected unix:///path or tcp://HOST:PORT")


def default_tenant(endpoint: Endpoint) -> str:
    """The stable tenant name of a listener that names none (see docs/tenancy.md)."""
    if endpoint.kind == "unix" and endpoint.path is not None:
        name = endpoint.path.name
        readable = name[: -len(".sock")] if name.endswith(".sock") else name
        return listener_tenant_name(f"unix:{endpoint.path}", readable)
    return listener_tenant_name(
        f"tcp:{endpoint.host}:{endpoint.port}", f"{endpoint.host}-{endpoint.port}"
    )


def listener_tenants(
    listeners: Sequence[ListenerSettings],
    *,
    tenant: str | None,
    profile: str,
    no_tenancy: bool,
    tenant_from_cn: bool,
) -> tuple[ListenerSettings, ...]:
    """Who the clients of each listener are.

    `--tenant NAME` names the tenant of all of them; `--tenant-from-cn` makes
    each client of a mutual-TLS listener the tenant its certificate's CN names;
    otherwise every listener is a tenant of its own (a stable name derived from
    its address) except under `--profile permissive` (forward and audit only)
    or with `--no-tenancy` (the operator gives up isolation between clients).
    """
    if tenant is not None:
        validate_job_name(tenant)  # ConfigError saying what a tenant name may be
    if no_tenancy and (tenant is not None or tenant_from_cn):
        raise ConfigError("--no-tenancy cannot be combined with --tenant or --tenant-from-cn")
    if tenant is not None and tenant_from_cn:
        raise ConfigError("--tenant and --tenant-from-cn exclude each other")
    if tenant_from_cn and not any(item.endpoint.tls is not None for item in listeners):
        raise ConfigError(
            "--tenant-from-cn needs a mutual-TLS listener "
            "(a tcp:// --listen with --tls-cert, --tls-key and --tls-ca)"
        )
    isolate = not no_tenancy and profile != "permissive"
    result: list[ListenerSettings] = []
    for item in listeners:
        if tenant is not None:
            result.append(item)
        elif tenant_from_cn and item.endpoint.tls is not None:
            result.append(item.model_copy(update={"tenant": None, "tenant_from_cn": True}))
        elif isolate:
            result.append(item.model_copy(update={"tenant": default_tenant(item.endpoint)}))
        else:
            result.append(item)
    return tuple(result)


def build_settings(
    *,
    listen: Sequence[str],
    upstream: str | None,
    profile: str,
    policy_file: Path | None,
    allow_bind: Sequence[Path],
    audit_log: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    socket_group: str | None,
    log_level: str,
    tenant: str | None = None,
    idle_timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    no_tenancy: bool = False,
    tenant_from_cn: bool = False,
    bind_pins: str = "auto",
    pin_dir: Path = DEFAULT_PIN_DIR,
    private_listen: Sequence[str] = (),
    mode: str = "enforce",
    metrics_listen: str | None = None,
    profile_given: bool = False,
    policy_overrides_profile: bool = False,
) -> ServeSettings:
    """All of `serve`'s flags as one typed object; ConfigError on anything wrong.

    `private_listen`: plain TCP URLs on private addresses (`--private-network-port`).
    """
    env = os.environ if env is None else env
    urls = list(listen) or ([] if private_listen else [DEFAULT_LISTEN])
    if len(set(urls) | set(private_listen)) != len(urls) + len(private_listen):
        raise ConfigError("the same --listen address is given twice")
    listeners = tuple(
        parse_listen(u, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca, tenant=tenant)
        for u in urls
    ) + tuple(
        parse_listen(
            u, tls_cert=None, tls_key=None, tls_ca=None, tenant=tenant, private_network=True
        )
        for u in private_listen
    )
    listeners = listener_tenants(
        listeners,
        tenant=tenant,
        profile=profile,
        no_tenancy=no_tenancy,
        tenant_from_cn=tenant_from_cn,
    )
    if policy_file is not None and not policy_file.is_file():
        raise ConfigError(f"--policy {policy_file}: no such file")
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level {log_level}: expected debug, info, warning or error")
    limits = Limits()
    if idle_timeout is not None:
        if idle_timeout <= 0:
            raise ConfigError("--idle-timeout must be positive")
        limits = Limits(idle_timeout=idle_timeout)
    if bind_pins not in ("auto", "on", "off"):
        raise ConfigError(f"--bind-pins {bind_pins}: expected auto, on or off")
    if not pin_dir.is_absolute():
        raise ConfigError(f"--pin-dir {pin_dir}: must be an absolute path")
    if mode not in ("enforce", "warn"):
        raise ConfigError(f"--mode {mode}: expected enforce or warn")
    metrics = parse_metrics_listen(metrics_listen) if metrics_listen else None
    if metrics is not None and any(item.endpoint.url == metrics.url for item in listeners):
        raise ConfigError(f"--metrics-listen {metrics.url} is also a --listen address")
    return ServeSettings(
        limits=limits,
        listeners=listeners,
        upstream=parse_upstream(upstream, env),
        profile=profile,
        policy_file=policy_file,
        allow_bind=tuple(allow_bind),
        audit_log=audit_log,
        socket_group=socket_group,
        log_level=log_level,  # type: ignore[arg-type]
        bind_pins=bind_pins,  # type: ignore[arg-type]
        pin_dir=pin_dir,
        mode=mode,  # type: ignore[arg-type]
        metrics=metrics,
        profile_given=profile_given,
        policy_overrides_profile=policy_overrides_profile,
    )


def parse_metrics_listen(url: str) -> Endpoint:
    """`--metrics-listen`: tcp://HOST:PORT or unix:///path, plain HTTP (read-only)."""
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path.startswith("/"):
            raise ConfigError(f"--metrics-listen {url}: the unix socket path must be absolute")
        return Endpoint(url=url, kind="unix", path=Path(path))
    if url.startswith("tcp://"):
        host, port = _tcp_parts(url)
        return Endpoint(url=url, kind="tcp", host=host, port=port)
    raise ConfigError(f"--metrics-listen {url}: expected tcp://HOST:PORT or unix:///path")
