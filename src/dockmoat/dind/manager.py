"""Nested daemons on a Docker engine: the one module doing engine I/O for `dockmoat dind`.

`DindManager(host=...).up(name, DindOptions(...)) -> DindInfo` and `.down(name)`
are the API `dockmoat run --mode dind` builds on.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import ipaddress
import os
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.tls import TLSConfig

from dockmoat.dind import cache, certs, claimant, naming, probe, spec
from dockmoat.dind import context as contexts
from dockmoat.dind.info import DindInfo
from dockmoat.dind.state import StateDir, default_state_dir
from dockmoat.errors import ConfigError, DockmoatError, EngineError, NotFoundError
from dockmoat.netinfo import host_uplink
from dockmoat.sdkerrors import engine_errors, explain

Progress = Callable[[str], None]

# How often `up` asks the nested daemon; a TLS handshake on loopback costs ~1 ms.
_POLL = 0.02
# How often it also checks whether the container died (a cheap inspect).
_STATE_EVERY = 0.5
# A half-made daemon whose claimant cannot be judged is left this long to finish.
GC_GRACE = 600.0
_LOG_LINES = 15
_LOG_SCAN = 300


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class DaemonRow:
    """One line of `dind ls`."""

    name: str
    instance: str
    state: str
    created: float
    memory: int | None
    cpus: float | None
    pids_limit: int | None
    cache: str | None
    port: int | None


@dataclass(slots=True)
class _Made:
    """What a launch created so far, for clean-up on failure."""

    instance: str
    network: str | None = None
    container: str | None = None
    volume: str | None = None
    cert_dir: bool = False
    dns: list[str] = field(default_factory=list)
    # Attached to the container's stdin before its start: the certificates go in there.
    stdin: socket.socket | None = None


def engine_client(host: str | None) -> docker.DockerClient:
    """A client for `host` (default: DOCKER_HOST or the local socket), API version negotiated."""
    with engine_errors(f"cannot reach the Docker engine{f' at {host}' if host else ''}"):
        if host:
            return docker.DockerClient(base_url=host, version="auto", timeout=120)
        return docker.from_env(version="auto", timeout=120)


def telling_lines(logs: str, limit: int = _LOG_LINES) -> list[str]:
    """The log lines that explain a failure: dockerd's info chatter (grpc state
    changes by the dozen) hides the one error line, so leave info/debug out when
    anything else is there; the very last line (often the fatal one) always stays."""
    lines = [line for line in logs.splitlines() if line.strip()]
    telling = [line for line in lines if "level=info" not in line and "level=debug" not in line]
    if not telling:
        return lines[-limit:]
    if lines and lines[-1] not in telling[-limit:]:
        return [*telling[-(limit - 1) :], lines[-1]]
    return telling[-limit:]


def hint_for(logs: str) -> str:
    """The seed's troubleshooting cases, picked by what the nested daemon logged."""
    lower = logs.lower()
    hints = []
    if (
        "overlay" in lower
        or "storage" in lower
        or "graphdriver" in lower
        or "driver not supported" in lower
    ):
        hints.append(
            "storage driver: the data root is a named volume so overlay2 can nest; if the "
            "engine's volume filesystem cannot carry it, pass --storage-driver vfs"
        )
    if any(
        w in lower
        for w in (
            "permission denied",
            "operation not permitted",
            "privileged",
            "iptables",
            "cgroup",
            "mount",
        )
    ):
        hints.append(
            "privileges: the nested daemon needs a privileged container (the default) or a "
            "runtime that allows nested containers (--runtime sysbox-runc)"
        )
    if "tls" in lower or "certificate" in lower or "x509" in lower:
        hints.append("certificates: check the state directory's CA and run `dockmoat doctor`")
    if "rootlesskit" in lower:
        hints.append(
            "rootless: --rootless needs a rootless DinD image such as docker:dind-rootless"
        )
    if not hints:
        hints.append(
            "common causes: storage driver incompatibility (--storage-driver), missing "
            "privileges (--runtime), TLS certificate issues (`dockmoat doctor`)"
        )
    return "\n".join(f"hint: {h}" for h in hints)


