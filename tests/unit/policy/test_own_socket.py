"""A job's own guarded socket is bindable by that job's containers, exactly, although
it lies among the protected paths (tenancy puts it where a job binds the Docker socket);
nothing under or beside it is."""

from __future__ import annotations

import socket
from pathlib import Path

from dockmoat.policy import hostpaths
from dockmoat.tenancy.stage import daemon_sockets


def test_only_the_exact_own_socket_is_allowed(tmp_path: Path) -> None:
    jobs = tmp_path / "run" / "dockmoat" / "jobs"
    jobs.mkdir(parents=True)
    own = jobs / "ci-1.sock"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(own))
        protected = hostpaths.protected_paths((str(tmp_path / "run" / "dockmoat"),))
        assert hostpaths.bind_problem(str(own), (), protected) is not None  # without it
        assert hostpaths.bind_problem(str(own), (), protected, str(own)) is None
        other = jobs / "ci-2.sock"
        assert hostpaths.bind_problem(str(other), (), protected, str(own)) is not None
        assert hostpaths.bind_problem(str(jobs), (), protected, str(own)) is not None
        link = tmp_path / "link.sock"
        link.symlink_to(own)
        assert hostpaths.bind_problem(str(link), (), protected, str(own)) is None


def test_the_daemons_socket_in_its_spellings(tmp_path: Path) -> None:
    found = daemon_sockets(tmp_path / "d.sock")
    assert hostpaths.resolve("/var/run/docker.sock") in found
    assert hostpaths.resolve("/run/docker.sock") in found
    assert str(tmp_path / "d.sock") in found
