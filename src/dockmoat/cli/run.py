"""`dockmoat run` (see ../shared/PRODUCT.md): a CI job with Docker wired in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

# Light (pydantic only); the engine-facing modules are imported when the command runs.
from dockmoat.ci.runner.options import DEFAULT_DIND_IMAGE, DEFAULT_IMAGE, make_options, parse_env


@click.command(name="run", context_settings={"allow_interspersed_args": False})
@click.option(
    "--mode",
    type=click.Choice(["guarded", "dind", "socket"]),
    required=True,
    help="How the job gets Docker: a guarded job socket, its own nested daemon, or the raw socket.",
)
@click.option(
    "--image",
    default=DEFAULT_IMAGE,
    show_default=True,
    help="The job container's image (never pulled).",
)
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Mounted at /workspace, the working directory (default: the current folder).",
)
@click.option(
    "--preload",
    multiple=True,
    metavar="IMAGE",
    help="dind: copy this host image into the nested daemon first (repeatable).",
)
@click.option(
    "--cache",
    metavar="KEY",
    help="dind: keep the nested daemon's data root (layers, build cache) per KEY for the "
    "next run with the same KEY; one run at a time per KEY.",
)
@click.option(
    "--rootless",
    is_flag=True,
    help="dind: run the nested dockerd rootless (needs a rootless --dind-image).",
)
@click.option(
    "--no-privileged",
    "unprivileged",
    is_flag=True,
    help="dind, with --rootless: the nested daemon's container without --privileged.",
)
@click.option(
    "--runtime",
    metavar="NAME",
    help="dind: the nested daemon's OCI runtime (see `dockmoat dind up --runtime`).",
)
@click.option(
    "--env",
    "-e",
    "env",
    multiple=True,
    metavar="KEY[=VALUE]",
    help="Set a variable in the job (repeatable).",
)
@click.option(
    "--dind-image",
    default=DEFAULT_DIND_IMAGE,
    show_default=True,
    help="dind: the nested daemon's image.",
)
@click.option(
    "--entrypoint",
    metavar="PROGRAM",
    help="Replace the image's ENTRYPOINT, which otherwise runs with COMMAND as its "
    'arguments (as GitLab\'s Docker executor does); --entrypoint "" runs COMMAND itself.',
)
@click.option(
    "--host",
    "-H",
    "docker_host",
    metavar="URL",
    help="The engine (default: $DOCKER_HOST, else the local socket).",
)
@click.option(
    "--control",
    type=click.Path(path_type=Path),
    envvar="DOCKMOAT_CONTROL",
    help="guarded: the control socket of `dockmoat serve` (default /run/dockmoat/control.sock).",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress lines on stderr (warnings and the summary stay).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def command(
    mode: str,
    image: str,
    workspace: Path | None,
    preload: tuple[str, ...],
    cache: str | None,
    rootless: bool,
    unprivileged: bool,
    runtime: str | None,
    env: tuple[str, ...],
    dind_image: str,
    docker_host: str | None,
    control: Path | None,
    entrypoint: str | None,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in a job container with Docker wired in; exit with its exit code.

    \b
    dockmoat run --mode dind -- sh pipeline.sh
    dockmoat run --mode guarded --image docker:27-cli -- docker build .

    Streams the job's output, forwards Ctrl-C/SIGTERM to it and removes all that
    the run made (the job container, the nested daemon or job socket) in every case.
    """
    from dockmoat.ci.runner import session

    options = make_options(
        mode=mode,
        command=command,
        image=image,
        workspace=(workspace or Path.cwd()).resolve(),
        preload=preload,
        cache=cache,
        rootless=rootless,
        unprivileged=unprivileged,
        runtime=runtime,
        env=parse_env(env, dict(os.environ)),
        dind_image=dind_image,
        docker_host=docker_host,
        control=control,
        entrypoint=entrypoint,
    )

    def progress(message: str) -> None:
        click.echo(f"dockmoat run: {message}", err=True)

    sys.exit(session.run(options, progress=None if quiet else progress))
