"""Nested engines of the test matrix: `scripts/test-engine matrix-up` / `matrix-hosts` / `down`.

Every engine version of the matrix but the host's own (`images.matrix_dind_specs`,
20.10 and 26.1 beside a 28.5 host) runs as a privileged container of
`dockmoat-test/dind:<version>` whose dockerd listens only on a unix socket in a host
folder bind-mounted at the same path (`<state>/engines/<version>/docker.sock`), so a
test reaches it with `DOCKER_HOST=unix://<that path>` exactly as it reaches the host's
engine. The busybox test image is streamed in (`docker save | docker load`), never
pulled. `engines.json` in the state folder records what `matrix-up` started; `down`
(and `matrix-down`) removes exactly that: the containers and their data volumes.
A recorded engine that still answers and has the test image is reused.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import daemon, images, runtime_workaround
from harness.endpoint import Endpoint

START_TIMEOUT = 90.0
LABEL = "dockmoat.test.matrix-engine"
# The nested daemon's runc meets the same kernel: where the host needs the
# CAP_SYS_RESOURCE workaround (docs/testing.md), so do the nested engines. Their
# image has no Python, so the editor is busybox sed on runc's compact JSON spec.
NESTED_WRAPPER = "runc-wrapper"
_SED_EDIT = """if [ -n "$spec" ] && [ -f "$spec" ]; then
	sed -i -e 's/"CAP_SYS_RESOURCE",//g' -e 's/,"CAP_SYS_RESOURCE"//g' \\
		-e 's/"CAP_SYS_RESOURCE"//g' "$spec"
fi
exec "$runc" "$@"
"""


CAP_SYS_RESOURCE = 24


def kernel_lacks_cap_sys_resource(status: Path = Path("/proc/self/status")) -> bool:
    """True when this process's capability bounding set lacks CAP_SYS_RESOURCE: then
    a nested 20.10 or 26.1 asks runc for it on `--privileged` and runc fails."""
    for line in status.read_text().splitlines():
        if line.startswith("CapBnd:"):
            return not int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1
    return False


def nested_wrapper_text() -> str:
    """The host wrapper's sh front end, ending in a sed edit instead of the Python editor."""
    front = runtime_workaround.FRONT_SOURCE.read_text()
    head, _, _ = front.rpartition('exec @PYTHON@ -IS @EDITOR@ "$@"')
    return head + _SED_EDIT


class NestedError(Exception):
    """A nested engine could not be started, loaded or removed; the message says why."""


@dataclass(frozen=True)
class Nested:
    """One nested engine `matrix-up` started: its container, data volume and socket."""

    version: str
    container: str
    volume: str
    socket: str

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def record_path(paths: daemon.Paths) -> Path:
    return paths.state / "engines.json"


def recorded(paths: daemon.Paths) -> dict[str, Nested]:
    try:
        raw = json.loads(record_path(paths).read_text())
        return {version: Nested(**entry) for version, entry in raw.items()}
    except (OSError, ValueError, TypeError):
        return {}


def _write(paths: daemon.Paths, engines: dict[str, Nested]) -> None:
    if not engines:
        record_path(paths).unlink(missing_ok=True)
        return
    text = json.dumps({v: asdict(e) for v, e in sorted(engines.items())}, indent=1)
    tmp = record_path(paths).with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(record_path(paths))


