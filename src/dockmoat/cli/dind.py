"""`dockmoat dind` (see ../shared/PRODUCT.md and docs/dind.md).

Heavy imports (the docker SDK, cryptography, rich) happen inside the commands
that need them: `up` served by a warm pool needs none of them, and Python
imports are a large part of a warm `up`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from dockmoat.dind import spec

if TYPE_CHECKING:
    from dockmoat.dind.info import DindInfo
    from dockmoat.dind.manager import DindManager

Progress = Callable[[str], None]


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through `finally`/`except BaseException`: a killed `up`
    # (SIGTERM from a CI runner's timeout) removes what it made.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[Progress]:
    """A spinner on a terminal, plain lines otherwise; always on stderr (stdout is for eval)."""
    if quiet:
        yield lambda _: None
        return
    if sys.stderr.isatty():
        from rich.console import Console

        console = Console(stderr=True)
        with console.status("dind: starting") as status:
            yield lambda message: status.update(f"dind: {message}")
        return

    def plain(message: str) -> None:
        click.echo(f"dind: {message}", err=True)

    yield plain


def _manager(
    host: str | None, state_dir: Path | None, progress: Progress | None = None
) -> DindManager:
    from dockmoat.dind.manager import DindManager

    return DindManager(host=host, state_dir=state_dir, progress=progress)


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--host",
        "-H",
        metavar="URL",
        default=None,
        help="Engine to run daemons on (default: DOCKER_HOST, else the local socket).",
    )(func)
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="DOCKMOAT_STATE_DIR",
        default=None,
        help="CA and certificates (default /var/lib/dockmoat/dind as root, "
        "else $XDG_STATE_HOME/dockmoat/dind).",
    )(func)


def _shape_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that decide what a daemon looks like (shared by `up` and `pool`)."""
    decorators = [
        click.option("--image", default=spec.DEFAULT_IMAGE, show_default=True, help="DinD image."),
        click.option("--memory", "-m", metavar="SIZE", help="Memory limit, e.g. 2g."),
        click.option("--cpus", metavar="N", help="CPU limit, e.g. 1.5."),
        click.option("--pids-limit", type=int, default=spec.DEFAULT_PIDS_LIMIT, show_default=True),
        click.option(
            "--rootless",
            is_flag=True,
            help="dockerd under rootlesskit as the image's user (a rootless DinD image).",
        ),
        click.option(
            "--no-privileged",
            "unprivileged",
            is_flag=True,
            help="With --rootless: no --privileged, only what rootlesskit needs (no nested "
            "--privileged containers).",
        ),
        click.option(
            "--runtime",
            metavar="NAME",
            help="OCI runtime of the daemon's container (sysbox-runc: without --privileged).",
        ),
        click.option("--mtu", type=int, help="MTU (default: the engine's default bridge MTU)."),
        click.option(
            "--address-pool",
            "address_pools",
            multiple=True,
            metavar="base=CIDR,size=N",
            help="Nested --default-address-pool (repeatable).",
        ),
        click.option(
            "--storage-driver",
            metavar="NAME",
            help="Nested storage driver (default: dockerd's choice).",
        ),
        click.option(
            "--publish-address",
            default="127.0.0.1",
            show_default=True,
            metavar="IP",
            help="Host IP for the TLS port (a remote --host needs one its clients reach).",
        ),
        click.option(
            "--timeout",
            type=float,
            default=60.0,
            show_default=True,
            help="Seconds to wait for /_ping.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _options(**kwargs: Any) -> spec.DindOptions:
    return spec.DindOptions(
        image=kwargs["image"],
        memory=spec.parse_memory(kwargs["memory"]) if kwargs.get("memory") else None,
        cpus=spec.parse_cpus(kwargs["cpus"]) if kwargs.get("cpus") else None,
        pids_limit=kwargs["pids_limit"],
        rootless=kwargs["rootless"],
        unprivileged=kwargs.get("unprivileged", False),
        runtime=kwargs.get("runtime"),
        mtu=kwargs.get("mtu"),
        address_pools=tuple(kwargs.get("address_pools") or ()),
        storage_driver=kwargs.get("storage_driver"),
        cache=kwargs.get("cache"),
        preload=tuple(kwargs.get("preload") or ()),
        timeout=kwargs["timeout"],
        publish_address=kwargs["publish_address"],
    )


def _print_info(info: DindInfo, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(info.to_json()))
    else:
        click.echo(info.env_lines(), nl=False)


@click.group(name="dind")
def command() -> None:
    """Fresh nested Docker daemons: mutual TLS, limits, warm pools, layer caches."""


@command.command()
@click.argument("name")
@_shape_options
@click.option(
    "--preload", multiple=True, metavar="IMAGE", help="Stream a host image in (repeatable)."
)
@click.option(
    "--cache", metavar="KEY", help="Keep the data root per KEY (layer cache), used exclusively."
)
@click.option(
    "--wait-cache", type=float, default=0.0, metavar="SECONDS", help="Wait for a busy cache key."
)
@click.option(
    "--pull", is_flag=True, help="Pull the image when the engine lacks it (never by default)."
)
@click.option(
    "--format", "fmt", type=click.Choice(["env", "json"]), default="env", show_default=True
)
@click.option("--pool-socket", type=click.Path(path_type=Path), envvar="DOCKMOAT_DIND_POOL_SOCKET")
@click.option("--no-pool", is_flag=True, help="Always start a fresh daemon, even when a pool runs.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@_common
def up(
    name: str, fmt: str, pool_socket: Path | None, no_pool: bool, quiet: bool, **kwargs: Any
) -> None:
    """Start a nested daemon NAME; print its environment once it answers /_ping over mTLS."""
    from dockmoat.dind.acquire import acquire

    signal.signal(signal.SIGTERM, _terminate)
    try:
        options = _options(**kwargs)
        host, state_dir = kwargs["host"], kwargs["state_dir"]
        with _progress(quiet) as progress, contextlib.ExitStack() as opened:
            # One manager, opened only when needed: a warm hand-over does without.
            manager = functools.cache(
                lambda: opened.enter_context(_manager(host, state_dir, progress))
            )
            info, warm = acquire(
                name,
                options,
                manager,
                progress,
                host=host,
                socket_path=pool_socket,
                use_pool=not no_pool,
                wait_cache=kwargs["wait_cache"],
                pull=kwargs["pull"],
            )
            if warm:
                _finish_warm(name, options, info, manager)
    except BaseException as error:
        if fmt == "env" and not (isinstance(error, SystemExit) and not error.code):
            # `eval "$(dockmoat dind up ...)"` fails too, not only `up` (issue 21).
            click.echo("false  # dockmoat dind up failed: no daemon; see its stderr")
        raise
    _print_info(info, fmt)


def _finish_warm(
    name: str, options: spec.DindOptions, info: DindInfo, manager: Callable[[], DindManager]
) -> None:
    """What `up` does to a warm daemon itself (a cold start did its preload and docker
    context already; `acquire` checked that it answers): preload, write the docker context."""
    from dockmoat.dind import context

    if options.preload:
        manager().preload(info, options.preload)
    context.write(
        context.docker_config_dir(), info.context, info.host_url, info.instance, info.cert_path
    )


@command.command()
@click.argument("name")
@click.option(
    "--format", "fmt", type=click.Choice(["env", "json"]), default="env", show_default=True
)
@_common
def env(name: str, fmt: str, host: str | None, state_dir: Path | None) -> None:
    """Print NAME's environment again."""
    with _manager(host, state_dir) as manager:
        _print_info(manager.info(name), fmt)


def _age(created: float) -> str:
    seconds = max(0, int(time.time() - created))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _size(value: int | None) -> str:
    if not value:
        return "-"
    for unit, size in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


@command.command(name="ls")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@_common
def ls(fmt: str, host: str | None, state_dir: Path | None) -> None:
    """List nested daemons: name, age, state, limits, cache key."""
    with _manager(host, state_dir) as manager:
        rows = manager.list_daemons()
    if fmt == "json":
        click.echo(json.dumps([dataclasses.asdict(row) for row in rows]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for column in ("NAME", "AGE", "STATE", "MEMORY", "CPUS", "PIDS", "CACHE", "PORT"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row.name,
            _age(row.created),
            row.state,
            _size(row.memory),
            f"{row.cpus:g}" if row.cpus else "-",
            str(row.pids_limit or "-"),
            row.cache or "-",
            str(row.port or "-"),
        )
    # Piped output keeps whole names (rich would fit it into 80 columns).
    Console(width=None if sys.stdout.isatty() else 250).print(table)


@command.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True)
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
@_common
def logs(
    name: str, follow: bool, tail: int | None, host: str | None, state_dir: Path | None
) -> None:
    """The nested daemon's log."""
    with _manager(host, state_dir) as manager, contextlib.suppress(KeyboardInterrupt):
        for chunk in manager.logs(name, follow=follow, tail=tail):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()


@command.command()
@click.argument("name")
@_common
def down(name: str, host: str | None, state_dir: Path | None) -> None:
    """Remove NAME: container, network, non-cache volumes, certificates, context."""
    with _manager(host, state_dir) as manager:
        for item in manager.down(name):
            click.echo(f"removed {item}")


@command.command()
@_common
def gc(host: str | None, state_dir: Path | None) -> None:
    """Remove what crashed runs left behind (only resources whose daemon is gone)."""
    with _manager(host, state_dir) as manager:
        for item in manager.gc():
            click.echo(f"removed {item}")


@command.command()
@click.option(
    "--size",
    type=int,
    default=None,
    help="Warm daemons without a cache key to keep ready (default 1, or 0 with --cache).",
)
@_shape_options
@click.option(
    "--cache",
    "cache_keys",
    multiple=True,
    metavar="KEY",
    help="Also keep one warm daemon on KEY's cache volume (repeatable).",
)
@click.option(
    "--socket", "socket_path", type=click.Path(path_type=Path), envvar="DOCKMOAT_DIND_POOL_SOCKET"
)
@click.option(
    "--metrics-listen",
    metavar="URL",
    default=None,
    envvar="DOCKMOAT_DIND_POOL_METRICS_LISTEN",
    help="Prometheus /metrics and /ready on tcp://HOST:PORT or unix:///path (off by default).",
)
@_common
def pool(
    size: int | None,
    cache_keys: tuple[str, ...],
    socket_path: Path | None,
    metrics_listen: str | None,
    **kwargs: Any,
) -> None:
    """Keep SIZE warm daemons, and one per cache KEY; `up` takes one over a root-only
    unix socket (foreground)."""
    from dockmoat.dind.pool import PoolService, check_settings, metrics_endpoint
    from dockmoat.dind.pool_client import default_socket

    options = _options(**kwargs)
    if size is None:
        size = 0 if cache_keys else 1
    check_settings(size, cache_keys)  # bad input fails before the engine is asked
    socket_path = socket_path or default_socket()
    metrics = metrics_endpoint(metrics_listen, socket_path) if metrics_listen else None

    def log(message: str) -> None:
        click.echo(f"dind pool: {message}", err=True)

    with _manager(kwargs["host"], kwargs["state_dir"], log) as manager:
        manager.check_images(options)
        service = PoolService(
            manager, options, size, socket_path, cache_keys=cache_keys, metrics=metrics
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            service.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        keys = f" and one per cache key ({', '.join(service.cache_keys)})" if cache_keys else ""
        log(
            f"serving on {service.socket_path}, keeping {size} warm daemon(s){keys} "
            f"of {options.image}" + (f"; metrics on {metrics.url}" if metrics else "")
        )
        service.serve()
        log(f"stopped; handed out {service.handed_out}, removed the rest")
