"""What a nested daemon is made of on the engine: its network, its data volume
(or its cache key's), its container with stdin attached; `undo` removes what a
failed launch made."""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import docker.errors

from dockmoat.dind import naming, spec
from dockmoat.dind.engine import Engine
from dockmoat.errors import EngineError, config_errors
from dockmoat.netinfo import host_uplink
from dockmoat.sdkerrors import engine_errors

if TYPE_CHECKING:
    from dockmoat.dind.certs import KeyPair

# What `state.image_fact` calls the answer to "does this image's dockerd take
# --default-network-opt?" (spec.RECEIVE_CERTS).
NETWORK_OPT_FACT = "network-opt"


@dataclass(slots=True)
class Made:
    """What a launch created so far, for clean-up on failure."""

    instance: str
    network: str | None = None
    container: str | None = None
    volume: str | None = None
    cert_dir: bool = False
    dns: list[str] = field(default_factory=list)
    # Attached to the container's stdin before its start: the certificates go in there.
    stdin: socket.socket | None = None
    # The DinD image's ID, when its wrapper asks its dockerd whether it takes
    # --default-network-opt (once per image: the answer is remembered from its log).
    ask_network_opt: str | None = None
    # The manager CA, read (and `cryptography` imported) in the background while the
    # engine creates and starts the container; None: read it when needed.
    ca: concurrent.futures.Future[KeyPair] | None = None


def host_mtu(engine: Engine) -> int:
    """The nested daemon's MTU: the engine bridge's (1500 when it sets none), or this
    host's uplink when that is smaller and the engine runs here (a unix socket).

    A nested bridge wider than the way out drops large packets without a word
    (pulls hang, TLS stalls): cloud VMs often have 1460 or less while docker0
    keeps 1500.
    """
    try:
        bridge = engine.api.inspect_network("bridge")
        mtu = int((bridge.get("Options") or {}).get("com.docker.network.driver.mtu", 1500))
    except (docker.errors.APIError, ValueError):
        mtu = 1500
    if engine.engine.startswith("unix://"):
        uplink = host_uplink()
        if uplink is not None and 576 <= uplink[1] < mtu:
            return uplink[1]
    return mtu


def create(
    engine: Engine,
    options: spec.DindOptions,
    made: Made,
    container_name: str,
    who: str,
    extra_labels: dict[str, str],
    name: str | None,
    entrypoint: list[str] | None = None,
    image_id: str = "",
    mtu: int | None = None,
) -> None:
    """Make the daemon's network, volume and container, and attach to its stdin.

    `entrypoint` and `image_id`: the DinD image's, when the caller inspected it
    already (None: inspected here); `mtu`: `host_mtu`'s answer, when the caller
    asked already (`options.mtu` comes first either way).
    """
    instance = made.instance
    mtu = options.mtu or mtu or host_mtu(engine)
    network = naming.network_name(instance)
    made.network = network  # before it exists: a failure half-way still removes it
    engine.progress(f"creating network {network}")
    engine.progress(f"creating container {container_name}")

    def container() -> None:
        create_container(engine, options, made, mtu, container_name, who, extra_labels,
                         name, entrypoint, image_id)  # fmt: skip

    # The engine resolves a container's network at start, not at create, so
    # the network (the slowest step here) is made while the container is
    # created and attached; leaving the `with` waits for it in every case.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        network_made = pool.submit(create_network, engine, network, mtu, instance, who)
        try:
            container()
        except docker.errors.NotFound:
            # An engine that wants the network to exist first: create afterwards.
            network_made.result()
            with engine_errors("cannot create the daemon container"):
                container()
        made.stdin = attach_stdin(engine, made.container or "")
        network_made.result()


def create_network(engine: Engine, network: str, mtu: int, instance: str, who: str) -> None:
    with engine_errors(f"cannot create network {network}"):
        engine.api.create_network(
            network,
            driver="bridge",
            options=spec.network_options(mtu),
            labels=spec.labels(instance, naming.ROLE_NETWORK, who),
            check_duplicate=True,
        )


def create_container(
    engine: Engine,
    options: spec.DindOptions,
    made: Made,
    mtu: int,
    container_name: str,
    who: str,
    extra_labels: dict[str, str],
    name: str | None,
    entrypoint: list[str] | None,
    image_id: str = "",
) -> None:
    instance = made.instance
    assert made.network
    if entrypoint is None:
        details = inspect_image(engine, options.image)
        entrypoint, image_id = entrypoint_of(details), str(details.get("Id") or "")
    network_opt = None
    if mtu != spec.DOCKERD_MTU:
        known = engine.state.image_fact(image_id, NETWORK_OPT_FACT) if image_id else None
        network_opt = {"yes": True, "no": False}.get(known or "")
        made.ask_network_opt = image_id if network_opt is None and image_id else None
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
    with config_errors(f"{options.image}: "):
        config = spec.container_config(
            options,
            instance=instance,
            network=made.network,
            image_entrypoint=entrypoint,
            volume=volume,
            mtu=mtu,
            container_labels=container_labels,
            volume_labels=volume_labels,
            network_opt=network_opt,
        )
    # NotFound is left to _create: maybe only the network is not there yet.
    with engine_errors("cannot create the daemon container", leave=(docker.errors.NotFound,)):
        created = engine.api.create_container_from_config(config, name=container_name)  # type: ignore[no-untyped-call]
    made.container = str(created["Id"])


def inspect_image(engine: Engine, image: str) -> dict[str, Any]:
    with engine_errors(f"cannot inspect image {image}"):
        details: dict[str, Any] = engine.api.inspect_image(image)  # type: ignore[no-untyped-call]
    return details


def attach_stdin(engine: Engine, container: str) -> socket.socket:
    with engine_errors("cannot attach to the daemon container"):
        attached = engine.api.attach_socket(container, params={"stdin": 1, "stream": 1})
    # The SDK hands out a SocketIO wrapper on unix sockets, the socket itself on TCP.
    raw = getattr(attached, "_sock", attached)
    if not isinstance(raw, socket.socket):
        raise EngineError(f"cannot write to the daemon container's stdin over {type(raw)}")
    return raw


def undo(engine: Engine, made: Made, options: spec.DindOptions | None = None) -> None:
    """Remove what a failed launch made; best effort, never masks the original error."""
    if made.stdin is not None:
        close_stdin(made.stdin)
    with contextlib.suppress(Exception):
        if made.container:
            engine.api.remove_container(made.container, force=True, v=True)
    with contextlib.suppress(Exception):
        if made.network:
            engine.api.remove_network(made.network)
    with contextlib.suppress(Exception):
        if made.volume:
            engine.api.remove_volume(made.volume)
    with contextlib.suppress(Exception):
        if made.cert_dir:
            engine.state.remove_daemon(made.instance)


def close_stdin(stdin: socket.socket) -> None:
    """Close a container's attached stdin (the end of input for it)."""
    # shutdown first: close() alone waits for the SDK's file wrappers to let go of
    # the socket, and until then the wrapper in the container would not see EOF.
    with contextlib.suppress(OSError):
        stdin.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        stdin.close()


def entrypoint_of(image: dict[str, Any]) -> list[str]:
    return [str(part) for part in ((image.get("Config") or {}).get("Entrypoint") or [])]
