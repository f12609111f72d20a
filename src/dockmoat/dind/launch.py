"""Starting a nested daemon: check the images, have its resources made
(resources.py), send the certificates in, wait for /_ping over mutual TLS; either
assigned to a name at once (`up`) or unassigned for a pool (`launch_warm`, then
`assign`). A failed launch removes what it made (`resources.undo`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import ipaddress
import socket
import time
from typing import TYPE_CHECKING, Any

import docker.errors

from dockmoat.dind import cache, claimant, diagnose, naming, preload, probe, spec
from dockmoat.dind.engine import Engine, Progress, quiet
from dockmoat.dind.info import DindInfo
from dockmoat.dind.resources import (
    NETWORK_OPT_FACT,
    Made,
    close_stdin,
    create,
    entrypoint_of,
    host_mtu,
    undo,
)
from dockmoat.errors import ConfigError, EngineError, config_errors
from dockmoat.sdkerrors import engine_errors, explain

if TYPE_CHECKING:
    from dockmoat.dind.certs import KeyPair

# How often `up` asks the nested daemon; a TLS handshake on loopback costs ~1 ms.
_POLL = 0.02
# How often it also checks whether the container died (a cheap inspect).
_STATE_EVERY = 0.5


def up(
    engine: Engine,
    name: str,
    options: spec.DindOptions,
    *,
    wait_cache: float = 0.0,
    pull: bool = False,
) -> DindInfo:
    """Start a fresh nested daemon for NAME; return once it answers /_ping over mTLS."""
    with config_errors():
        naming.validate_name(name)
    image, mtu = check(engine, name, options, pull=pull)
    who = claimant.current()
    instance = naming.new_instance(name)
    made = Made(instance, ca=read_ca_meanwhile(engine))
    try:
        with claim_cache(engine, options, wait_cache, engine.progress):
            create(
                engine,
                options,
                made,
                naming.tmp_container_name(instance),
                who,
                {},
                name,
                entrypoint_of(image),
                str(image.get("Id") or ""),
                mtu,
            )
        info = start_and_wait(engine, options, made, name, who)
        if options.preload:
            preload.preload(engine, info, options.preload)
        engine.progress(f"assigning {naming.container_name(name)}")
        assert made.container
        # Checked free before the launch; taken now means created meanwhile.
        rename(engine, made.container, name, taken=" (created meanwhile)")
        engine.write_context(info)
        return info
    except BaseException:
        # Also on Ctrl-C/SIGTERM: a failed `up` leaves nothing behind.
        undo(engine, made, options)
        raise


def claim_cache(
    engine: Engine, options: spec.DindOptions, wait: float, progress: Progress
) -> contextlib.AbstractContextManager[object]:
    """Hold `options.cache`'s key while a daemon is created on its volume (no key: nothing)."""
    if not options.cache:
        return contextlib.nullcontext()
    return cache.claim(engine.state, engine.api, options.cache, wait, progress)


def check(
    engine: Engine, name: str, options: spec.DindOptions, *, pull: bool = False
) -> tuple[dict[str, Any], int | None]:
    """Before anything is made: NAME is free (`check_free`), the images are there
    (`inspect_images`: the DinD image's inspect answer); and the MTU `create` will
    use (`host_mtu`; None when `options.mtu` gives it). The engine answers the three
    at once; the errors come in that order. A pull waits until NAME is known free."""
    if pull:
        check_free(engine, name)
        return inspect_images(engine, options, pull=True), (
            host_mtu(engine) if options.mtu is None else None
        )
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="dockmoat-check") as ask:
        images = ask.submit(inspect_images, engine, options)
        mtu = ask.submit(host_mtu, engine) if options.mtu is None else None
        try:
            check_free(engine, name)
            return images.result(), mtu.result() if mtu is not None else None
        finally:
            images.cancel()  # not started yet: NAME taken and no thread free