def matrix_versions() -> list[str]:
    """The nested versions: every matrix image but the host engine's own version."""
    host = images.engine_version(images.host_binary("dockerd"))
    found = {version for version in images.engine_trees() if version != host}
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def _docker(docker: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _has_busybox(docker: str, engine: Nested) -> bool:
    probe = subprocess.run(
        [docker, "--host", engine.url, "image", "inspect", images.BUSYBOX_IMAGE],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return probe.returncode == 0


def _load_busybox(docker: str, engine: Nested) -> None:
    """`docker save` on the host piped into `docker load` on the nested engine."""
    with subprocess.Popen([docker, "save", images.BUSYBOX_IMAGE], stdout=subprocess.PIPE) as save:
        load = subprocess.run(
            [docker, "--host", engine.url, "load", "--quiet"],
            stdin=save.stdout,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    if save.returncode != 0 or load.returncode != 0:
        raise NestedError(
            f"loading {images.BUSYBOX_IMAGE} into the nested {engine.version} failed: "
            f"{load.stderr.strip()}"
        )


def _logs(docker: str, container: str) -> str:
    logs = _docker(docker, "logs", "--tail", "30", container)
    return (logs.stdout + logs.stderr).strip()


def start(docker: str, version: str, paths: daemon.Paths) -> Nested:
    folder = paths.state / "engines" / version
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "docker.sock"
    sock.unlink(missing_ok=True)
    name = f"dmtest-engine{version.replace('.', '')}-{secrets.token_hex(4)}"
    engine = Nested(version, name, name, str(sock))
    runtime: list[str] = []
    if kernel_lacks_cap_sys_resource():
        wrapper = folder / NESTED_WRAPPER
        wrapper.write_text(nested_wrapper_text())
        wrapper.chmod(0o755)
        name_ = runtime_workaround.RUNTIME_NAME
        runtime = ["--add-runtime", f"{name_}={wrapper}", "--default-runtime", name_]
    run = _docker(
        docker, "run", "-d", "--privileged", "--name", name, "--label", f"{LABEL}={version}",
        "--mount", f"type=volume,src={name},dst=/var/lib/docker",
        "--mount", f"type=bind,src={folder},dst={folder}",
        images.dind_tag(version), "dockerd", "--host", engine.url, *runtime,
    )  # fmt: skip
    if run.returncode != 0:
        _docker(docker, "volume", "rm", name)
        raise NestedError(f"starting the nested {version} failed: {run.stderr.strip()}")
    endpoint = Endpoint(engine.url)
    deadline = time.monotonic() + START_TIMEOUT
    while not endpoint.ping(timeout=2.0):
        state = _docker(docker, "inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if state != "true" or time.monotonic() > deadline:
            logs = _logs(docker, name)
            remove(docker, engine)
            raise NestedError(f"the nested {version} did not answer /_ping:\n{logs}")
        time.sleep(0.3)
    return engine


def remove(docker: str, engine: Nested) -> None:
    """Remove the container and its data volume (the socket folder stays, it is ours)."""
    _docker(docker, "rm", "-f", engine.container, timeout=120)
    gone = _docker(docker, "volume", "rm", engine.volume)
    if gone.returncode != 0 and "no such volume" not in gone.stderr.lower():
        raise NestedError(f"removing the volume {engine.volume}: {gone.stderr.strip()}")
    Path(engine.socket).unlink(missing_ok=True)


def up(docker: str, paths: daemon.Paths, say: Callable[[str], None]) -> list[Nested]:
    """Start (or reuse) a nested engine per matrix version, each with the busybox image."""
    engines = recorded(paths)
    ready: list[Nested] = []
    for version in matrix_versions():
        engine = engines.get(version)
        if engine is not None and not Endpoint(engine.url).ping():
            remove(docker, engine)
            del engines[version]
            _write(paths, engines)
            engine = None
        if engine is None:
            began = time.monotonic()
            engine = start(docker, version, paths)
            engines[version] = engine
            _write(paths, engines)
            say(
                f"started the nested engine {version} ({engine.container}) at {engine.url} "
                f"in {time.monotonic() - began:.1f}s"
            )
        if not _has_busybox(docker, engine):
            began = time.monotonic()
            _load_busybox(docker, engine)
            say(f"loaded {images.BUSYBOX_IMAGE} into it in {time.monotonic() - began:.1f}s")
        ready.append(engine)
    return ready


def down(docker: str | None, paths: daemon.Paths, say: Callable[[str], None]) -> None:
    """Remove every nested engine `matrix-up` recorded."""
    engines = recorded(paths)
    if not engines:
        return
    if docker is None:
        docker = shutil.which("docker") or "docker"
    for version, engine in sorted(engines.items()):
        remove(docker, engine)
        del engines[version]
        _write(paths, engines)
        say(f"removed the nested engine {version} ({engine.container})")
