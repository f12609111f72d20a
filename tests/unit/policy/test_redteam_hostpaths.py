"""hostpaths.resolve reads a bind source as dockerd and the kernel do, and fails closed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockmoat.policy import hostpaths


def test_dotdot_after_a_link_is_cleaned_before_the_link_is_followed(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    # Go's path.Clean drops "link/.." without looking at the link (realpath gives a/x).
    assert hostpaths.resolve(f"{tmp_path}/link/../x") == f"{tmp_path}/x"
    assert hostpaths.resolve(f"{tmp_path}/link/x") == f"{tmp_path}/a/b/x"


def test_links_relative_absolute_and_missing_components(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "rel").symlink_to("../d")
    (tmp_path / "abs").symlink_to("/etc")
    assert hostpaths.resolve(f"{tmp_path}/d/rel/rel/missing/new") == f"{tmp_path}/d/missing/new"
    assert hostpaths.resolve(f"{tmp_path}/abs/ssl") == os.path.realpath("/etc/ssl")
    assert hostpaths.resolve(f"/{tmp_path}//./d/") == f"{tmp_path}/d"
    assert hostpaths.resolve("/") == "/"


def test_a_link_loop_or_unreadable_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(OSError):
        hostpaths.resolve(f"{tmp_path}/loop/etc")
    problem = hostpaths.bind_problem(f"{tmp_path}/loop/etc", [str(tmp_path)], ())
    assert problem is not None and "cannot be resolved" in problem


def test_a_resolved_name_longer_than_path_max_is_refused(tmp_path: Path) -> None:
    deep = "/".join(["x" * 200] * 12)
    (tmp_path / deep).mkdir(parents=True)
    (tmp_path / deep / "s2").symlink_to(deep)  # relative: lands ~2400 bytes deeper again
    (tmp_path / "s1").symlink_to(tmp_path / deep)
    source = f"{tmp_path}/s1/s2/x"
    assert hostpaths.bind_problem(source, [str(tmp_path)], ()) is not None
