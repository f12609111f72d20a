"""`dockmoat generate gitlab|github|jenkins|compose --mode dind|guarded` (docs/generate.md)."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from dockmoat.ci.generate import Options, System, generate
from dockmoat.ci.generate.options import (
    DEFAULT_DIND_IMAGE,
    DEFAULT_DOCKMOAT_IMAGE,
    DEFAULT_JOB_IMAGE,
)
from dockmoat.errors import ConfigError


@click.command(name="generate")
@click.argument("system", type=click.Choice([s.value for s in System]))
@click.option(
    "--mode",
    type=click.Choice(["dind", "guarded"]),
    default="dind",
    show_default=True,
    help="dind: a nested daemon with TLS per job; guarded: dockmoat's guarded socket.",
)
@click.option("--dind-image", default=DEFAULT_DIND_IMAGE, show_default=True)
@click.option(
    "--job-image",
    default=DEFAULT_JOB_IMAGE,
    show_default=True,
    help="The Docker client image the job runs in.",
)
@click.option(
    "--dockmoat-image",
    default=DEFAULT_DOCKMOAT_IMAGE,
    show_default=True,
    help="compose --mode guarded: the image running `dockmoat serve` (built from this repository).",
)
@click.option(
    "--registry",
    default="",
    help="Registry (and path) to push to; default: GitLab's or GitHub's own registry, "
    "registry.example.com elsewhere.",
)
@click.option(
    "--image-name",
    default="myapp",
    show_default=True,
    help="Name of the image the pipeline builds.",
)
@click.option(
    "--test-command", default="npm test", show_default=True, help="Run inside the built image."
)
@click.option("--memory", default="4g", show_default=True, help="DinD memory limit.")
@click.option("--cpus", default=2.0, show_default=True, type=float, help="DinD CPU limit.")
@click.option("--pids-limit", default=4096, show_default=True, type=int, help="DinD PID limit.")
@click.option(
    "--socket",
    default="/run/dockmoat/docker.sock",
    show_default=True,
    help="guarded: the guarded socket's path on the runner host.",
)
@click.option(
    "--wait",
    "wait_seconds",
    default=60,
    show_default=True,
    type=int,
    help="Seconds to wait for the daemon.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of stdout.",
)
def command(system: str, mode: str, output: Path | None, **knobs: object) -> None:
    """Print a complete, commented CI configuration with Docker wired in safely."""
    try:
        options = Options.model_validate({"system": system, "mode": mode, **knobs})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"--{where.replace('_', '-')}: {first['msg']}") from error
    text = generate(options)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write {output}: {error.strerror or error}") from error
    click.echo(f"wrote {output}", err=True)
