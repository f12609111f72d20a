"""A custom BuildKit frontend image for the `# syntax=` tests, built here (never pulled).

`tests/harness/frontend/main.go` is the project's own small frontend: it speaks
BuildKit's frontend gateway protocol (`grpcclient.RunFromEnvironment`), reads the
build's Dockerfile from the client's session (`FROM <image>` picks the base, each
`RUN <shell>` becomes an exec op) and adds `/frontend` (MARKER). It is built offline in
GOPATH mode (GO111MODULE=off, no module proxy) from Debian sid's Go source packages
(GO_PACKAGES: BuildKit's sources ship in `golang-github-docker-docker-dev`),
unpacked by `scripts/install-engine` under LIBEXEC/trees/frontend-go (source only,
nothing installed), with sid's `golang-1.26-go` (OpenTelemetry's SDK there needs
Go >= 1.25; the machine's bookworm Go 1.19 cannot build it). BuildKit's full
Dockerfile frontend (`frontend/dockerfile/cmd/dockerfile-frontend`) is not built:
this one is enough to run a real gateway frontend and costs far less of the machine.

The binary is cached under CACHE/<inputs digest>/frontend; the image
`dockmoat-test/frontend:latest` is that static binary alone, its ENTRYPOINT. The
engines run it from the local image store (a `# syntax=` image BuildKit finds locally
is not pulled).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from harness import gobuild
from harness.clients import LIBEXEC, TREES
from harness.image_tree import ImageTree
from harness.images import ImageBuildError, ImageSpec

FRONTEND_IMAGE = "dockmoat-test/frontend:latest"
MARKER = "built by dockmoat-test/frontend"
SOURCE = Path(__file__).resolve().parent / "frontend"
GO_TREE = "frontend-go"
# The import graph of SOURCE/main.go, package by package (Debian sid's Go sources).
GO_PACKAGES = (
    "golang-github-docker-docker-dev",
    "golang-github-cespare-xxhash-v2-dev",
    "golang-github-containerd-containerd-dev",
    "golang-github-containerd-errdefs-dev",
    "golang-github-containerd-log-dev",
    "golang-github-containerd-platforms-dev",
    "golang-github-containerd-ttrpc-dev",
    "golang-github-containerd-typeurl-dev",
    "golang-github-distribution-reference-dev",
    "golang-github-felixge-httpsnoop-dev",
    "golang-github-go-logr-logr-dev",
    "golang-github-go-logr-stdr-dev",
    "golang-github-gogo-protobuf-dev",
    "golang-github-golang-protobuf-1-5-dev",
    "golang-github-google-shlex-dev",
    "golang-github-google-uuid-dev",
    "golang-github-in-toto-attestation-dev",
    "golang-github-in-toto-in-toto-golang-dev",
    "golang-github-klauspost-compress-dev",
    "golang-github-moby-locker-dev",
    "golang-github-moby-sys-dev",
    "golang-github-opencontainers-go-digest-dev",
    "golang-github-opencontainers-image-spec-dev",
    "golang-github-pkg-errors-dev",
    "golang-github-planetscale-vtprotobuf-dev",
    "golang-github-secure-systems-lab-go-securesystemslib-dev",
    "golang-github-shibumi-go-pathspec-dev",
    "golang-github-sirupsen-logrus-dev",
    "golang-github-tonistiigi-fsutil-dev",
    "golang-golang-x-crypto-dev",
    "golang-golang-x-net-dev",
    "golang-golang-x-sync-dev",
    "golang-golang-x-sys-dev",
    "golang-golang-x-text-dev",
    "golang-google-genproto-dev",
    "golang-google-grpc-dev",
    "golang-google-protobuf-dev",
    "golang-opentelemetry-contrib-dev",
    "golang-opentelemetry-otel-dev",
)
GO_SUITE = "sid"
# The compiler: a versioned Debian toolchain from sid (nothing else of sid comes with it).
GO_COMPILER_PACKAGE = "golang-1.26-go"
GO_BIN = Path("/usr/lib/go-1.26/bin/go")
CACHE = Path(os.environ.get("DOCKMOAT_TEST_CACHE", "/var/cache/dockmoat-test")) / "frontend"
IMPORT_PATH = "dockmoat.test/frontend"


def go_binary() -> Path:
    if not GO_BIN.is_file():
        raise ImageBuildError(f"{GO_BIN} not found ({GO_COMPILER_PACKAGE}/sid); run make setup")
    return GO_BIN


def gocode(root: Path = LIBEXEC) -> Path:
    """The GOPATH entry holding the unpacked Debian Go sources."""
    path = root / TREES / GO_TREE / "usr" / "share" / "gocode"
    grpcclient = path / "src" / "github.com" / "moby" / "buildkit" / "frontend" / "gateway"
    if not (grpcclient / "grpcclient").is_dir():
        raise ImageBuildError(f"BuildKit's Go sources are missing from {path}; run make setup")
    return path


def inputs_digest(go: Path, root: Path = LIBEXEC) -> str:
    sources = [(SOURCE / "main.go").read_bytes()]
    return gobuild.inputs_digest(b"dockmoat-test-frontend/1\n", sources, go, root, GO_TREE)


def build_frontend(
    say: Callable[[str], None] | None = None, root: Path = LIBEXEC, cache: Path = CACHE
) -> Path:
    """The frontend binary, built from SOURCE offline unless the cache has it (a build
    takes minutes of CPU; the cache keeps it to once per change of its inputs)."""
    go = go_binary()
    return gobuild.go_build(
        go,
        gocode(root),
        SOURCE,
        IMPORT_PATH,
        cache,
        inputs_digest(go, root),
        "frontend",
        what="the frontend",
        ldflags="-s -w",
        timeout=1800,
        say=say,
        saying=f"building the BuildKit frontend of {FRONTEND_IMAGE} with {go} (offline, GOPATH)",
        extra_env={"GOTOOLCHAIN": "local"},
    )


def frontend_spec(say: Callable[[str], None] | None = None) -> ImageSpec:
    """`dockmoat-test/frontend:latest`: the static frontend binary, its ENTRYPOINT."""
    tree = ImageTree()
    tree.add_host_path(build_frontend(say), "bin/frontend")
    return ImageSpec(FRONTEND_IMAGE, tree, ('ENTRYPOINT ["/bin/frontend"]',))