def check_free(engine: Engine, name: str) -> None:
    try:
        with engine_errors("cannot inspect containers", leave=(docker.errors.NotFound,)):
            engine.api.inspect_container(naming.container_name(name))
    except docker.errors.NotFound:
        return  # the name is free
    raise ConfigError(
        f"a dind daemon named {name} already exists; `dockmoat dind down {name}` first"
    )


def read_ca_meanwhile(engine: Engine) -> concurrent.futures.Future[KeyPair]:
    """The manager CA, read in a background thread: importing `cryptography` and
    reading the CA (~50 ms) overlap the engine's work on the network and container,
    which the certificates wait for anyway (they name the container's IP)."""
    reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dockmoat-ca")
    try:
        return reader.submit(engine.state.ca)
    finally:
        reader.shutdown(wait=False)


def check_images(engine: Engine, options: spec.DindOptions, *, pull: bool = False) -> list[str]:
    """Fail fast, before creating anything, when an image is missing (never pull unasked).

    Returns the DinD image's entrypoint (run after the certificate wait).
    """
    return entrypoint_of(inspect_images(engine, options, pull=pull))


def inspect_images(
    engine: Engine, options: spec.DindOptions, *, pull: bool = False
) -> dict[str, Any]:
    """`check_images`, returning the DinD image's inspect answer."""
    try:
        with engine_errors(
            f"cannot inspect image {options.image}", leave=(docker.errors.ImageNotFound,)
        ):
            image = engine.api.inspect_image(options.image)  # type: ignore[no-untyped-call]
    except docker.errors.ImageNotFound:
        if not pull:
            raise EngineError(
                f"image {options.image} is not on the engine and dockmoat does not pull "
                "unless asked: load it (docker load), pass another --image, or pass --pull"
            ) from None
        engine.progress(f"pulling {options.image}")
        with engine_errors(f"cannot pull {options.image}"):
            engine.api.pull(options.image)
            image = engine.api.inspect_image(options.image)  # type: ignore[no-untyped-call]
    if options.rootless:
        user = str((image.get("Config") or {}).get("User") or "")
        if user in ("", "0", "root", "0:0", "root:root"):
            raise ConfigError(
                f"--rootless needs a rootless DinD image (dockerd under rootlesskit as a "
                f"non-root user, such as docker:dind-rootless); {options.image} runs as root"
            )
    for extra in options.preload:
        try:
            with engine_errors(
                f"cannot inspect image {extra}", leave=(docker.errors.ImageNotFound,)
            ):
                engine.api.inspect_image(extra)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            raise EngineError(f"--preload {extra}: no such image on the host engine") from None
    with config_errors(f"{options.image}: "):
        spec.daemon_command(entrypoint_of(image), ["dockerd"])
    details: dict[str, Any] = image
    return details


def start_and_wait(
    engine: Engine, options: spec.DindOptions, made: Made, name: str, who: str
) -> DindInfo:
    assert made.container and made.network
    # Attached before the start (in _create), so the certificates go in the
    # moment the IP is known, with no round trip to the engine in between.
    stdin = made.stdin
    assert stdin is not None
    try:
        engine.progress("starting the nested daemon")
        with engine_errors("cannot start the daemon container"):
            engine.api.start(made.container)
            details = engine.api.inspect_container(made.container)
        info = engine.info_from(details, name)
        # Issued now because only now the container's IP is known; dockerd waits for them.
        engine.progress("issuing certificates")
        try:
            ips = [info.address] if info.address else []
            dns = list(made.dns)
            try:
                ips.append(str(ipaddress.ip_address(info.host_address)))
            except ValueError:
                dns.append(info.host_address)  # a remote engine's host name
            ca = made.ca.result() if made.ca is not None else engine.state.ca()
            from dockmoat.dind import certs

            daemon_certs = certs.issue_daemon_certs(ca, made.instance, dns, ips)
        except ValueError as error:
            raise EngineError(f"cannot issue certificates: {error}") from None
        made.cert_dir = True
        engine.state.write_client(made.instance, daemon_certs, who, engine.engine)
        uid = spec.ROOTLESS_UID if options.rootless else 0
        try:
            _send_and_close(stdin, certs.server_cert_tar(daemon_certs, uid, uid))
        except OSError as error:
            raise EngineError(f"cannot send the certificates in: {error}") from None
    finally:
        close_stdin(stdin)
        made.stdin = None
    engine.progress(f"waiting for /_ping on {info.host_url}")
    wait_ready(engine, info, made.container, options.timeout)
    if made.ask_network_opt:
        learn_network_opt(engine, made.container, made.ask_network_opt)
    return info


