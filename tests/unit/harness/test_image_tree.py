"""The image tree: host files keep their symlink layout, the tar is deterministic."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from harness.image_tree import Dir, HostFile, ImageTree, Inline, Symlink, shared_libraries


def tar_members(tree: ImageTree) -> dict[str, tarfile.TarInfo]:
    buf = io.BytesIO()
    tree.write_tar(buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_paths_under_a_directory_symlink_land_in_its_target() -> None:
    tree = ImageTree()
    tree.add("lib", Symlink("usr/lib"))
    tree.add("lib/x/libc.so.6", Inline(b"c"))
    assert "usr/lib/x/libc.so.6" in tree.entries
    assert isinstance(tree.entries["usr/lib"], Dir)
    assert tree.entries["lib"] == Symlink("usr/lib")


def test_absolute_symlink_targets_resolve_from_the_image_root() -> None:
    tree = ImageTree()
    tree.add("usr/lib64", Symlink("/opt/lib"))
    tree.add("usr/lib64/ld.so", Inline(b"ld"))
    assert "opt/lib/ld.so" in tree.entries


def test_add_dir_never_replaces_a_symlink() -> None:
    tree = ImageTree()
    tree.add("bin", Symlink("usr/bin"))
    tree.add_dir("bin")
    assert tree.entries["bin"] == Symlink("usr/bin")


def test_host_symlink_chain_is_kept(tmp_path: Path) -> None:
    real = tmp_path / "real" / "tool"
    real.parent.mkdir()
    real.write_bytes(b"#!/bin/sh\n")
    real.chmod(0o755)
    (tmp_path / "alias").symlink_to("real/tool")
    tree = ImageTree()
    tree.add_host_path(tmp_path / "alias")
    rel = str(tmp_path).lstrip("/")
    assert tree.entries[f"{rel}/alias"] == Symlink("real/tool")
    assert tree.entries[f"{rel}/real/tool"] == HostFile(real, 0o755)


def test_tar_is_deterministic_and_root_owned(tmp_path: Path) -> None:
    def build() -> bytes:
        tree = ImageTree()
        tree.add("etc/passwd", Inline(b"root:x:0:0::/:/bin/sh\n"))
        tree.add_dir("tmp", 0o1777)
        tree.add("bin/sh", Symlink("busybox"))
        buf = io.BytesIO()
        tree.write_tar(buf)
        return buf.getvalue()

    assert build() == build()
    tree = ImageTree()
    tree.add_dir("tmp", 0o1777)
    members = tar_members(tree)
    assert members["tmp"].mode == 0o1777
    assert members["tmp"].uid == 0 and members["tmp"].mtime == 0


def test_digest_follows_inputs(tmp_path: Path) -> None:
    host = tmp_path / "f"
    host.write_bytes(b"one")
    tree = ImageTree()
    tree.add_host_path(host, "f")
    tree.add("etc/x", Inline(b"a"))
    first = tree.digest()
    assert tree.digest() == first
    host.write_bytes(b"three")  # size changes
    second = tree.digest()
    assert second != first
    tree.add("etc/x", Inline(b"b"))
    assert tree.digest() != second
    assert tree.digest(b"format-2") != tree.digest()


def test_ldd_lists_the_loader_of_a_dynamic_binary() -> None:
    libs = shared_libraries(Path(os.path.realpath("/usr/bin/python3")))
    assert any("ld-linux" in lib for lib in libs)
    assert all(lib.startswith("/") for lib in libs)


def test_static_binary_has_no_libraries() -> None:
    assert shared_libraries(Path("/usr/bin/busybox")) == []


def test_an_owned_directory_keeps_its_owner_in_the_tar_and_the_digest() -> None:
    plain, owned = ImageTree(), ImageTree()
    plain.add_dir("home/rootless", 0o755)
    owned.add_owned_dir("home/rootless", 1000, 1000, 0o755)
    members = tar_members(owned)
    assert (members["home/rootless"].uid, members["home/rootless"].gid) == (1000, 1000)
    assert members["home"].uid == 0  # its parents stay root's
    assert plain.digest() != owned.digest()
    # A root-owned directory hashes as before owners existed (no rebuild of old images).
    assert Dir(0o755) == Dir(0o755, 0, 0)
