"""How each mode wires Docker into the job, and takes it away again (context managers)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from dockmoat.ci.runner.options import RunOptions
from dockmoat.ci.runner.plan import Wiring, dind_wiring, guarded_wiring, socket_wiring
from dockmoat.errors import ConfigError, EngineError
from dockmoat.sdkerrors import engine_errors

Progress = Callable[[str], None]
DEFAULT_SOCKET = "/var/run/docker.sock"
# A job socket outlives a crashed `dockmoat run` at most this long (the serve reaper closes it).
GUARDED_TTL_S = 6 * 3600


def engine_url(options: RunOptions) -> str:
    return options.docker_host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def host_socket_path(url: str) -> str:
    """The local path of a unix:// engine address; the other transports cannot be mounted."""
    parts = urlsplit(url)
    if parts.scheme != "unix" or not parts.path:
        raise ConfigError(
            f"--mode socket mounts the engine's unix socket into the job; {url} is not one"
        )
    return parts.path


@contextmanager
def socket_mode(socket_path: str) -> Iterator[Wiring]:
    """`socket_path`: host_socket_path() of the engine, checked before any set-up."""
    yield socket_wiring(socket_path)


@contextmanager
def dind_mode(options: RunOptions, run_id: str, progress: Progress) -> Iterator[Wiring]:
    # Imported here: the DinD manager is only needed in this mode.
    from dockmoat.dind import spec
    from dockmoat.dind.acquire import acquire
    from dockmoat.dind.info import DindInfo
    from dockmoat.dind.manager import DindManager

    dind_options = spec.DindOptions(
        image=options.dind_image,
        preload=options.preload,
        cache=options.cache,
        rootless=options.rootless,
        unprivileged=options.unprivileged,
        runtime=options.runtime,
    )
    name = f"run-{run_id}"
    with DindManager(host=options.docker_host, progress=progress) as manager:
        info: DindInfo | None = None
        try:
            with engine_errors("starting the nested daemon failed"):
                # A failed cold start removes what it made itself, also when interrupted.
                info, warm = acquire(
                    name, dind_options, lambda: manager, progress, host=options.docker_host
                )
                if warm and dind_options.preload:
                    # The run's own step for a warm daemon (a cold start preloaded).
                    manager.preload(info, dind_options.preload)
            yield dind_wiring(info.network, str(info.cert_path), info.network_env("/certs/client"))
        finally:
            if info is not None:
                progress(f"removing nested daemon {name}")
                with engine_errors(f"removing the nested daemon {name} failed"):
                    manager.down(name)


@contextmanager
def guarded_mode(options: RunOptions, run_id: str, progress: Progress) -> Iterator[Wiring]:
    from dockmoat.tenancy import control as ctl

    control = options.control or ctl.DEFAULT_CONTROL
    job = f"run-{run_id}"
    progress(f"opening job {job} on {control}")
    answer = ctl.call(
        control,
        {
            "op": "open",
            "job": job,
            "workspace": str(options.workspace),
            "policy": None,
            "ttl": GUARDED_TTL_S,
            "quotas": {"running_containers": None, "memory_bytes": None, "volumes": None},
        },
    )
    try:
        url = str(answer["docker_host"])
        path = urlsplit(url).path
        if not url.startswith("unix://") or not Path(path).is_socket():
            raise EngineError(f"dockmoat serve answered an unusable job socket {url!r}")
        yield guarded_wiring(path)
    finally:
        progress(f"closing job {job}")
        ctl.call(control, {"op": "close", "job": job})
