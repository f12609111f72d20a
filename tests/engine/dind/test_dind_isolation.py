"""What an escape from a nested daemon reaches, measured: the same attempt against a
privileged DinD (`dockmoat dind up`), a rootless one (`dind up --rootless`) and a
rootless one whose own container is not privileged (`--rootless --no-privileged`).

A job holding the nested daemon's client certificate can do anything that daemon
can. The attempt is what such a job would try first: a `--privileged` container in
the nested daemon (with `--no-privileged`, where those cannot start: one with every
capability, seccomp off and /proc unmasked) that bind-mounts `/` of the daemon's own
container and

- writes a file into that container's `/tmp` (world-writable) and into its
  `/usr/local/bin` (root's), then the host engine reads both back (`GET /archive`:
  the owner as the host's kernel keeps it);
- makes a block device node for the disk under the daemon's data root (the host's
  disk): creating device nodes is CAP_MKNOD over the host (this machine's sandbox
  refuses even the host's root to open its raw disk, so the test stops at the node);
- writes a kernel-wide setting (`vm.swappiness`, not namespaced) back with its own
  value: whoever may write it may change the host's kernel settings;
- prints its `uid_map`: who its root is on the host.

Docs: docs/dind.md, "What each mode isolates" (the table is filled from this test).
"""

from __future__ import annotations

import io
import json
import re
import secrets
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

import docker
import pytest
from dindtest_support import Dind

from dockmoat.dind.info import DindInfo

ROOTLESS_DATA_ROOT = "/home/rootless/.local/share/docker"
# mode -> (the daemon's data root, `dind up` flags, how the nested container is privileged)
PRIVILEGED = ("--privileged",)
# Where the daemon's container is not privileged, nested --privileged containers cannot
# start (their sysfs); the closest: every capability, no seccomp, /proc unmasked.
ALL_BUT_SYSFS = (
    *("--cap-add", "ALL", "--security-opt", "seccomp=unconfined"),
    *("--security-opt", "systempaths=unconfined"),
)
MODES = {
    "privileged": ("/var/lib/docker", (), PRIVILEGED),
    "rootless": (ROOTLESS_DATA_ROOT, ("--rootless",), PRIVILEGED),
    "rootless-no-privileged": (
        ROOTLESS_DATA_ROOT,
        ("--rootless", "--no-privileged"),
        ALL_BUT_SYSFS,
    ),
}

# Run as root in a --privileged container of the nested daemon, `/` of the daemon's
# container at /dind. $1: a token for the file names; $2: the data root.
ESCAPE = r"""
t=$1 data=/dind$2
echo "uid_map: $(tr -s ' ' <  /proc/self/uid_map | sed 's/^ //' | tr '\n' ';')"
attempt() {
    if echo escaped >"$2" 2>/dev/null; then echo "$1: written"; else echo "$1: refused"; fi
}
attempt tmp /dind/tmp/$t-tmp
attempt bin /dind/usr/local/bin/$t-bin
dev=$(stat -c %d "$data")
major=$(( (dev >> 8) & 0xfff )) minor=$(( (dev & 0xff) | ((dev >> 12) & 0xfff00) ))
if mknod /tmp/$t-disk b $major $minor 2>/dev/null; then echo "mknod: made"
else echo "mknod: refused"; fi
# A kernel-wide setting (not namespaced), written back with its own value: no change.
v=$(cat /proc/sys/vm/swappiness)
if echo "$v" >/proc/sys/vm/swappiness 2>/dev/null; then echo "sysctl: written"
else echo "sysctl: refused"; fi
"""


@dataclass(frozen=True)
class Attempt:
    report: dict[str, str]
    tmp_owner: int | None  # uid of /tmp/<token>-tmp in the daemon's container, seen by the host
    bin_owner: int | None  # the same for /usr/local/bin/<token>-bin (None: not there)


def _owner(client: docker.DockerClient, container: str, path: str) -> int | None:
    """The owner uid of a file in a container, as the host engine's archive gives it."""
    try:
        stream, _ = client.api.get_archive(container, path)
    except docker.errors.NotFound:
        return None
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()[0].uid


def _attempt(
    dind: Dind, info: DindInfo, busybox: str, data_root: str, privileges: tuple[str, ...]
) -> Attempt:
    token = f"dmtest-escape-{secrets.token_hex(4)}"
    run = dind.docker(
        info,
        "run", "--rm", *privileges, "-v", "/:/dind", "--network", "none", busybox,
        "sh", "-c", ESCAPE, "escape", token, data_root,
    )  # fmt: skip
    report = dict(
        line.split(": ", 1) for line in run.stdout.splitlines() if re.match(r"^[a-z_ ]+: ", line)
    )
    return Attempt(
        report,
        _owner(dind.client, info.container_id, f"/tmp/{token}-tmp"),
        _owner(dind.client, info.container_id, f"/usr/local/bin/{token}-bin"),
    )


def _up(dind: Dind, name: str, image: str, busybox: str, flags: tuple[str, ...]) -> DindInfo:
    up = dind.cli(
        "dind", "up", name, "--image", image, "--preload", busybox, "--no-pool",
        "--format", "json", *flags, check=False,
    )  # fmt: skip
    assert up.returncode == 0, f"dind up failed:\n{up.stderr[-4000:]}"
    return DindInfo.from_json(json.loads(up.stdout))


@pytest.mark.slow  # one cold start and one container per mode
@pytest.mark.parametrize("mode", list(MODES))
def test_what_a_privileged_container_in_the_nested_daemon_reaches(
    dind: Dind,
    dind_name: Callable[[], str],
    request: pytest.FixtureRequest,
    busybox_image: str,
    mode: str,
) -> None:
    data_root, flags, privileges = MODES[mode]
    rootless = "--rootless" in flags
    image = request.getfixturevalue("rootless_dind_image") if rootless else dind.image
    info = _up(dind, dind_name(), image, busybox_image, flags)
    got = _attempt(dind, info, busybox_image, data_root, privileges)
    report = got.report
    if rootless:
        # Nested root is the daemon's user (uid 1000) on the host, the rest its subuids.
        assert report["uid_map"] == "0 1000 1;1 100000 65536;", report
        # Where uid 1000 may write, the file lands owned by 1000, not root ...
        assert report["tmp"] == "written" and got.tmp_owner == 1000, (report, got)
        # ... and root's files of the daemon's container stay out of reach,
        assert report["bin"] == "refused" and got.bin_owner is None, (report, got)
        # as do device nodes (none can be made in a user namespace) and kernel settings.
        assert report["mknod"] == "refused", report
        assert report["sysctl"] == "refused", report
    else:
        # Nested root is host root: the same files land owned by uid 0 ...
        assert report["uid_map"] == "0 0 4294967295;", report
        assert report["tmp"] == "written" and got.tmp_owner == 0, (report, got)
        assert report["bin"] == "written" and got.bin_owner == 0, (report, got)
        # ... a node for the host's disk can be made, and the host's kernel settings written.
        assert report["mknod"] == "made", report
        assert report["sysctl"] == "written", report
