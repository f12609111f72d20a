"""`dockmoat dind up --runtime crun`: the daemon's container goes to the engine with that
runtime (and privileged: only sysbox-runc runs a nested dockerd without), and whatever
the engine answers is what `up` reports, with nothing left behind.

crun comes from Debian (scripts/install-engine) and scripts/test-engine up adds it to
the engine's runtimes by a reload. On this machine crun cannot run any container, the
engine's own probe below included, for two reasons measured here (docs/dind.md,
"--runtime"): bookworm's crun 1.8.1 refuses the OCI spec version Docker 28.5 writes
(`1.2.1`: "unknown version specified"), and with that worked around by hand it refuses
the host's hybrid cgroup layout (v1 controllers plus a cgroup2 mount holding `hugetlb`:
"cgroups in hybrid mode not supported"). Where crun runs containers, the test asks for
the nested daemon itself under crun instead.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import docker
import pytest
from dindtest_support import Dind


def _probe(busybox: str) -> subprocess.CompletedProcess[str]:
    """One plain container under crun: can this engine run crun at all?"""
    return subprocess.run(
        ["docker", "run", "--rm", "--runtime", "crun", "--network", "none",
         "--label", "dockmoat-test=runtime-probe", busybox, "true"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_dind_up_under_crun_reaches_the_engine_and_reports_its_answer(
    dind: Dind,
    dind_name: Callable[[], str],
    docker_client: docker.DockerClient,
    busybox_image: str,
) -> None:
    if "crun" not in (docker_client.info().get("Runtimes") or {}):
        pytest.fail(
            "the engine has no runtime crun: run `scripts/install-engine` and "
            "`scripts/test-engine up` as root (crun is added by a reload, no restart)"
        )
    probe = _probe(busybox_image)
    name = dind_name()
    up = dind.cli(
        "dind", "up", name, "--runtime", "crun", "--image", dind.image, "--no-pool",
        "--format", "json", "--timeout", "60", check=False,
    )  # fmt: skip
    if probe.returncode == 0:
        assert up.returncode == 0, up.stderr[-3000:]
        info = json.loads(up.stdout)
        host = docker_client.api.inspect_container(info["container_id"])["HostConfig"]
        assert host["Runtime"] == "crun" and host["Privileged"] is True
        return
    # The engine's reason for refusing crun, as it answered the probe ...
    reason = probe.stderr.strip().splitlines()[0].split("OCI runtime create failed: ")[-1]
    assert reason, probe.stderr
    # ... is what `up` says, after the container was made with the runtime and started.
    assert up.returncode == 3, up.stderr  # EngineError
    assert "starting the nested daemon" in up.stderr
    assert "cannot start the daemon container" in up.stderr
    assert "OCI runtime create failed" in up.stderr and reason in up.stderr, up.stderr
    # The failed start removed what it made: no container, network or volume of NAME.
    assert not [c.name for c in docker_client.containers.list(all=True) if name in c.name]
    assert not [n.name for n in docker_client.networks.list() if f"-{name}-" in n.name]
    assert not [v.name for v in docker_client.volumes.list() if f"-{name}-" in v.name]
