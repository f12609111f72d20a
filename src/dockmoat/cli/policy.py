"""`dockmoat policy show | validate | check` (see ../shared/PRODUCT.md).

No daemon is needed: `check` routes and evaluates one request exactly as the
gateway would, and prints the decision.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dockmoat.errors import ConfigError, ProtocolError
from dockmoat.policy import trial
from dockmoat.policy.decision import Deny, Rewrite
from dockmoat.policy.engine import CompiledPolicy, load_policy
from dockmoat.policy.policyfile import PROFILES
from dockmoat.policy.weakening import OVERRIDE_FLAG, check_extends, weakenings

_PROFILE = click.Choice(PROFILES)


@click.group(name="policy")
def command() -> None:
    """Show, validate and try out the request policy."""


def _load(profile: str, policy_file: Path | None, allow_bind: tuple[Path, ...]) -> CompiledPolicy:
    return load_policy(profile=profile, policy_file=policy_file, allow_bind=allow_bind)


@command.command(name="show")
@click.option("--profile", type=_PROFILE, default="baseline", show_default=True)
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), default=None)
def show(profile: str, policy_file: Path | None) -> None:
    """List every rule: id, resource, enabled, rationale."""
    policy = _load(profile, policy_file, ())
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"dockmoat policy: {policy.profile}")
        for column in ("id", "resource", "enabled", "rationale"):
            table.add_column(column, overflow="fold")
        for rule in policy.rules:
            table.add_row(rule.id, rule.resource, "yes" if rule.enabled else "no", rule.rationale)
        Console().print(table)
        return
    click.echo(f"# profile: {policy.profile}")
    for rule in policy.rules:
        enabled = "yes" if rule.enabled else "no"
        click.echo(f"{rule.id}\t{rule.resource}\t{enabled}\t{rule.rationale}")


@command.command(name="validate")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--profile",
    type=_PROFILE,
    default=None,
    help="The profile serve runs with: a file extending another one is refused.",
)
@click.option(
    OVERRIDE_FLAG,
    "override",
    is_flag=True,
    help="Let the file's `extends` win over --profile.",
)
@click.option("--strict", is_flag=True, help="Exit 1 when the file weakens its profile.")
def validate(file: Path, profile: str | None, override: bool, strict: bool) -> None:
    """Check a policy file; exit 1 with line-numbered errors when it is bad.

    Names every rule the file disables and every setting it loosens relative to the
    profile it extends."""
    try:
        policy = load_policy(profile=profile or "baseline", policy_file=file, env={})
        check_extends(policy.file, str(file), profile, override=override)
    except ConfigError as error:
        click.echo(f"dockmoat: {error}", err=True)
        sys.exit(1)
    enabled = sum(1 for rule in policy.rules if rule.enabled)
    click.echo(f"{file}: valid (extends {policy.profile}, {enabled} rules enabled)")
    weaker = weakenings(policy)
    for line in weaker:
        click.echo(f"{file}: weakens {policy.profile}: {line}")
    if strict and weaker:
        sys.exit(1)


@command.command(name="check")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), default=None)
@click.option("--profile", type=_PROFILE, default="baseline", show_default=True)
@click.option("--allow-bind", "allow_bind", type=click.Path(path_type=Path), multiple=True)
@click.option("--method", required=True, help="HTTP method, e.g. POST; GRPC for a BuildKit call")
@click.option(
    "--path",
    "target",
    required=True,
    help="target, e.g. /v1.41/containers/create, or /moby.buildkit.v1.Control/Solve",
)
@click.option(
    "--body",
    "body_file",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON body (with GRPC: the protobuf message); - for stdin",
)
def check(
    policy_file: Path | None,
    profile: str,
    allow_bind: tuple[Path, ...],
    method: str,
    target: str,
    body_file: Path | None,
) -> None:
    """Print the decision for one request (exit 0 allow/rewrite, 1 deny)."""
    policy = _load(profile, policy_file, allow_bind)
    raw = b""
    if body_file is not None and str(body_file) == "-":
        raw = sys.stdin.buffer.read()
    elif body_file is not None:
        try:
            raw = body_file.read_bytes()
        except OSError as error:
            raise ConfigError(f"--body {body_file}: {error.strerror}") from None
    if method.upper() == "GRPC":
        call = trial.grpc_call(target, raw, listener="cli")
        if call is None:
            click.echo("ALLOW allow (this call's messages carry nothing the policy decides)")
            return
        request = call
        decision = policy.evaluate_build(call)
    else:
        try:
            request = trial.routed(method, target, listener="cli")
            body = trial.with_json_body(request, raw)
        except ProtocolError as error:
            # The gateway would answer 400: this request is not forwarded either (exit 1).
            click.echo(f"REFUSED (400, malformed): {error}")
            sys.exit(1)
        decision = policy.evaluate(body)
    click.echo(f"route: {request.route.name}")
    if isinstance(decision, Deny):
        click.echo(f"DENY {decision.rule}")
        click.echo(decision.message)
        sys.exit(1)
    if isinstance(decision, Rewrite):
        click.echo(f"REWRITE {decision.rule}")
        for note in decision.notes:
            click.echo(f"note: {note}")
        if decision.body_json is not None and not request.route.name.startswith("buildkit."):
            click.echo(json.dumps(decision.body_json, indent=2, ensure_ascii=False))
        return
    click.echo(f"ALLOW {decision.rule}")
