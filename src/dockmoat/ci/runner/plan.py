"""The job container, as a value: what the engine is asked to create (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dockmoat.ci.runner.options import RunOptions

WORKDIR = "/workspace"
LABEL_RUN = "io.dockmoat.run"
LABEL_MODE = "io.dockmoat.run.mode"


@dataclass(frozen=True, slots=True)
class Wiring:
    """How a mode connects the job to Docker: environment, extra mounts, a network."""

    env: dict[str, str]
    binds: dict[str, dict[str, str]] = field(default_factory=dict)
    network: str | None = None
    # Shown on stderr before the job starts (the socket mode's warning).
    notice: str | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    image: str
    command: list[str]
    name: str
    env: dict[str, str]
    binds: dict[str, dict[str, str]]
    labels: dict[str, str]
    network: str | None
    working_dir: str = WORKDIR
    # None keeps the image's ENTRYPOINT; [""] clears it (what `docker run --entrypoint ""` sends).
    entrypoint: list[str] | None = None


# Where the workspace is on the engine's host: bind mounts a job asks the host's daemon
# for (guarded, socket) name host paths, not /workspace.
HOST_WORKSPACE_ENV = "DOCKMOAT_HOST_WORKSPACE"


def job_spec(options: RunOptions, run_id: str, wiring: Wiring) -> JobSpec:
    env = dict(options.env)
    if options.mode in ("guarded", "socket"):
        env[HOST_WORKSPACE_ENV] = str(options.workspace)
    env.update(wiring.env)  # the wiring wins: options.parse_env refuses these keys anyway
    binds = {str(options.workspace): {"bind": WORKDIR, "mode": "rw"}, **wiring.binds}
    return JobSpec(
        image=options.image,
        command=list(options.command),
        name=f"dockmoat-run-{run_id}",
        env=env,
        binds=binds,
        labels={LABEL_RUN: run_id, LABEL_MODE: options.mode},
        network=wiring.network,
        entrypoint=None if options.entrypoint is None else [options.entrypoint],
    )


def socket_wiring(host_socket: str) -> Wiring:
    return Wiring(
        env={"DOCKER_HOST": "unix:///var/run/docker.sock"},
        binds={host_socket: {"bind": "/var/run/docker.sock", "mode": "rw"}},
        notice=(
            f"warning: --mode socket mounts the host's Docker socket ({host_socket}) into the job: "
            "the job can start privileged containers and mount / of the host, so it is root on "
            "this host, and whatever it creates there stays. Use --mode guarded or --mode dind "
            "for code you do not fully trust."
        ),
    )


def dind_wiring(network: str, cert_dir: str, network_env: dict[str, str]) -> Wiring:
    return Wiring(
        env=dict(network_env),
        binds={cert_dir: {"bind": network_env["DOCKER_CERT_PATH"], "mode": "ro"}},
        network=network,
    )


def guarded_wiring(job_socket: str) -> Wiring:
    return Wiring(
        env={"DOCKER_HOST": "unix:///var/run/docker.sock"},
        binds={job_socket: {"bind": "/var/run/docker.sock", "mode": "rw"}},
    )


def summary(mode: str, code: int, setup: float, job: float, cleanup: float) -> str:
    return (
        f"dockmoat run: mode {mode}, exit {code}; set-up {setup:.2f}s, job {job:.2f}s, "
        f"clean-up {cleanup:.2f}s"
    )
