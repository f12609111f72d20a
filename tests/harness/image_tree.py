"""A root filesystem assembled from host files, written as a tar for `docker import`.

The tree mirrors the host's symlink layout (e.g. Debian's merged /usr, where
/lib -> usr/lib), so a library path reported by `ldd` is valid inside the image.
The tar is deterministic (sorted, mtime 0, root-owned) and the digest covers the
inputs (paths, modes, sizes, mtimes, inline content) so unchanged inputs are
detected without reading every byte.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755
    # Owner in the image (e.g. a rootless image's home); root unless said.
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class HostFile:
    source: Path
    mode: int


@dataclass(frozen=True)
class Inline:
    data: bytes
    mode: int = 0o644


Entry = Dir | Symlink | HostFile | Inline
_LDD_PATH = re.compile(r"(/\S+)")


class ImageTree:
    """Paths (relative, no leading slash) to entries; directory symlinks are honoured."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    # -- placing entries ------------------------------------------------------
    def _resolve_dirs(self, path: str) -> str:
        """`path` with its parent components resolved through symlinks in the tree."""
        parts = PurePosixPath(path.lstrip("/")).parts
        resolved: list[str] = []
        for depth, part in enumerate(parts):
            resolved.append(part)
            if depth == len(parts) - 1:
                break
            for _ in range(40):  # bounded: a symlink loop is a bug in the tree
                entry = self.entries.get("/".join(resolved))
                if not isinstance(entry, Symlink):
                    break
                base = PurePosixPath(*resolved[:-1]) if entry.target[0] != "/" else PurePosixPath()
                resolved = list(
                    PurePosixPath(os.path.normpath(base / entry.target.lstrip("/"))).parts
                )
        return "/".join(resolved)

    def _ensure_parents(self, path: str) -> None:
        parent = PurePosixPath(path).parent
        for ancestor in reversed([parent, *parent.parents]):
            key = str(ancestor)
            if key in (".", ""):
                continue
            self.entries.setdefault(key, Dir())

    def add(self, path: str, entry: Entry, *, replace: bool = True) -> str:
        """Place an entry; returns its resolved path. `replace=False` keeps what is there."""
        key = self._resolve_dirs(path)
        if not replace and key in self.entries:
            return key
        self._ensure_parents(key)
        self.entries[key] = entry
        return key

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        """A directory, unless something (e.g. a merged-/usr symlink) is already there."""
        self.add(path, Dir(mode), replace=False)

    def add_owned_dir(self, path: str, uid: int, gid: int, mode: int = 0o755) -> None:
        """A directory owned by `uid:gid`, replacing a root-owned one placed before."""
        self.add(path, Dir(mode, uid, gid))

    def add_host_path(self, path: str | Path, dest: str | None = None) -> None:
        """Copy a host path (file, or symlink chain to one) keeping its symlinks.

        Parent directories that are symlinks on the host (e.g. /lib) become the
        same symlinks in the image, so every spelling of the path keeps working.
        """
        host = Path(path)
        if dest is None:
            self._mirror_parent_symlinks(host)
            dest = str(host)
        for _ in range(40):
            if host.is_symlink():
                target = os.readlink(host)
                self.add(dest, Symlink(target))
                nxt = host.parent / target if not target.startswith("/") else Path(target)
                host = Path(os.path.normpath(nxt))
                self._mirror_parent_symlinks(host)
                dest = self._resolve_dirs(str(host))
                continue
            st = host.stat()
            self.add(dest, HostFile(host, st.st_mode & 0o7777))
            return
        raise OSError(f"symlink loop at {path}")

    def _mirror_parent_symlinks(self, host: Path) -> None:
        for ancestor in reversed(list(host.parents)):
            if str(ancestor) != "/" and ancestor.is_symlink():
                key = str(ancestor).lstrip("/")
                if key not in self.entries:
                    self.entries[key] = Symlink(os.readlink(ancestor))

    def add_with_libraries(self, binary: str | Path, dest: str | None = None) -> None:
        """A host executable plus every shared library `ldd` lists (and the loader)."""
        self.add_host_path(binary, dest)
        for lib in shared_libraries(Path(binary)):
            self.add_host_path(lib)

    def add_host_tree(self, directory: str | Path) -> None:
        """Every file under a host directory (e.g. the xtables extensions), with their libs."""
        for root, _dirs, files in os.walk(directory):
            for name in sorted(files):
                path = Path(root) / name
                self.add_host_path(path)
                if name.endswith(".so"):
                    for lib in shared_libraries(path):
                        self.add_host_path(lib)

    # -- output -----------------------------------------------------------------
    def digest(self, extra: bytes = b"") -> str:
        """A hash of the inputs: changes when any file, mode, link or inline content does."""
        h = hashlib.sha256(extra)
        for key in sorted(self.entries):
            entry = self.entries[key]
            h.update(key.encode() + b"\0")
            if isinstance(entry, HostFile):
                st = entry.source.stat()
                h.update(f"F{entry.mode:o}:{st.st_size}:{st.st_mtime_ns}".encode())
            elif isinstance(entry, Inline):
                h.update(f"I{entry.mode:o}:".encode() + hashlib.sha256(entry.data).digest())
            elif isinstance(entry, Symlink):
                h.update(f"L{entry.target}".encode())
            else:
                owner = f":{entry.uid}:{entry.gid}" if entry.uid or entry.gid else ""
                h.update(f"D{entry.mode:o}{owner}".encode())
            h.update(b"\n")
        return h.hexdigest()

    def write_tar(self, out: IO[bytes]) -> None:
        """Stream the tree as an uncompressed tar (what `docker import -` accepts)."""
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for key in sorted(self.entries):
                entry = self.entries[key]
                info = tarfile.TarInfo(key)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if isinstance(entry, Dir):
                    info.type, info.mode = tarfile.DIRTYPE, entry.mode
                    if entry.uid or entry.gid:
                        info.uid, info.gid = entry.uid, entry.gid
                        info.uname = info.gname = ""
                    tar.addfile(info)
                elif isinstance(entry, Symlink):
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
                    tar.addfile(info)
                elif isinstance(entry, Inline):
                    info.size, info.mode = len(entry.data), entry.mode
                    tar.addfile(info, io.BytesIO(entry.data))
                else:
                    info.size, info.mode = entry.source.stat().st_size, entry.mode
                    with entry.source.open("rb") as f:
                        tar.addfile(info, f)


def shared_libraries(binary: Path) -> list[str]:
    """Absolute paths of the libraries (and dynamic loader) `ldd` resolves for binary."""
    return list(_shared_libraries(str(binary)))


@functools.lru_cache(maxsize=1024)
def _shared_libraries(binary: str) -> tuple[str, ...]:
    # Cached: the DinD images of the matrix share iptables, its ~100 extensions and
    # busybox, and `up` would otherwise run ldd on each once per image.
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return ()
        raise OSError(f"ldd {binary} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    libs: list[str] = []
    for line in proc.stdout.splitlines():
        if "not found" in line:
            raise OSError(f"ldd {binary}: {line.strip()}")
        # "libc.so.6 => /lib/.../libc.so.6 (0x..)" or "/lib64/ld-linux-x86-64.so.2 (0x..)"
        part = line.split("=>", 1)[-1]
        match = _LDD_PATH.search(part)
        if match:
            libs.append(match.group(1))
    return tuple(libs)
