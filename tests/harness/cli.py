"""`scripts/test-engine up [--quiet-reuse]` / `down`: the real engine the suite runs against.

`up`: reuse the engine answering at DOCKER_HOST (or /var/run/docker.sock), else
start dockerd in the background; map the Docker Hub names to 127.0.0.1; build the
local images; install the CAP_SYS_RESOURCE runtime workaround only if a
privileged container fails with the caps error; add the extra OCI runtimes (crun) by
a reload. `down`: stop the engine only if
the last `up` started it. Stdlib only: this runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import (
    daemon,
    frontend,
    hosts_file,
    images,
    nested,
    rootless,
    runtime_workaround,
    runtimes,
    ryuk,
)
from harness.endpoint import Endpoint

PREFIX = "test-engine: "


class HarnessError(Exception):
    """Anything that stops `up`/`down`; printed without a traceback."""


def docker_cli() -> str:
    found = shutil.which("docker") or shutil.which("docker", path="/usr/sbin:/usr/bin")
    if found is None:
        raise HarnessError("the docker CLI is missing; run scripts/install-engine")
    return found


class Up:
    def __init__(
        self,
        quiet_reuse: bool,
        endpoint: Endpoint,
        paths: daemon.Paths,
        engine_only: bool = False,
    ) -> None:
        self.quiet_reuse = quiet_reuse
        self.engine_only = engine_only
        self.notes: list[str] = []
        self.endpoint = endpoint
        self.paths = paths

    def say(self, message: str) -> None:
        self.notes.append(message)
        print(PREFIX + message, flush=True)

    def run(self) -> None:
        started = self.ensure_engine()
        if self.engine_only:
            # `make run`: the product needs an engine, not the test images, the
            # /etc/hosts block or the test runtime workaround.
            if self.notes or not self.quiet_reuse:
                print(f"{PREFIX}engine ready at {self.endpoint.url}", flush=True)
            return
        self.ensure_hosts()
        docker = docker_cli()
        for spec in (images.busybox_spec(), images.dind_spec(), *images.matrix_dind_specs()):
            images.ensure_image(spec, docker, self.say)
        images.ensure_image(ryuk.ryuk_spec(self.say), docker, self.say)
        try:
            # The `# syntax=` frontend of the BuildKit tests; they skip without it.
            images.ensure_image(frontend.frontend_spec(self.say), docker, self.say)
        except images.ImageBuildError as exc:
            # Not a note (a note makes `up --quiet-reuse` speak on every run): the tests
            # that need it skip and say why.
            if not self.quiet_reuse:
                print(f"{PREFIX}note: {frontend.FRONTEND_IMAGE} cannot be built: {exc}")
        host_version = images.engine_version(images.host_binary("dockerd"))
        images.tag_alias(docker, images.DIND_IMAGE, images.dind_tag(host_version), self.say)
        self.ensure_privileged(docker, started)
        # `dind up --runtime crun`: the engine learns crun on a reload, never a restart.
        runtimes.ensure_runtimes(docker, self.endpoint.server_pid(), self.say)
        try:
            # Rootless DinD (tests/engine/dind/test_dind_rootless.py); not fatal here.
            rootless.ensure_tun(self.say)
        except rootless.RootlessSetupError as exc:
            self.say(f"note: rootless DinD tests cannot run: {exc}")
        if self.notes or not self.quiet_reuse:
            print(
                f"{PREFIX}engine ready at {self.endpoint.url}; images "
                f"{images.BUSYBOX_IMAGE}, {images.DIND_IMAGE}, {ryuk.RYUK_IMAGE}",
                flush=True,
            )

    def ensure_engine(self) -> bool:
        if self.endpoint.ping():
            # From now on it counts as pre-existing: no later `down` stops it.
            daemon.forget(self.paths)
            if not self.quiet_reuse:
                self.say(f"reusing the engine at {self.endpoint.url}")
            return False
        pid = daemon.start(self.endpoint, self.paths)
        self.say(f"started dockerd (pid {pid}, log {self.paths.log})")
        return True

    def ensure_hosts(self) -> None:
        hosts = Path("/etc/hosts")
        if os.geteuid() == 0:
            if hosts_file.apply(hosts):
                self.say("mapped the Docker Hub host names to 127.0.0.1 in /etc/hosts")
            return
        current = hosts.read_text()
        if hosts_file.with_block(current) != current:
            self.say(
                "warning: not root, so Docker Hub names are not mapped to 127.0.0.1; "
                "an accidental pull may reach the network"
            )

    def ensure_privileged(self, docker: str, started: bool) -> None:
        wrapper_active = (
            runtime_workaround.default_runtime(docker) == runtime_workaround.RUNTIME_NAME
        )
        if wrapper_active and os.geteuid() == 0 and runtime_workaround.install_wrapper():
            self.say("updated the test runtime wrapper")
        result = runtime_workaround.privileged_result(docker, images.BUSYBOX_IMAGE)
        if result.returncode == 0:
            return
        if runtime_workaround.CAPS_ERROR not in result.stderr or wrapper_active:
            raise HarnessError(f"a privileged container fails:\n{result.stderr.strip()}")
        if os.geteuid() != 0:
            raise HarnessError(
                "privileged containers fail with the CAP_SYS_RESOURCE caps error "
                "and only root can install the runtime workaround"
            )
        self.say(
            "privileged containers fail (kernel lacks CAP_SYS_RESOURCE): installing the "
            f"test runtime wrapper {runtime_workaround.WRAPPER_PATH}"
        )
        runtime_workaround.install_wrapper()
        runtime_workaround.register()
        self.reload_engine(docker, started)
        result = runtime_workaround.privileged_result(docker, images.BUSYBOX_IMAGE)
        if result.returncode != 0:
            raise HarnessError(
                "privileged containers still fail with the runtime wrapper:\n"
                + result.stderr.strip()
            )
        self.say("privileged containers work")

    def reload_engine(self, docker: str, started: bool) -> None:
        pid = self.endpoint.server_pid()
        if pid is not None:
            daemon.reload(pid)
            if runtime_workaround.wait_default_runtime(docker, runtime_workaround.RUNTIME_NAME):
                return
        if not started:
            raise HarnessError(
                f"the engine did not take {runtime_workaround.DAEMON_JSON} on "
                "reload; restart it yourself and run this again"
            )
        own = daemon.started_pid(self.paths)
        if own is not None:
            daemon.stop(own, self.paths)
        daemon.start(self.endpoint, self.paths)
        if not runtime_workaround.wait_default_runtime(docker, runtime_workaround.RUNTIME_NAME):
            raise HarnessError("the restarted engine does not use the runtime wrapper")


def say(message: str) -> None:
    print(PREFIX + message, flush=True)


def matrix_up(paths: daemon.Paths) -> None:
    """The nested engines of the matrix (20.10, 26.1 beside a 28.5 host), after `up`."""
    endpoint = Endpoint.from_env()
    if not endpoint.ping():
        raise HarnessError(f"no engine answers at {endpoint.url}: run scripts/test-engine up")
    docker = docker_cli()
    for spec in images.matrix_dind_specs():
        if images.inspect_tag(docker, spec.tag) is None:
            raise HarnessError(f"{spec.tag} is missing: run scripts/test-engine up")
    for engine in nested.up(docker, paths, say):
        say(f"nested engine {engine.version} ready at {engine.url}")


def matrix_hosts(paths: daemon.Paths) -> None:
    """`<version> <DOCKER_HOST>` per recorded nested engine, for the Makefile's loop."""
    for version, engine in sorted(nested.recorded(paths).items()):
        print(f"{version} {engine.url}", flush=True)


