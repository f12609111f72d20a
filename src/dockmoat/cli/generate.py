"""`dockmoat generate gitlab|github|jenkins|compose --mode dind|guarded` (docs/generate.md)
and `dockmoat generate kubernetes|arc|gitlab-k8s|systemd` (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from dockmoat.ci.generate import Options, System, generate
from dockmoat.ci.generate.deploy import DeployOptions, Target, render
from dockmoat.ci.generate.options import (
    DEFAULT_DIND_IMAGE,
    DEFAULT_DOCKMOAT_IMAGE,
    DEFAULT_JOB_IMAGE,
)
from dockmoat.errors import ConfigError


@click.command(name="generate")
@click.argument("system", type=click.Choice([s.value for s in System] + [t.value for t in Target]))
@click.option(
    "--mode",
    type=click.Choice(["dind", "guarded"]),
    default="dind",
    show_default=True,
    help="dind: a nested daemon with TLS per job; guarded: dockmoat's guarded socket.",
)
@click.option(
    "--dind-image",
    default=None,
    help=f"The DinD daemon's image [default: {DEFAULT_DIND_IMAGE}; arc, gitlab-k8s, systemd: "
    "dockmoat/dind:VERSION, built by `make image`].",
)
@click.option(
    "--job-image",
    default=None,
    help=f"The image the job runs in [default: {DEFAULT_JOB_IMAGE}; arc: the Actions runner].",
)
@click.option(
    "--dockmoat-image",
    default=None,
    help="compose --mode guarded, kubernetes: the image running `dockmoat serve` "
    f"(`make image` builds it) [default: {DEFAULT_DOCKMOAT_IMAGE}].",
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
@click.option("--namespace", default="dockmoat", show_default=True, help="kubernetes, gitlab-k8s.")
@click.option(
    "--profile",
    default="baseline",
    show_default=True,
    help="kubernetes, systemd: serve's policy profile.",
)
@click.option(
    "--docker-gid",
    default=999,
    show_default=True,
    type=int,
    help="kubernetes: the nodes' group id of /var/run/docker.sock.",
)
@click.option(
    "--client-gid",
    default=2375,
    show_default=True,
    type=int,
    help="kubernetes: the group owning the guarded socket (runner pods add it).",
)
@click.option(
    "--socket-dir",
    default="/run/dockmoat/guarded",
    show_default=True,
    help="kubernetes: the node folder of the guarded socket.",
)
@click.option("--ci-url", default="", help="arc: the GitHub org/repo URL; gitlab-k8s: GitLab's.")
@click.option(
    "--prefix",
    default="/opt/dockmoat",
    show_default=True,
    help="systemd: where dockmoat is installed (PREFIX/bin/dockmoat).",
)
@click.option("--pool-size", default=2, show_default=True, type=int, help="systemd: warm DinDs.")
@click.option(
    "--unprivileged",
    is_flag=True,
    help="systemd: serve as the dockmoat user, fully sandboxed (no bind pins).",
)
@click.option(
    "--job-identity",
    "job_identity",
    multiple=True,
    metavar="ISSUER=JWKS_FILE",
    help="kubernetes: runner pods open their own job with this issuer's job tokens "
    "(serve --job-open-socket); the key set is put in a ConfigMap. Repeatable.",
)
@click.option(
    "--job-identity-audience",
    default=None,
    metavar="AUD",
    help="kubernetes: the audience the job tokens carry (with --job-identity).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of stdout.",
)
def command(system: str, mode: str, output: Path | None, **knobs: object) -> None:
    """Print a complete, commented CI configuration with Docker wired in safely, or a
    deployment of dockmoat itself (kubernetes, arc, gitlab-k8s, systemd)."""
    identities = knobs.pop("job_identity", ())
    assert isinstance(identities, tuple)
    given = {key: value for key, value in knobs.items() if value is not None}
    if identities:
        given["job_identities"] = tuple(_key_set(str(item)) for item in identities)
    deploy_only = ("namespace", "profile", "docker_gid", "client_gid", "socket_dir", "ci_url",
                   "prefix", "pool_size", "unprivileged", "job_identities",
                   "job_identity_audience")  # fmt: skip
    ci_only = ("registry", "image_name", "test_command", "socket")
    try:
        if system in {t.value for t in Target}:
            fields = {k: v for k, v in given.items() if k not in ci_only}
            text = render(DeployOptions.model_validate({"target": system, **fields}))
        else:
            fields = {k: v for k, v in given.items() if k not in deploy_only}
            text = generate(Options.model_validate({"system": system, "mode": mode, **fields}))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"--{where.replace('_', '-')}: {first['msg']}") from error
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write {output}: {error.strerror or error}") from error
    click.echo(f"wrote {output}", err=True)


def _key_set(item: str) -> tuple[str, str]:
    """`ISSUER=JWKS_FILE` -> (issuer, the JWKS document), checked as serve will read it."""
    from dockmoat.deploy.jobidentity import IdentityError, KeySet

    issuer, sep, path = item.rpartition("=")
    if not sep or not issuer or not path:
        raise ConfigError(f"--job-identity {item!r}: expected ISSUER=JWKS_FILE")
    try:
        text = Path(path).read_text(encoding="utf-8")
        KeySet.from_jwks(text)
    except OSError as error:
        raise ConfigError(f"--job-identity {issuer}: cannot read {path}: {error}") from None
    except (IdentityError, UnicodeDecodeError) as error:
        raise ConfigError(f"--job-identity {issuer}: {path} is not a JWKS: {error}") from None
    return issuer, text
