"""`dockmoat audit FILE...` (see ../shared/PRODUCT.md and docs/audit.md)."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console

from dockmoat.ci.audit import Kind, audit_paths
from dockmoat.ci.audit.report import render_text, to_json, to_sarif


@click.command(name="audit")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--type",
    "kind",
    type=click.Choice([k.value for k in Kind]),
    default=None,
    help="Treat every FILE as this kind instead of detecting it from name and content.",
)
@click.option(
    "--lenient",
    is_flag=True,
    help="Report files that cannot be audited as low `unreadable` findings, not high ones.",
)
def command(files: tuple[str, ...], fmt: str, kind: str | None, lenient: bool) -> None:
    """Report how CI files and the runners they run on hand out Docker.

    Reads compose files, .gitlab-ci.yml, GitHub workflows, Jenkinsfiles (with their
    Kubernetes pod templates), GitLab Runner config.toml and Kubernetes/ARC runner
    configs. Files given together are judged together (a runner config is the context
    of the CI files beside it).

    Exit status: 1 when any finding is high, including a file that could not be
    audited (an `unreadable` finding, and one line on stderr) unless --lenient;
    otherwise 0.
    """
    result = audit_paths(files, Kind(kind) if kind else None, lenient=lenient)
    for error in result.errors:
        click.echo(f"dockmoat audit: {error.file}: {error.reason}", err=True)
    if fmt == "json":
        click.echo(to_json(result.findings))
    elif fmt == "sarif":
        click.echo(json.dumps(to_sarif(result.findings, result.errors), indent=2))
    else:
        # rich colours only on a terminal; piped output stays plain text.
        console = Console(file=sys.stdout, highlight=False)
        render_text(result.findings, result.files, result.errors, console)
    sys.exit(result.exit_code)
