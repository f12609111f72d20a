"""The local test images, built from host files and `docker import`ed (never pulled).

- `dockmoat-test/busybox:latest`: the static busybox with its applets, /tmp,
  /etc/passwd and /etc/group (root, nobody); CMD sh.
- `dockmoat-test/dind:latest`: the host's engine binaries (dockerd, containerd,
  shim, runc, docker-init, docker-proxy, the 20.10 docker CLI), iptables (nft
  multi-call binary and its extensions), busybox, their shared libraries, and
  our `dind` entrypoint; CMD dockerd.

Each image carries a label with the digest of its inputs; `ensure_image` rebuilds
only when the label differs, so `scripts/test-engine up` is cheap when nothing changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.image_tree import ImageTree, Inline, Symlink, shared_libraries

BUSYBOX_IMAGE = "dockmoat-test/busybox:latest"
DIND_IMAGE = "dockmoat-test/dind:latest"
INPUTS_LABEL = "dockmoat.test.inputs"
# Bump when the layout logic changes in a way the input digest cannot see.
FORMAT = b"dockmoat-test-images/1"

HERE = Path(__file__).resolve().parent
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n"
# The nested dockerd gives its socket to group "docker" when it exists.
DIND_GROUP = GROUP + b"docker:x:2375:\n"
OS_RELEASE = b'PRETTY_NAME="dockmoat-test dind"\nID=dockmoat-test\n'
ENGINE_BINARIES = (
    "dockerd",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "docker-init",
    "docker-proxy",
)
IPTABLES_NAMES = (
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
    "iptables-nft",
    "iptables-nft-save",
    "iptables-nft-restore",
    "ip6tables-nft",
    "ip6tables-nft-save",
    "ip6tables-nft-restore",
)
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageBuildError(Exception):
    """A test image could not be built; the message says what is missing."""


@dataclass(frozen=True)
class ImageSpec:
    tag: str
    tree: ImageTree
    changes: tuple[str, ...]

    @property
    def digest(self) -> str:
        return self.tree.digest(FORMAT + json.dumps(self.changes).encode())


def host_binary(name: str) -> Path:
    """A host executable by name; searches the sbin folders too (not always on PATH)."""
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        raise ImageBuildError(f"{name} not found on the host; run scripts/install-engine")
    return Path(found)


def _merged_usr_root(tree: ImageTree) -> None:
    """Mirror the host's top-level symlinks (merged /usr) so ldd paths stay valid."""
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            tree.add(top, Symlink(str(host.readlink())))


def _base(tree: ImageTree) -> None:
    _merged_usr_root(tree)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "dev", "proc", "sys", "run"):
        tree.add_dir(d)
    tree.add_dir("tmp", 0o1777)
    tree.add_dir("var/tmp", 0o1777)
    tree.add("etc/passwd", Inline(PASSWD))
    tree.add("etc/group", Inline(GROUP))


def _add_busybox(tree: ImageTree) -> None:
    """The static busybox at /usr/bin/busybox, each applet a symlink to it.

    Applets never shadow a real binary already placed (e.g. the nft iptables).
    """
    busybox = host_binary("busybox")
    if shared_libraries(busybox):
        raise ImageBuildError(f"{busybox} is not static; install busybox-static")
    tree.add_host_path(busybox, "usr/bin/busybox")
    listing = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in listing:
        tree.add(applet, Symlink("/usr/bin/busybox"), replace=False)


def busybox_spec() -> ImageSpec:
    tree = ImageTree()
    _base(tree)
    _add_busybox(tree)
    changes = (f"ENV PATH={SEARCH_PATH}", 'CMD ["sh"]')
    return ImageSpec(BUSYBOX_IMAGE, tree, changes)


def dind_spec() -> ImageSpec:
    tree = ImageTree()
    _base(tree)
    for d in ("var/lib/docker", "var/run", "etc/docker", "run/docker"):
        tree.add_dir(d, 0o755 if d != "var/lib/docker" else 0o711)
    for name in ENGINE_BINARIES:
        tree.add_with_libraries(host_binary(name), f"usr/bin/{name}")
    # The 20.10 client (Debian's), not whatever newer CLI is first on PATH.
    cli = Path("/usr/bin/docker")
    if not cli.exists():
        cli = host_binary("docker")
    tree.add_with_libraries(cli, "usr/bin/docker")
    xtables = host_binary("xtables-nft-multi")
    tree.add_with_libraries(xtables, "usr/sbin/xtables-nft-multi")
    for name in IPTABLES_NAMES:
        tree.add(f"usr/sbin/{name}", Symlink("xtables-nft-multi"))
    for ext in [*sorted(Path("/usr/lib").glob("*/xtables")), Path("/usr/lib/xtables")]:
        if ext.is_dir():
            tree.add_host_tree(ext)
    _add_busybox(tree)
    tree.add("etc/group", Inline(DIND_GROUP))
    tree.add("usr/lib/os-release", Inline(OS_RELEASE))
    tree.add("usr/local/bin/dind", Inline((HERE / "dind-entrypoint.sh").read_bytes(), 0o755))
    for certs in ("/etc/ssl/certs/ca-certificates.crt",):
        if Path(certs).is_file():
            tree.add_host_path(certs)
    changes = (
        f"ENV PATH={SEARCH_PATH}",
        'ENTRYPOINT ["/usr/local/bin/dind"]',
        'CMD ["dockerd"]',
        'VOLUME ["/var/lib/docker"]',
    )
    return ImageSpec(DIND_IMAGE, tree, changes)


@dataclass(frozen=True)
class Tagged:
    """What a tag points at now: the image's id and its input label."""

    image_id: str | None
    inputs: str | None


def inspect_tag(docker: str, tag: str) -> Tagged | None:
    """One `docker image inspect` for both facts; None when the tag does not exist."""
    proc = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}} {{json .Config.Labels}}", tag],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    image, _, labels_json = proc.stdout.strip().partition(" ")
    labels = json.loads(labels_json or "null") or {}
    value = labels.get(INPUTS_LABEL)
    return Tagged(image or None, value if isinstance(value, str) else None)


def ensure_image(spec: ImageSpec, docker: str, say: Callable[[str], None]) -> bool:
    """Build and tag the image unless its input label matches; True if it was built."""
    digest = spec.digest
    before = inspect_tag(docker, spec.tag)
    if before is not None and before.inputs == digest:
        return False
    say(f"building {spec.tag} (inputs {digest[:12]})")
    previous = before.image_id if before is not None else None
    argv = [docker, "import"]
    for change in (*spec.changes, f"LABEL {INPUTS_LABEL}={digest}"):
        argv += ["--change", change]
    argv += ["-", spec.tag]
    # stderr goes to a file: a pipe nobody reads while we stream could fill and deadlock.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
        )
        assert proc.stdin is not None
        try:
            spec.tree.write_tar(proc.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # docker import exited early; its stderr says why
        status = proc.wait(timeout=600)
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    if status != 0:
        raise ImageBuildError(f"docker import {spec.tag} failed: {message}")
    after = inspect_tag(docker, spec.tag)
    if after is None or after.inputs != digest:
        raise ImageBuildError(f"{spec.tag} was imported but does not carry its input label")
    if previous is not None and previous != after.image_id:
        # The old build is now untagged; drop it unless a container still uses it.
        subprocess.run([docker, "image", "rm", previous], capture_output=True, check=False)
    return True
