"""The local test images, built from host files and `docker import`ed (never pulled).

- `dockmoat-test/busybox:latest`: the static busybox with its applets, /tmp,
  /etc/passwd and /etc/group (root, nobody); CMD sh.
- `dockmoat-test/dind:latest`: the host's engine binaries (dockerd, containerd,
  shim, runc, docker-init, docker-proxy, the host's docker CLI), iptables (nft
  multi-call binary and its extensions), busybox, their shared libraries, and
  our `dind` entrypoint; CMD dockerd. Also tagged with the engine's version
  (`dockmoat-test/dind:28.5`).
- `dockmoat-test/dind:<version>` (20.10, 26.1): the same from an engine tree that
  scripts/install-engine unpacked (its dockerd, containerd, shim, docker-proxy and
  CLI; the host's runc and docker-init), for the nested-engine matrix.
- `dockmoat-test/dind-rootless:latest`: `dockmoat-test/dind:latest` plus what a
  rootless dockerd needs, from Debian's packages on the host: rootlesskit (and its
  docker-proxy), slirp4netns, newuidmap/newgidmap (setuid root, as uidmap installs
  them), iproute2's `ip` and util-linux's `nsenter` (rootlesskit runs `nsenter ... ip
  tuntap`), docker.io's
  `dockerd-rootless.sh`; the user `rootless` (uid 1000) with the subordinate ids
  100000-165535, its home and data root, `/certs` owned by it;
  USER rootless, entrypoint `dind-rootless` (which runs `dockerd ARGS` as
  `dockerd-rootless.sh ARGS`). Built on demand by the tests that use it
  (`ensure_image`: only when its inputs changed).

Each image carries a label with the digest of its inputs; `ensure_image` rebuilds
only when the label differs, so `scripts/test-engine up` is cheap when nothing changed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.clients import LIBEXEC, TREES
from harness.image_tree import Dir, ImageTree, Inline, Symlink, shared_libraries

BUSYBOX_IMAGE = "dockmoat-test/busybox:latest"
DIND_REPOSITORY = "dockmoat-test/dind"
DIND_IMAGE = f"{DIND_REPOSITORY}:latest"
ROOTLESS_DIND_IMAGE = "dockmoat-test/dind-rootless:latest"
ROOTLESS_UID = 1000
ROOTLESS_HOME = "/home/rootless"
# What `/etc/subuid` and `/etc/subgid` give the user (the official image's range).
ROOTLESS_SUBIDS = (100000, 65536)
DOCKERD_ROOTLESS_SH = Path("/usr/share/docker.io/contrib/dockerd-rootless.sh")
ROOTLESS_BINARIES = (
    "rootlesskit",
    "rootlesskit-docker-proxy",
    "slirp4netns",
    "newuidmap",
    "newgidmap",
)
# Where scripts/install-engine unpacks the matrix's other engine versions.
ENGINE_TREES = LIBEXEC / TREES
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
# Taken from the host for every version: runc 1.1 runs them all; docker-init is tini.
HOST_ONLY_BINARIES = frozenset({"runc", "docker-init"})
_VERSION = re.compile(r"version (\d+\.\d+)\.")
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


def engine_version(dockerd: Path) -> str:
    """`major.minor` of a dockerd binary (`Docker version 28.5.2+dfsg4, build ...`)."""
    proc = subprocess.run([str(dockerd), "--version"], capture_output=True, text=True, check=False)
    match = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        raise ImageBuildError(f"cannot tell the version of {dockerd}: {proc.stdout or proc.stderr}")
    return match.group(1)


def tree_binary(root: Path, name: str) -> Path:
    """An engine binary of an unpacked tree (usr/sbin or usr/bin)."""
    for folder in ("usr/sbin", "usr/bin"):
        path = root / folder / name
        if path.is_file():
            return path
    raise ImageBuildError(f"{name} is missing from {root}; run scripts/install-engine")


def engine_trees(root: Path = ENGINE_TREES) -> dict[str, Path]:
    """Version -> unpacked engine tree (`engine-<version>`) that scripts/install-engine made."""
    if not root.is_dir():
        return {}
    found = {}
    for tree in sorted(root.glob("engine-*")):
        if (tree / "usr" / "sbin" / "dockerd").is_file():
            found[tree.name.removeprefix("engine-")] = tree
    return found


def dind_spec(engine_root: Path | None = None, tag: str = DIND_IMAGE) -> ImageSpec:
    """The DinD image of the host's engine, or of an unpacked tree (its own containerd
    and CLI; runc and docker-init, which every version accepts, from the host)."""
    tree = ImageTree()
    _base(tree)
    for d in ("var/lib/docker", "var/run", "etc/docker", "run/docker"):
        tree.add_dir(d, 0o755 if d != "var/lib/docker" else 0o711)
    for name in ENGINE_BINARIES:
        if engine_root is not None and name not in HOST_ONLY_BINARIES:
            binary = tree_binary(engine_root, name)
        else:
            binary = host_binary(name)
        tree.add_with_libraries(binary, f"usr/bin/{name}")
    if engine_root is not None:
        cli = tree_binary(engine_root, "docker")
    else:
        # The host's own client (Debian's), not whatever other CLI is first on PATH.
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
    return ImageSpec(tag, tree, changes)


def dind_rootless_spec(tag: str = ROOTLESS_DIND_IMAGE) -> ImageSpec:
    """The host engine's DinD image for a rootless dockerd (see the module's docstring)."""
    base = dind_spec()
    tree = base.tree
    uid = ROOTLESS_UID
    user = f"rootless:x:{uid}:{uid}:rootless:{ROOTLESS_HOME}:/bin/sh\n".encode()
    tree.add("etc/passwd", Inline(PASSWD + user))
    tree.add("etc/group", Inline(DIND_GROUP + f"rootless:x:{uid}:\n".encode()))
    first, count = ROOTLESS_SUBIDS
    for name in ("etc/subuid", "etc/subgid"):
        tree.add(name, Inline(f"rootless:{first}:{count}\n".encode()))
    for name in ROOTLESS_BINARIES:
        binary = host_binary(name)
        mode = binary.stat().st_mode
        if name.startswith("new") and not mode & 0o4000:
            raise ImageBuildError(f"{binary} is not setuid root; reinstall uidmap")
        tree.add_with_libraries(binary, f"usr/bin/{name}")
    # rootlesskit's slirp4netns driver runs `nsenter ... ip tuntap ...`: util-linux's
    # nsenter and iproute2's ip. Busybox's applets will not do: its ip has no tuntap, and
    # its nsenter runs its own ip applet whatever is on PATH.
    tree.add_with_libraries(host_binary("ip"), "usr/sbin/ip")
    tree.add_with_libraries(host_binary("nsenter"), "usr/bin/nsenter")
    if not DOCKERD_ROOTLESS_SH.is_file():
        raise ImageBuildError(f"{DOCKERD_ROOTLESS_SH} is missing; run scripts/install-engine")
    tree.add("usr/local/bin/dockerd-rootless.sh", Inline(DOCKERD_ROOTLESS_SH.read_bytes(), 0o755))
    entrypoint = (HERE / "dind-rootless-entrypoint.sh").read_bytes()
    tree.add("usr/local/bin/dind-rootless", Inline(entrypoint, 0o755))
    home = ROOTLESS_HOME.lstrip("/")
    for folder in (home, f"{home}/.local", f"{home}/.local/share", f"{home}/.config"):
        tree.add_owned_dir(folder, uid, uid)
    tree.add_owned_dir(f"{home}/.local/share/docker", uid, uid, 0o710)
    # The certificates arrive as a tar unpacked by the rootless user (dockmoat's wrapper).
    tree.add_owned_dir("certs", uid, uid)
    tree.add("run/user", Dir(0o1777))
    changes = (
        f"ENV PATH={SEARCH_PATH}",
        f"ENV HOME={ROOTLESS_HOME}",
        "USER rootless",
        'ENTRYPOINT ["/usr/local/bin/dind-rootless"]',
        'CMD ["dockerd"]',
        f'VOLUME ["{ROOTLESS_HOME}/.local/share/docker"]',
    )
    return ImageSpec(tag, tree, changes)


def dind_tag(version: str) -> str:
    return f"{DIND_REPOSITORY}:{version}"


def matrix_dind_specs() -> list[ImageSpec]:
    """`dockmoat-test/dind:<version>` of every unpacked engine tree but the host's own
    version (that one is `dockmoat-test/dind:latest`, tagged with its version too)."""
    host = engine_version(host_binary("dockerd"))
    return [
        dind_spec(root, dind_tag(version))
        for version, root in engine_trees().items()
        if version != host
    ]


def tag_alias(docker: str, source: str, alias: str, say: Callable[[str], None]) -> bool:
    """Point `alias` at the image `source` names, unless it already does; True if moved."""
    src = inspect_tag(docker, source)
    if src is None:
        raise ImageBuildError(f"{source} is missing; cannot tag it {alias}")
    now = inspect_tag(docker, alias)
    if now is not None and now.image_id == src.image_id:
        return False
    say(f"tagging {source} as {alias}")
    proc = subprocess.run([docker, "tag", source, alias], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"docker tag {source} {alias} failed: {proc.stderr.strip()}")
    return True


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
