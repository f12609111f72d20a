"""`missing_mount_flags` reads the real mount flags of real mounts (made here, as root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockmoat.policy.hostpaths import missing_mount_flags


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    made: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"m{len(made)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        made.append(point)
        return point

    yield mount
    for point in made:
        subprocess.run(["umount", str(point)], check=False)


def test_a_nosuid_nodev_mount_lacks_nothing(mounted) -> None:  # type: ignore[no-untyped-def]
    assert missing_mount_flags(mounted("nosuid,nodev,size=1m") / ".") == ()


def test_a_plain_mount_lacks_both(mounted) -> None:  # type: ignore[no-untyped-def]
    folder = mounted("size=1m") / "ws"
    folder.mkdir()
    assert missing_mount_flags(folder) == ("nosuid", "nodev")


def test_only_nosuid(mounted) -> None:  # type: ignore[no-untyped-def]
    assert missing_mount_flags(mounted("nosuid,size=1m")) == ("nodev",)


def test_a_missing_folder_is_not_an_error(tmp_path: Path) -> None:
    assert missing_mount_flags(tmp_path / "not-yet") == ()
