"""The matrix's DinD images: which engine trees become images, and from which files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import images
from harness.image_tree import HostFile


def _fake_dockerd(path: Path, version_line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(0o755)


def test_engine_version_is_major_minor(tmp_path: Path) -> None:
    dockerd = tmp_path / "dockerd"
    _fake_dockerd(dockerd, "Docker version 28.5.2+dfsg4, build 3ef3c07")
    assert images.engine_version(dockerd) == "28.5"
    _fake_dockerd(dockerd, "not a version")
    with pytest.raises(images.ImageBuildError, match="cannot tell the version"):
        images.engine_version(dockerd)


def test_engine_trees_are_the_unpacked_engines(tmp_path: Path) -> None:
    _fake_dockerd(tmp_path / "engine-20.10" / "usr" / "sbin" / "dockerd", "x")
    _fake_dockerd(tmp_path / "engine-26.1" / "usr" / "sbin" / "dockerd", "x")
    (tmp_path / "engine-9.9" / "usr").mkdir(parents=True)  # no dockerd: not an engine
    (tmp_path / "compose-v1").mkdir()
    assert images.engine_trees(tmp_path) == {
        "20.10": tmp_path / "engine-20.10",
        "26.1": tmp_path / "engine-26.1",
    }
    assert images.engine_trees(tmp_path / "missing") == {}


def test_a_tree_image_takes_the_trees_engine_and_the_hosts_runc(tmp_path: Path) -> None:
    if shutil.which("dockerd", path=images.SEARCH_PATH) is None:
        pytest.skip("needs the host's engine binaries to stand in for a tree")
    root = tmp_path / "engine-1.0"
    for name in ("dockerd", "docker-proxy"):
        (root / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(images.host_binary(name), root / "usr" / "sbin" / name)
    for name in ("containerd", "containerd-shim-runc-v2", "docker"):
        (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(images.host_binary(name), root / "usr" / "bin" / name)
    spec = images.dind_spec(root, images.dind_tag("1.0"))
    assert spec.tag == "dockmoat-test/dind:1.0"

    def source(path: str) -> Path:
        entry = spec.tree.entries[path]
        assert isinstance(entry, HostFile)
        return entry.source

    assert source("usr/bin/dockerd") == root / "usr" / "sbin" / "dockerd"
    assert source("usr/bin/containerd") == root / "usr" / "bin" / "containerd"
    assert source("usr/bin/docker") == root / "usr" / "bin" / "docker"
    assert root not in source("usr/bin/runc").parents
    with pytest.raises(images.ImageBuildError, match="docker-proxy is missing"):
        (root / "usr" / "sbin" / "docker-proxy").unlink()
        images.dind_spec(root, images.dind_tag("1.0"))