def learn_network_opt(engine: Engine, container: str, image_id: str) -> None:
    """Remember what the wrapper found out about the image's dockerd (it says so on
    stderr before it starts dockerd), so that later daemons of the image skip asking.
    Best effort: without an answer the next daemon asks again."""
    try:
        log = engine.api.logs(container, stdout=False, stderr=True)
    except docker.errors.APIError:
        return
    known = spec.network_opt_from_log(log if isinstance(log, bytes) else b"")
    if known is not None:
        with contextlib.suppress(OSError):
            engine.state.remember_image_fact(image_id, NETWORK_OPT_FACT, "yes" if known else "no")


def wait_ready(engine: Engine, info: DindInfo, container: str, timeout: float) -> None:
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
            state = container_state(engine, container)
            if state not in ("running", "created", "restarting"):
                raise EngineError(
                    f"the nested daemon stopped ({state}) before answering /_ping\n"
                    + diagnose.failure_report(engine.api, container)
                )
        if now >= deadline:
            raise EngineError(
                f"the nested daemon did not answer /_ping over mutual TLS within {timeout:g}s\n"
                + diagnose.failure_report(engine.api, container)
            )
        time.sleep(_POLL)


def container_state(engine: Engine, container: str) -> str:
    try:
        return str(engine.api.inspect_container(container)["State"]["Status"])
    except docker.errors.NotFound:
        return "removed"
    except docker.errors.APIError:
        return "unknown"


def rename(engine: Engine, container: str, name: str, *, taken: str = "") -> None:
    """Rename CONTAINER to NAME's container name: the assignment. Container names are
    unique engine-wide, so a 409 says NAME is taken (ConfigError, `taken` appended)."""
    try:
        engine.api.rename(container, naming.container_name(name))
    except docker.errors.APIError as error:
        if error.status_code == 409:
            raise ConfigError(f"a dind daemon named {name} already exists{taken}") from None
        raise EngineError(f"cannot rename the daemon container: {explain(error)}") from None


def launch_warm(
    engine: Engine, options: spec.DindOptions, who: str, pool_id: str
) -> tuple[str, DindInfo]:
    """Start an unassigned daemon for a pool: (container id, info named after its instance).

    With `options.cache` the daemon runs on that key's volume, claimed as `up` claims it.
    """
    instance = naming.new_instance(None)
    made = Made(instance, ca=read_ca_meanwhile(engine))
    try:
        # A keyed daemon takes its key's volume only when no live daemon holds it
        # (cache.CacheBusy at once otherwise: the pool tries again later).
        with claim_cache(engine, options, 0.0, quiet):
            create(
                engine,
                options,
                made,
                naming.pool_container_name(instance),
                who,
                {naming.LABEL_POOL: pool_id},
                None,
            )
        info = start_and_wait(engine, options, made, instance, who)
    except BaseException:
        undo(engine, made, options)
        raise
    assert made.container
    return made.container, info


def assign(engine: Engine, container: str, name: str, warm: DindInfo | None = None) -> DindInfo:
    """Hand a warm daemon over to NAME (rename: the name is the assignment).

    With `warm` (what `launch_warm` returned) the answer is built from it: a
    rename changes nothing else, and the hand-out is on `up`'s critical path.
    """
    rename(engine, container, name)
    if warm is not None:
        return dataclasses.replace(warm, name=name)
    return engine.info_from(engine.api.inspect_container(container), name)


def _send_and_close(stdin: socket.socket, data: bytes) -> None:
    stdin.sendall(data)
    # End of input for the wrapper's tar; StdinOnce closes the container's stdin then.
    stdin.shutdown(socket.SHUT_WR)
