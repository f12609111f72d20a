"""Ryuk, testcontainers' reaper, built from its own source for the tests (never pulled).

`tests/harness/ryuk/main.go` is moby-ryuk's `main.go` at its tag 0.5.1 (commit
7710e898ea5a52ef67bafa5b4a54581985c523be, MIT, its LICENSE beside it), unchanged.
Ryuk 0.5.1 imports only the Docker client (`github.com/docker/docker/client` and the
API types) and `gopkg.in/matryer/try.v1`; its other go.mod requirements are its
tests'. Both come from Debian's Go source packages (GO_PACKAGES, bookworm), which
`scripts/install-engine` unpacks under LIBEXEC/trees/ryuk-go, and the compiler is
bookworm's `golang-go` (Go 1.19; Ryuk 0.5.1 asks for 1.18). The build runs in GOPATH
mode with no module proxy, so nothing is fetched. Two differences from upstream's own
build: the Docker client is Debian's 20.10.24 (upstream pinned 23.0.5; every call
Ryuk makes exists in 20.10 and it negotiates the API version), and `try.v1` is
Debian's `github.com/matryer/try` (the 2016 revision that Ryuk's go.sum also lists;
the same `Do` and `MaxRetries`), placed at the `gopkg.in` import path.

The binary is cached under CACHE/<inputs digest>/ryuk: rebuilt only when the source,
the Go packages or the compiler change. The image `dockmoat-test/ryuk:0.5.1` is that
static binary alone, with upstream's CMD and `org.testcontainers.ryuk=true` label;
testcontainers is pointed at it by `RYUK_CONTAINER_IMAGE` (its default tag is
upstream's, which the tests cannot pull).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from harness import gobuild
from harness.clients import LIBEXEC, TREES
from harness.image_tree import ImageTree
from harness.images import SEARCH_PATH, ImageBuildError, ImageSpec

RYUK_VERSION = "0.5.1"
RYUK_IMAGE = f"dockmoat-test/ryuk:{RYUK_VERSION}"
SOURCE = Path(__file__).resolve().parent / "ryuk"
GO_TREE = "ryuk-go"
# Ryuk's import graph, package by package (Debian bookworm's Go source packages).
GO_PACKAGES = (
    "golang-github-docker-docker-dev",
    "golang-github-docker-distribution-dev",
    "golang-github-docker-go-connections-dev",
    "golang-github-docker-go-units-dev",
    "golang-github-gogo-protobuf-dev",
    "golang-github-opencontainers-go-digest-dev",
    "golang-github-opencontainers-image-spec-dev",
    "golang-github-pkg-errors-dev",
    "golang-github-sirupsen-logrus-dev",
    "golang-golang-x-net-dev",
    "golang-golang-x-sys-dev",
    "golang-github-matryer-try-dev",
)
# The compiler, installed as a plain package of the machine's release.
GO_COMPILER_PACKAGE = "golang-go"
CACHE = Path(os.environ.get("DOCKMOAT_TEST_CACHE", "/var/cache/dockmoat-test")) / "ryuk"
IMPORT_PATH = "github.com/testcontainers/moby-ryuk"


def go_binary() -> Path:
    found = shutil.which("go", path=f"{SEARCH_PATH}:/usr/lib/go/bin")
    if found is None:
        raise ImageBuildError(f"go not found (Debian's {GO_COMPILER_PACKAGE}); run make setup")
    return Path(found)


def gocode(root: Path = LIBEXEC) -> Path:
    """The GOPATH entry holding the unpacked Debian Go sources."""
    path = root / TREES / GO_TREE / "usr" / "share" / "gocode"
    if not (path / "src" / "github.com" / "docker" / "docker" / "client").is_dir():
        raise ImageBuildError(f"the Go sources for Ryuk are missing from {path}; run make setup")
    return path


def inputs_digest(go: Path, root: Path = LIBEXEC) -> str:
    sources = [
        name.encode() + b"\0" + (SOURCE / name).read_bytes() for name in ("main.go", "LICENSE")
    ]
    return gobuild.inputs_digest(b"dockmoat-test-ryuk/1\n", sources, go, root, GO_TREE)


def build_ryuk(
    say: Callable[[str], None] | None = None,
    root: Path = LIBEXEC,
    cache: Path = CACHE,
) -> Path:
    """The Ryuk binary, built from SOURCE offline unless the cache has it."""
    go = go_binary()
    gopath_debian = gocode(root)

    def link_try_v1(work: Path) -> None:
        # Ryuk imports gopkg.in/matryer/try.v1; Debian ships it as github.com/matryer/try.
        try_v1 = work / "src" / "gopkg.in" / "matryer" / "try.v1"
        try_v1.parent.mkdir(parents=True)
        try_v1.symlink_to(gopath_debian / "src" / "github.com" / "matryer" / "try")

    return gobuild.go_build(
        go,
        gopath_debian,
        SOURCE,
        IMPORT_PATH,
        cache,
        inputs_digest(go, root),
        "ryuk",
        what="Ryuk",
        ldflags="-s",
        timeout=900,
        say=say,
        saying=f"building Ryuk {RYUK_VERSION} from source with {go} (offline, GOPATH mode)",
        prepare=link_try_v1,
    )


def ryuk_spec(say: Callable[[str], None] | None = None) -> ImageSpec:
    """`dockmoat-test/ryuk:0.5.1`: the static Ryuk binary and upstream's CMD and label."""
    tree = ImageTree()
    tree.add_dir("tmp", 0o1777)
    tree.add_host_path(build_ryuk(say), "bin/ryuk")
    changes = ('CMD ["/bin/ryuk"]', "LABEL org.testcontainers.ryuk=true")
    return ImageSpec(RYUK_IMAGE, tree, changes)
