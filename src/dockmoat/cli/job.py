"""`dockmoat job open|close|ls` (see ../shared/PRODUCT.md): talks to `dockmoat serve`."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from dockmoat.errors import ConfigError
from dockmoat.tenancy import control as ctl
from dockmoat.tenancy.durations import format_duration, parse_duration
from dockmoat.tenancy.names import validate_job_name

_SIZE = re.compile(r"^(\d+)([bkmg]?)b?$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _parse_size(text: str) -> int:
    match = _SIZE.match(text.strip().lower())
    if not match:
        raise ConfigError(f"invalid size {text!r}: use e.g. 512m or 2g")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


_control_option = click.option(
    "--control",
    type=click.Path(path_type=Path),
    default=ctl.DEFAULT_CONTROL,
    envvar="DOCKMOAT_CONTROL",
    show_default=True,
    help="The control socket of the running `dockmoat serve`.",
)


@click.group(name="job")
def command() -> None:
    """Per-job Docker sockets on a running `dockmoat serve`."""


@command.command(name="open")
@click.argument("job")
@click.option("--workspace", type=click.Path(), help="The job's only allowed bind-mount folder.")
@click.option("--policy", type=click.Path(), help="A policy file for this job's socket.")
@click.option("--ttl", help="Close the job automatically after this long (e.g. 2h).")
@click.option("--max-containers", type=click.IntRange(min=0), help="Quota: running containers.")
@click.option("--max-memory", help="Quota: total memory limit of the job's containers (e.g. 4g).")
@click.option("--max-volumes", type=click.IntRange(min=0), help="Quota: volumes.")
@click.option(
    "--warn",
    is_flag=True,
    help="Roll-out: requests the policy would deny are forwarded and audited as would_deny.",
)
@click.option("--format", "fmt", type=click.Choice(["env", "json"]), default="env")
@_control_option
def open_job(
    job: str,
    workspace: str | None,
    policy: str | None,
    ttl: str | None,
    max_containers: int | None,
    max_memory: str | None,
    max_volumes: int | None,
    warn: bool,
    fmt: str,
    control: Path,
) -> None:
    """Open JOB and print DOCKER_HOST for its socket."""
    validate_job_name(job)  # bad input says so (exit 2) even with no serve to ask
    request: dict[str, Any] = {
        "op": "open",
        "job": job,
        "workspace": str(Path(workspace).resolve()) if workspace else None,
        "policy": str(Path(policy).resolve()) if policy else None,
        "ttl": parse_duration(ttl) if ttl else None,
        "quotas": {
            "running_containers": max_containers,
            "memory_bytes": _parse_size(max_memory) if max_memory else None,
            "volumes": max_volumes,
        },
    }
    if warn:  # only when asked: a server from before `--warn` refuses the field
        request["warn"] = True
    if policy:
        _say_weakenings(Path(policy))
    answer = ctl.call(control, request)
    if fmt == "json":
        click.echo(json.dumps({"job": answer["job"], "DOCKER_HOST": answer["docker_host"]}))
    else:
        # As `dind up` prints it: starts with DOCKER_HOST= and `eval` exports it.
        click.echo(f"DOCKER_HOST={shlex.quote(answer['docker_host'])}; export DOCKER_HOST")


def _say_weakenings(policy: Path) -> None:
    """Name what the job's policy file disables or loosens (on stderr: stdout is for eval)."""
    from dockmoat.policy.engine import load_policy
    from dockmoat.policy.weakening import weakenings

    compiled = load_policy(policy_file=policy, env={})  # ConfigError: a bad file, exit 2
    for line in weakenings(compiled):
        click.echo(f"dockmoat: job policy {policy} weakens {compiled.profile}: {line}", err=True)


@command.command(name="close")
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@_control_option
def close_job(job: str, fmt: str, control: Path) -> None:
    """Close JOB: remove its socket and everything it owns, and print what was removed."""
    answer = ctl.call(control, {"op": "close", "job": job})
    removed: dict[str, list[str]] = answer["removed"]
    denials: list[dict[str, Any]] = answer.get("denials", [])
    if fmt == "json":
        click.echo(json.dumps({"job": job, "removed": removed, "denials": denials}))
        return
    total = 0
    for kind in ("containers", "networks", "volumes", "images"):
        for name in removed.get(kind, []):
            click.echo(f"removed {kind[:-1]} {name}")
            total += 1
    for name in removed.get("kept", []):
        click.echo(f"kept {name}")  # each entry says what it is (image, network)
    click.echo(f"job {job} closed ({total} removed)")
    for item in denials:
        what = "would have denied" if item["decision"] == "would_deny" else "denied"
        click.echo(f"{what} {item['count']}x {item['rule']}")
    if not denials:
        click.echo("no request was denied")


@command.command(name="ls")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@_control_option
def ls_jobs(fmt: str, control: Path) -> None:
    """List open jobs, their age, TTL and what they own."""
    jobs: list[dict[str, Any]] = ctl.call(control, {"op": "ls"})["jobs"]
    if fmt == "json":
        click.echo(json.dumps(jobs))
        return
    table = Table(box=None)
    for column in ("JOB", "AGE", "TTL", "CONTAINERS", "VOLUMES", "NETWORKS", "IMAGES", "SOCKET"):
        table.add_column(column)
    for job in jobs:
        owned = job["owned"]
        table.add_row(
            job["job"],
            job["age"],
            format_duration(job["ttl"]) if job["ttl"] else "-",
            str(owned.get("container", 0)),
            str(owned.get("volume", 0)),
            str(owned.get("network", 0)),
            str(owned.get("image", 0)),
            job["socket"],
        )
    Console(width=200).print(table)