class DindManager:
    """Starts, lists and removes nested daemons on one engine; state in one state directory."""

    def __init__(
        self,
        host: str | None = None,
        state_dir: Path | None = None,
        docker_config: Path | None = None,
        progress: Progress | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.host = host
        self.state = StateDir(state_dir or default_state_dir())
        self.docker_config = docker_config or contexts.docker_config_dir()
        self.progress = progress or _quiet
        self.client = client or engine_client(host)
        self.api = self.client.api
        # Which engine this is, as the user named it; kept with each daemon's certificates.
        self.engine = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    # ---------------------------------------------------------------- up

    def up(
        self,
        name: str,
        options: spec.DindOptions,
        *,
        wait_cache: float = 0.0,
        pull: bool = False,
    ) -> DindInfo:
        """Start a fresh nested daemon for NAME; return once it answers /_ping over mTLS."""
        try:
            naming.validate_name(name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self._check_free(name)
        entrypoint = self.check_images(options, pull=pull)
        who = claimant.current()
        instance = naming.new_instance(name)
        made = _Made(instance)
        try:
            claim = (
                cache.claim(self.state, self.api, options.cache, wait_cache, self.progress)
                if options.cache
                else contextlib.nullcontext()
            )
            with claim:
                self._create(
                    options, made, naming.tmp_container_name(instance), who, {}, name, entrypoint
                )
            info = self._start_and_wait(options, made, name, who)
            if options.preload:
                self.preload(info, options.preload)
            self.progress(f"assigning {naming.container_name(name)}")
            self._rename(made, name)
            self.write_context(info)
            return info
        except BaseException:
            # Also on Ctrl-C/SIGTERM: a failed `up` leaves nothing behind.
            self._undo(made, options)
            raise

    def _check_free(self, name: str) -> None:
        try:
            with engine_errors("cannot inspect containers", leave=(docker.errors.NotFound,)):
                self.api.inspect_container(naming.container_name(name))
        except docker.errors.NotFound:
            return  # the name is free
        raise ConfigError(
            f"a dind daemon named {name} already exists; `dockmoat dind down {name}` first"
        )

    def check_images(self, options: spec.DindOptions, *, pull: bool = False) -> list[str]:
        """Fail fast, before creating anything, when an image is missing (never pull unasked).

        Returns the DinD image's entrypoint (run after the certificate wait).
        """
        try:
            with engine_errors(
                f"cannot inspect image {options.image}", leave=(docker.errors.ImageNotFound,)
            ):
                image = self.api.inspect_image(options.image)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            if not pull:
                raise EngineError(
                    f"image {options.image} is not on the engine and dockmoat does not pull "
                    "unless asked: load it (docker load), pass another --image, or pass --pull"
                ) from None
            self.progress(f"pulling {options.image}")
            with engine_errors(f"cannot pull {options.image}"):
                self.api.pull(options.image)
                image = self.api.inspect_image(options.image)  # type: ignore[no-untyped-call]
        if options.rootless:
            user = str((image.get("Config") or {}).get("User") or "")
            if user in ("", "0", "root", "0:0", "root:root"):
                raise ConfigError(
                    f"--rootless needs a rootless DinD image (dockerd under rootlesskit as a "
                    f"non-root user, such as docker:dind-rootless); {options.image} runs as root"
                )
        for preload in options.preload:
            try:
                with engine_errors(
                    f"cannot inspect image {preload}", leave=(docker.errors.ImageNotFound,)
                ):
                    self.api.inspect_image(preload)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                raise EngineError(
                    f"--preload {preload}: no such image on the host engine"
                ) from None
        entrypoint = _entrypoint_of(image)
        try:
            spec.daemon_command(entrypoint, ["dockerd"])
        except ValueError as error:
            raise ConfigError(f"{options.image}: {error}") from None
        return entrypoint

    def host_mtu(self) -> int:
        """The nested daemon's MTU: the engine bridge's (1500 when it sets none), or this
        host's uplink when that is smaller and the engine runs here (a unix socket).

        A nested bridge wider than the way out drops large packets without a word
        (pulls hang, TLS stalls): cloud VMs often have 1460 or less while docker0
        keeps 1500.
        """
        try:
            bridge = self.api.inspect_network("bridge")
            mtu = int((bridge.get("Options") or {}).get("com.docker.network.driver.mtu", 1500))
        except (docker.errors.APIError, ValueError):
            mtu = 1500
        if self.engine.startswith("unix://"):
            uplink = host_uplink()
            if uplink is not None and 576 <= uplink[1] < mtu:
                return uplink[1]
        return mtu

    def _create(
        self,
        options: spec.DindOptions,
        made: _Made,
        container_name: str,
        who: str,
        extra_labels: dict[str, str],
        name: str | None,
        entrypoint: list[str] | None = None,
    ) -> None:
        instance = made.instance
        mtu = options.mtu or self.host_mtu()
        network = naming.network_name(instance)
        made.network = network  # before it exists: a failure half-way still removes it
        self.progress(f"creating network {network}")
        self.progress(f"creating container {container_name}")
        # The engine resolves a container's network at start, not at create, so
        # the network (the slowest step here) is made while the container is
        # created and attached; leaving the `with` waits for it in every case.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            network_made = pool.submit(self._create_network, network, mtu, instance, who)
            try:
                self._create_container(
                    options, made, container_name, who, extra_labels, name, entrypoint, mtu
                )
            except docker.errors.NotFound:
                # An engine that wants the network to exist first: create afterwards.
                network_made.result()
                with engine_errors("cannot create the daemon container"):
                    self._create_container(
                        options, made, container_name, who, extra_labels, name, entrypoint, mtu
                    )
            made.stdin = self._attach_stdin(made.container or "")
            network_made.result()

    def _create_network(self, network: str, mtu: int, instance: str, who: str) -> None:
        with engine_errors(f"cannot create network {network}"):
            self.api.create_network(
                network,
                driver="bridge",
                options=spec.network_options(mtu),
                labels=spec.labels(instance, naming.ROLE_NETWORK, who),
                check_duplicate=True,
            )

    def _create_container(
        self,
        options: spec.DindOptions,
        made: _Made,
        container_name: str,
        who: str,
        extra_labels: dict[str, str],
        name: str | None,
        entrypoint: list[str] | None,
        mtu: int,
    ) -> None:
        instance = made.instance
        assert made.network
        if options.cache:
            volume = naming.cache_volume_name(options.cache)
            volume_labels = spec.labels(
                instance, naming.ROLE_CACHE, who, {naming.LABEL_CACHE: options.cache}
            )
        else:
            volume = naming.data_volume_name(instance)
            volume_labels = spec.labels(instance, naming.ROLE_DATA, who)
            made.volume = volume
        container_labels = spec.labels(instance, naming.ROLE_DAEMON, who, extra_labels)
        if options.cache:
            container_labels[naming.LABEL_CACHE] = options.cache
        made.dns = [naming.ALIAS, instance, container_name]
        if name:
            made.dns += [name, naming.container_name(name)]
        try:
            config = spec.container_config(
                options,
                instance=instance,
                network=made.network,
                image_entrypoint=self._entrypoint(options.image)
                if entrypoint is None
                else entrypoint,
                volume=volume,
                mtu=mtu,
                container_labels=container_labels,
                volume_labels=volume_labels,
            )
        except ValueError as error:
            raise ConfigError(f"{options.image}: {error}") from None
        # NotFound is left to _create: maybe only the network is not there yet.
        with engine_errors("cannot create the daemon container", leave=(docker.errors.NotFound,)):
            created = self.api.create_container_from_config(config, name=container_name)  # type: ignore[no-untyped-call]
        made.container = str(created["Id"])

    def _entrypoint(self, image: str) -> list[str]:
        with engine_errors(f"cannot inspect image {image}"):
            details = self.api.inspect_image(image)  # type: ignore[no-untyped-call]
        return _entrypoint_of(details)

    def _start_and_wait(
        self, options: spec.DindOptions, made: _Made, name: str, who: str
    ) -> DindInfo:
        assert made.container and made.network
        # Attached before the start (in _create), so the certificates go in the
        # moment the IP is known, with no round trip to the engine in between.
        stdin = made.stdin
        assert stdin is not None
        try:
            self.progress("starting the nested daemon")
            with engine_errors("cannot start the daemon container"):
                self.api.start(made.container)
                details = self.api.inspect_container(made.container)
            info = self._info_from(details, name)
            # Issued now because only now the container's IP is known; dockerd waits for them.
            self.progress("issuing certificates")
            try:
                ips = [info.address] if info.address else []
                dns = list(made.dns)
                try:
                    ips.append(str(ipaddress.ip_address(info.host_address)))
                except ValueError:
                    dns.append(info.host_address)  # a remote engine's host name
                daemon_certs = certs.issue_daemon_certs(self.state.ca(), made.instance, dns, ips)
            except ValueError as error:
                raise EngineError(f"cannot issue certificates: {error}") from None
            made.cert_dir = True
            self.state.write_client(made.instance, daemon_certs, who, self.engine)
            uid = spec.ROOTLESS_UID if options.rootless else 0
            try:
                _send_and_close(stdin, certs.server_cert_tar(daemon_certs, uid, uid))
            except OSError as error:
                raise EngineError(f"cannot send the certificates in: {error}") from None
        finally:
            _close(stdin)
            made.stdin = None
        self.progress(f"waiting for /_ping on {info.host_url}")
        self.wait_ready(info, made.container, options.timeout)
        return info

    def _attach_stdin(self, container: str) -> socket.socket:
        with engine_errors("cannot attach to the daemon container"):
            attached = self.api.attach_socket(container, params={"stdin": 1, "stream": 1})
        # The SDK hands out a SocketIO wrapper on unix sockets, the socket itself on TCP.
        raw = getattr(attached, "_sock", attached)
        if not isinstance(raw, socket.socket):
            raise EngineError(f"cannot write to the daemon container's stdin over {type(raw)}")
        return raw

    def _info_from(self, details: dict[str, Any], name: str) -> DindInfo:
        labels = details["Config"]["Labels"] or {}
        instance = labels[naming.LABEL_INSTANCE]
        network = naming.network_name(instance)
        settings = details["NetworkSettings"]
        address = str(((settings.get("Networks") or {}).get(network) or {}).get("IPAddress", ""))
        bindings = (settings.get("Ports") or {}).get(f"{naming.TLS_PORT}/tcp") or []
        ports = [int(b["HostPort"]) for b in bindings if b.get("HostPort")]
        if not ports:
            raise EngineError(f"the daemon container {details['Name']} has no published TLS port")
        return DindInfo(
            name=name,
            instance=instance,
            container_id=str(details["Id"]),
            network=network,
            address=address,
            port=ports[0],
            cert_path=self.state.client_dir(instance),
            cache=labels.get(naming.LABEL_CACHE),
            host_address=self.client_address(str(bindings[0].get("HostIp") or "")),
        )

    def client_address(self, published_on: str) -> str:
        """Where this machine reaches a port the engine published on `published_on`."""
        if published_on in ("", "0.0.0.0", "::"):
            engine = urllib.parse.urlsplit(self.host or os.environ.get("DOCKER_HOST", ""))
            if engine.scheme in ("tcp", "https", "http", "ssh") and engine.hostname:
                return engine.hostname
            return "127.0.0.1"
        return published_on

    def wait_ready(self, info: DindInfo, container: str, timeout: float) -> None:
        """Poll /_ping over mTLS until it answers; fail with the daemon's log tail otherwise."""
        tls = probe.tls_context(info.cert_path)
        deadline = time.monotonic() + timeout
        next_state = time.monotonic() + _STATE_EVERY
        while True:
            if probe.ping(info.host_address, info.port, tls, timeout=2.0):
                return
            now = time.monotonic()
            if now >= next_state:
                next_state = now + _STATE_EVERY
                state = self._state(container)
                if state not in ("running", "created", "restarting"):
                    raise EngineError(
                        f"the nested daemon stopped ({state}) before answering /_ping\n"
                        + self._failure_report(container)
                    )
            if now >= deadline:
                raise EngineError(
                    f"the nested daemon did not answer /_ping over mutual TLS within {timeout:g}s\n"
                    + self._failure_report(container)
                )
            time.sleep(_POLL)

    def _state(self, container: str) -> str:
        try:
            return str(self.api.inspect_container(container)["State"]["Status"])
        except docker.errors.NotFound:
            return "removed"
        except docker.errors.APIError:
            return "unknown"

    def _failure_report(self, container: str) -> str:
        try:
            raw = self.api.logs(container, tail=_LOG_SCAN)
            logs = raw.decode(errors="replace") if isinstance(raw, bytes) else ""
        except docker.errors.APIError:
            logs = ""
        shown = "\n".join(f"  | {line}" for line in telling_lines(logs))
        hint = hint_for("\n".join(telling_lines(logs, _LOG_SCAN)))
        return f"the nested daemon's log (last telling lines):\n{shown or '  (empty)'}\n{hint}"

    def _rename(self, made: _Made, name: str) -> None:
        assert made.container
        try:
            self.api.rename(made.container, naming.container_name(name))
        except docker.errors.APIError as error:
            if error.status_code == 409:
                raise ConfigError(
                    f"a dind daemon named {name} already exists (created meanwhile)"
                ) from None
            raise EngineError(f"cannot rename the daemon container: {explain(error)}") from None

    def _undo(self, made: _Made, options: spec.DindOptions | None = None) -> None:
        """Remove what a failed launch made; best effort, never masks the original error."""
        if made.stdin is not None:
            _close(made.stdin)
        with contextlib.suppress(Exception):
            if made.container:
                self.api.remove_container(made.container, force=True, v=True)
        with contextlib.suppress(Exception):
            if made.network:
                self.api.remove_network(made.network)
        with contextlib.suppress(Exception):
            if made.volume:
                self.api.remove_volume(made.volume)
        with contextlib.suppress(Exception):
            if made.cert_dir:
                self.state.remove_daemon(made.instance)

    def write_context(self, info: DindInfo) -> None:
        contexts.write(
            self.docker_config, info.context, info.host_url, info.instance, info.cert_path
        )

    # ---------------------------------------------------------------- pool side

    def launch_warm(
        self, options: spec.DindOptions, who: str, pool_id: str
    ) -> tuple[str, DindInfo]:
        """Start an unassigned daemon for a pool: (container id, info named after its instance).

        With `options.cache` the daemon runs on that key's volume, claimed as `up` claims it.
        """
        instance = naming.new_instance(None)
        made = _Made(instance)
        try:
            # A keyed daemon takes its key's volume only when no live daemon holds it
            # (cache.CacheBusy at once otherwise: the pool tries again later).
            claim = (
                cache.claim(self.state, self.api, options.cache, 0.0, _quiet)
                if options.cache
                else contextlib.nullcontext()
            )
            with claim:
                self._create(
                    options,
                    made,
                    naming.pool_container_name(instance),
                    who,
                    {naming.LABEL_POOL: pool_id},
                    None,
                )
            info = self._start_and_wait(options, made, instance, who)
        except BaseException:
            self._undo(made, options)
            raise
        assert made.container
        return made.container, info

    def assign(self, container: str, name: str, warm: DindInfo | None = None) -> DindInfo:
        """Hand a warm daemon over to NAME (rename: the name is the assignment).

        With `warm` (what `launch_warm` returned) the answer is built from it: a
        rename changes nothing else, and the hand-out is on `up`'s critical path.
        """
        try:
            self.api.rename(container, naming.container_name(name))
        except docker.errors.APIError as error:
            if error.status_code == 409:
                raise ConfigError(f"a dind daemon named {name} already exists") from None
            raise EngineError(f"cannot rename the daemon container: {explain(error)}") from None
        if warm is not None:
            return dataclasses.replace(warm, name=name)
        return self._info_from(self.api.inspect_container(container), name)

    def destroy(self, container: str) -> list[str]:
        """Remove one daemon container and everything of its instance."""
        try:
            details = self.api.inspect_container(container)
        except docker.errors.NotFound:
            return []
        return self._remove_instance(details)

    # ---------------------------------------------------------------- preload

    def nested_client(self, info: DindInfo) -> docker.APIClient:
        tls = TLSConfig(
            client_cert=(str(info.cert_path / "cert.pem"), str(info.cert_path / "key.pem")),
            ca_cert=str(info.cert_path / "ca.pem"),
            verify=True,
        )
        with engine_errors("cannot reach the nested daemon"):
            # The nested daemon's API is at least the host engine's era; a fixed
            # version spares a round trip (the SDK would ask /version first).
            nested = docker.APIClient(
                base_url=f"https://{info.host_url[len('tcp://') :]}",
                tls=tls,
                version="1.41",
                timeout=300,
            )
        # requests lets REQUESTS_CA_BUNDLE override the per-session CA: that would
        # verify the daemon against the system's CAs instead of ours.
        nested.trust_env = False
        return nested

    def preload(self, info: DindInfo, images: tuple[str, ...] | list[str]) -> None:
        """Stream `docker save` on the host engine into `docker load` nested (no temp file)."""
        nested = self.nested_client(info)
        try:
            with engine_errors("cannot preload"):
                for image in images:
                    self.progress(f"preloading {image}")
                    stream = self.api.get_image(image, chunk_size=1 << 20)
                    for message in nested.load_image(stream):  # type: ignore[no-untyped-call]
                        if isinstance(message, dict) and message.get("error"):
                            raise EngineError(f"--preload {image}: {message['error']}")
        finally:
            nested.close()

    # ---------------------------------------------------------------- queries

    def _daemon(self, name: str) -> dict[str, Any]:
        try:
            naming.validate_name(name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        with engine_errors(f"cannot inspect {name}", not_found=f"no dind daemon named {name}"):
            details = self.api.inspect_container(naming.container_name(name))
        labels = details["Config"]["Labels"] or {}
        if labels.get(naming.LABEL_ROLE) != naming.ROLE_DAEMON:
            raise NotFoundError(f"no dind daemon named {name} (the container is not dockmoat's)")
        return dict(details)

    def info(self, name: str) -> DindInfo:
        details = self._daemon(name)
        if details["State"]["Status"] != "running":
            raise EngineError(
                f"dind daemon {name} is {details['State']['Status']}; `dockmoat dind down {name}`"
            )
        return self._info_from(details, name)

    def list_daemons(self) -> list[DaemonRow]:
        rows = []
        for item in self.api.containers(
            all=True, filters={"label": f"{naming.LABEL_ROLE}={naming.ROLE_DAEMON}"}
        ):
            container = str(item["Names"][0]).lstrip("/")
            labels = item.get("Labels") or {}
            instance = labels.get(naming.LABEL_INSTANCE, "?")
            assigned = naming.assigned_name(container)
            if assigned is None:
                label = "(pool)" if container.startswith(naming.POOL_PREFIX) else "(starting)"
                display = f"{label} {instance}"
            else:
                display = assigned
            try:
                host_config = self.api.inspect_container(item["Id"])["HostConfig"]
            except docker.errors.NotFound:
                continue
            ports = [p.get("PublicPort") for p in item.get("Ports") or [] if p.get("PublicPort")]
            rows.append(
                DaemonRow(
                    name=display,
                    instance=instance,
                    state=str(item.get("State", "?")),
                    created=float(item.get("Created", 0)),
                    memory=host_config.get("Memory") or None,
                    cpus=(host_config.get("NanoCpus") or 0) / 1e9 or None,
                    pids_limit=host_config.get("PidsLimit") or None,
                    cache=labels.get(naming.LABEL_CACHE),
                    port=int(ports[0]) if ports else None,
                )
            )
        return sorted(rows, key=lambda r: r.created)

    def logs(self, name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[bytes]:
        details = self._daemon(name)
        stream = self.api.logs(
            details["Id"], stream=True, follow=follow, tail=tail if tail is not None else "all"
        )
        yield from stream

    # ---------------------------------------------------------------- down / gc

    def down(self, name: str) -> list[str]:
        """Remove NAME's container, network, non-cache volume, certificates and context."""
        details = self._daemon(name)
        removed = self._remove_instance(details)
        if contexts.remove(self.docker_config, naming.context_name(name)):
            removed.append(f"context {naming.context_name(name)}")
        return removed

    def _remove_instance(self, details: dict[str, Any]) -> list[str]:
        labels = details["Config"]["Labels"] or {}
        instance = labels[naming.LABEL_INSTANCE]
        removed = []
        name = str(details["Name"]).lstrip("/")
        try:
            with engine_errors(f"cannot remove {name}", leave=(docker.errors.NotFound,)):
                if labels.get(naming.LABEL_CACHE) and details["State"]["Status"] == "running":
                    # A cache outlives this daemon: let dockerd shut down cleanly so the
                    # next daemon with the key finds a consistent data root.
                    self.api.stop(details["Id"], timeout=15)
                self.api.remove_container(details["Id"], force=True, v=True)
            removed.append(f"container {name}")
        except docker.errors.NotFound:
            pass  # already gone
        removed += self._remove_resources(instance)
        return removed

    def _remove_resources(self, instance: str) -> list[str]:
        removed = []
        network = naming.network_name(instance)
        try:
            with engine_errors(f"cannot remove network {network}", leave=(docker.errors.NotFound,)):
                self.api.remove_network(network)
            removed.append(f"network {network}")
        except docker.errors.NotFound:
            pass  # already gone
        volume = naming.data_volume_name(instance)
        try:
            with engine_errors(f"cannot remove volume {volume}", leave=(docker.errors.NotFound,)):
                self.api.remove_volume(volume)
            removed.append(f"volume {volume}")
        except docker.errors.NotFound:
            pass  # already gone
        if self.state.remove_daemon(instance):
            removed.append(f"certificates {self.state.daemon_dir(instance)}")
        return removed

    def gc(self) -> list[str]:
        """Remove what crashed runs left: only resources whose daemon is provably gone."""
        removed: list[str] = []
        now = time.time()
        live: set[str] = set()
        gone: set[str] = set()
        assigned: set[str] = set()
        items = self.api.containers(
            all=True, filters={"label": f"{naming.LABEL_ROLE}={naming.ROLE_DAEMON}"}
        )
        for item in items:
            container = str(item["Names"][0]).lstrip("/")
            labels = item.get("Labels") or {}
            instance = labels.get(naming.LABEL_INSTANCE, "")
            state = str(item.get("State", ""))
            age = now - float(item.get("Created", now))
            stopped = state in ("exited", "dead")
            if naming.assigned_name(container) is not None:
                dead = stopped
            else:
                # Half-started by `up`, or warm in a pool: gone when its claimant
                # (the `up` or pool process) provably died, or stopped long ago.
                dead = claimant.provably_dead(labels.get(naming.LABEL_CLAIMANT)) or (
                    stopped and age > GC_GRACE
                )
            if dead:
                with contextlib.suppress(docker.errors.NotFound):
                    self.api.remove_container(item["Id"], force=True, v=True)
                    removed.append(f"container {container}")
                gone.add(instance)
            else:
                live.add(instance)
                name = naming.assigned_name(container)
                if name:
                    assigned.add(name)

        def orphaned(instance: str, who: str | None, created: float) -> bool:
            if instance in live:
                return False
            return instance in gone or claimant.provably_dead(who) or now - created > GC_GRACE

        for net in self.api.networks(
            filters={"label": f"{naming.LABEL_ROLE}={naming.ROLE_NETWORK}"}
        ):
            labels = net.get("Labels") or {}
            instance = labels.get(naming.LABEL_INSTANCE, "")
            if orphaned(
                instance, labels.get(naming.LABEL_CLAIMANT), _timestamp(net.get("Created"), now)
            ):
                with contextlib.suppress(docker.errors.NotFound):
                    self.api.remove_network(net["Id"])
                    removed.append(f"network {net['Name']}")
        volumes = (
            self.api.volumes(filters={"label": f"{naming.LABEL_ROLE}={naming.ROLE_DATA}"}).get(
                "Volumes"
            )
            or []
        )
        for vol in volumes:
            labels = vol.get("Labels") or {}
            instance = labels.get(naming.LABEL_INSTANCE, "")
            if orphaned(
                instance, labels.get(naming.LABEL_CLAIMANT), _timestamp(vol.get("CreatedAt"), now)
            ):
                try:
                    self.api.remove_volume(vol["Name"])
                    removed.append(f"volume {vol['Name']}")
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError:
                    pass  # still mounted by a container gc may not touch
        other_engines: set[str] = set()
        for instance in self.state.instances():
            engine = self.state.engine_of(instance)
            if engine and engine != self.engine:
                other_engines.add(instance)  # its daemon lives on an engine we do not see
                continue
            directory = self.state.daemon_dir(instance)
            created = directory.stat().st_mtime if directory.exists() else now
            if orphaned(
                instance, self.state.claimant_of(instance), created
            ) and self.state.remove_daemon(instance):
                removed.append(f"certificates {directory}")
        for context_name, instance in contexts.ours(self.docker_config).items():
            name = context_name[len(naming.CONTEXT_PREFIX) :]
            if name in assigned or instance in live or instance in other_engines:
                continue
            if contexts.remove(self.docker_config, context_name):
                removed.append(f"context {context_name}")
        return removed

    def close(self) -> None:
        self.client.close()


def _send_and_close(stdin: socket.socket, data: bytes) -> None:
    stdin.sendall(data)
    # End of input for the wrapper's tar; StdinOnce closes the container's stdin then.
    stdin.shutdown(socket.SHUT_WR)


def _close(stdin: socket.socket) -> None:
    # shutdown first: close() alone waits for the SDK's file wrappers to let go of
    # the socket, and until then the wrapper in the container would not see EOF.
    with contextlib.suppress(OSError):
        stdin.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        stdin.close()


def _entrypoint_of(image: dict[str, Any]) -> list[str]:
    return [str(part) for part in ((image.get("Config") or {}).get("Entrypoint") or [])]


def _timestamp(text: object, default: float) -> float:
    if not isinstance(text, str) or not text:
        return default
    try:
        # Docker writes RFC 3339 with nanoseconds; Python wants at most microseconds.
        trimmed = text.replace("Z", "+00:00")
        if "." in trimmed:
            head, _, rest = trimmed.partition(".")
            digits = "".join(c for c in rest if c.isdigit())
            zone = rest[len(digits) :]
            trimmed = f"{head}.{digits[:6]}{zone}"
        return datetime.datetime.fromisoformat(trimmed).timestamp()
    except ValueError:
        return default


__all__ = ["DaemonRow", "DindInfo", "DindManager", "DockmoatError", "engine_client"]
