"""Building a test image's one static Go binary offline, in GOPATH mode, from Debian's
unpacked Go source packages (shared by harness.ryuk and harness.frontend)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from harness.images import SEARCH_PATH, ImageBuildError


def unpacked_debs(root: Path, go_tree: str) -> list[str]:
    """The .deb file names (with versions) unpacked into the Go tree `go_tree`."""
    try:
        stamp: dict[str, str] = json.loads((root / "unpacked.json").read_text())
    except (OSError, ValueError):
        return []
    return sorted(deb for key, deb in stamp.items() if key.startswith(f"{go_tree}:"))


def inputs_digest(
    header: bytes, sources: Iterable[bytes], go: Path, root: Path, go_tree: str
) -> str:
    """The sha256 of `header`, `sources`, the compiler's version and the unpacked debs."""
    h = hashlib.sha256(header)
    for source in sources:
        h.update(source)
    version = subprocess.run([str(go), "version"], capture_output=True, text=True, check=False)
    h.update(version.stdout.encode())
    h.update("\n".join(unpacked_debs(root, go_tree)).encode())
    return h.hexdigest()


def go_build(
    go: Path,
    gopath_debian: Path,
    source: Path,
    import_path: str,
    cache: Path,
    digest: str,
    name: str,
    *,
    what: str,
    ldflags: str,
    timeout: int,
    say: Callable[[str], None] | None = None,
    saying: str = "",
    extra_env: dict[str, str] | None = None,
    prepare: Callable[[Path], None] | None = None,
) -> Path:
    """The binary cache/<digest[:16]>/<name>: unless there already, `source`/main.go built
    as package `import_path` (via a .partial file, so it exists only when complete), after
    `say(saying)`. `prepare(work)` may add to the scratch GOPATH."""
    target = cache / digest[:16] / name
    if target.is_file():
        return target
    if say is not None:
        say(saying)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}-build-") as scratch:
        work = Path(scratch)
        package = work / "src" / import_path
        package.mkdir(parents=True)
        shutil.copy2(source / "main.go", package / "main.go")
        if prepare is not None:
            prepare(work)
        env = {
            "PATH": SEARCH_PATH,
            "HOME": str(work),
            "GOPATH": f"{work}:{gopath_debian}",
            "GO111MODULE": "off",
            "GOPROXY": "off",
            **(extra_env or {}),
            "GOFLAGS": "",
            "GOCACHE": str(cache / "gocache"),
            "CGO_ENABLED": "0",
        }
        partial = target.with_suffix(".partial")
        argv = [str(go), "build", "-trimpath", "-ldflags", ldflags, "-o", str(partial), "."]
        proc = subprocess.run(
            argv, cwd=package, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise ImageBuildError(f"building {what} failed:\n{proc.stdout}{proc.stderr}")
        partial.replace(target)
    return target
