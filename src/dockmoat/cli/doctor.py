"""`dockmoat doctor` (see ../shared/PRODUCT.md): the seed's troubleshooting as checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

import click

from dockmoat.errors import ConfigError

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command(name="doctor")
@click.option(
    "--host",
    "-H",
    metavar="URL",
    help="Daemon address (default: $DOCKER_HOST, else unix:///var/run/docker.sock).",
)
@click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--context",
    "-c",
    "context_name",
    metavar="NAME",
    help="Docker context (default: $DOCKER_CONTEXT, else the current one).",
)
@click.option("--dind", metavar="CONTAINER", help="Also check this DinD container on that engine.")
@click.option("--tls", is_flag=True, help="Use TLS (implied by --tlsverify).")
@click.option(
    "--tlsverify", is_flag=True, help="Use TLS and verify the daemon (default: $DOCKER_TLS_VERIFY)."
)
@click.option("--tlscacert", type=_FILE, help="CA certificate (default: $DOCKER_CERT_PATH/ca.pem).")
@click.option(
    "--tlscert", type=_FILE, help="Client certificate (default: $DOCKER_CERT_PATH/cert.pem)."
)
@click.option("--tlskey", type=_FILE, help="Client key (default: $DOCKER_CERT_PATH/key.pem).")
def command(
    host: str | None,
    output: Literal["text", "json"],
    context_name: str | None,
    dind: str | None,
    tls: bool,
    tlsverify: bool,
    tlscacert: Path | None,
    tlscert: Path | None,
    tlskey: Path | None,
) -> None:
    """Check the Docker set-up: daemon, TLS files, socket permissions, storage, DinD, MTU.

    Prints each check as ok/warn/fail with the fix; exits 1 when any check fails.
    """
    # Imported here: the docker SDK and cryptography would slow down every other command.
    from rich.console import Console

    from dockmoat.ci.doctor import contexts
    from dockmoat.ci.doctor.config import resolve
    from dockmoat.ci.doctor.gather import diagnose
    from dockmoat.ci.doctor.model import exit_status
    from dockmoat.ci.doctor.render import print_text, to_json

    if host and context_name:
        raise ConfigError("--host and --context exclude each other (as with the docker CLI)")
    context = None
    if not host and (context_name or not os.environ.get("DOCKER_HOST")):
        store = contexts.config_dir(os.environ, Path.home())
        selected = contexts.selected_name(context_name, os.environ, store)
        if selected is not None:
            context = contexts.load(selected, store)
    config = resolve(
        context=context,
        host=host,
        env=os.environ,
        home=Path.home(),
        tls=tls,
        tlsverify=tlsverify,
        tlscacert=tlscacert,
        tlscert=tlscert,
        tlskey=tlskey,
        dind=dind,
        output=output,
    )
    findings = diagnose(config)
    if output == "json":
        click.echo(to_json(findings))
    else:
        print_text(findings, Console(highlight=False))
    sys.exit(exit_status(findings))