def down(paths: daemon.Paths) -> None:
    if nested.recorded(paths) and Endpoint.from_env().ping():
        nested.down(docker_cli(), paths, say)
    pid = daemon.started_pid(paths)
    if pid is None:
        daemon.forget(paths)
        return
    daemon.stop(pid, paths)
    print(f"{PREFIX}stopped dockerd (pid {pid})", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/test-engine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="reuse or start the engine, build the test images")
    up.add_argument(
        "--quiet-reuse",
        action="store_true",
        help="print nothing when everything was already in place",
    )
    up.add_argument(
        "--engine-only",
        action="store_true",
        help="only reuse or start the engine (what `make run` needs)",
    )
    sub.add_parser(
        "down", help="remove the nested engines; stop the engine if the last `up` started it"
    )
    sub.add_parser("matrix-up", help="start (or reuse) the nested engines of the matrix")
    sub.add_parser("matrix-hosts", help="print `<version> <DOCKER_HOST>` per nested engine")
    sub.add_parser("matrix-down", help="remove the nested engines matrix-up started")
    args = parser.parse_args(argv)
    endpoint, paths = Endpoint.from_env(), daemon.Paths()
    # The docker CLI calls below must reach the engine we pinged, whatever docker
    # context the user has selected.
    os.environ["DOCKER_HOST"] = endpoint.url
    os.environ.pop("DOCKER_CONTEXT", None)
    try:
        with daemon.exclusive(paths):
            if args.command == "up":
                Up(args.quiet_reuse, endpoint, paths, args.engine_only).run()
            elif args.command == "matrix-up":
                matrix_up(paths)
            elif args.command == "matrix-hosts":
                matrix_hosts(paths)
            elif args.command == "matrix-down":
                nested.down(docker_cli(), paths, say)
            else:
                down(paths)
    except (
        HarnessError,
        daemon.DaemonError,
        images.ImageBuildError,
        runtime_workaround.WorkaroundError,
        runtimes.RuntimeSetupError,
        nested.NestedError,
        subprocess.SubprocessError,  # a docker call that timed out or failed outright
        ValueError,  # e.g. an unsupported DOCKER_HOST scheme
        OSError,
    ) as exc:
        print(f"{PREFIX}error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
