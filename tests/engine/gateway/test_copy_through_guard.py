"""`docker cp` through the guard, in both directions, many times in a row.

dockerd answers `HEAD /containers/{id}/archive` with 200 and no Content-Length. The
gateway once read that answer as "body until close", dropped the connection without
`Connection: close`, and the CLI's next request on it (the PUT) failed with a reset
about two times in three. A loop in one shell makes a regression show at once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gwserve import Served

from harness.clients import all_clients

ROUNDS = 100


def _loop(
    cli: str, env: dict[str, str], script: str, work: Path
) -> subprocess.CompletedProcess[str]:
    loop = f"fails=0; for i in $(seq {ROUNDS}); do {script} || fails=$((fails+1)); done"
    return subprocess.run(
        ["sh", "-c", f"{loop}; echo fails=$fails"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "CLI": cli},
        cwd=work,
    )


@pytest.mark.parametrize("client", ["docker", "docker-20.10"])
def test_docker_cp_both_ways_never_fails(
    client: str,
    tenant: Served,
    busybox_image: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    cli = all_clients().get(client)
    assert cli is not None, f"{client} is not installed: run `make setup` as root"
    name = unique_name("cp")
    env = tenant.env()
    subprocess.run(
        [cli, "run", "-d", "--name", name, busybox_image, "sleep", "600"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    try:
        (tmp_path / "in.txt").write_text("payload\n")
        before = len(tenant.audit_where(route="containers.archive_put"))
        copied_in = _loop(cli, env, f'"$CLI" cp in.txt {name}:/tmp/in.txt', tmp_path)
        assert copied_in.stdout.strip().endswith("fails=0"), copied_in.stderr[-2000:]
        copied_out = _loop(cli, env, f'"$CLI" cp {name}:/tmp/in.txt out.txt', tmp_path)
        assert copied_out.stdout.strip().endswith("fails=0"), copied_out.stderr[-2000:]
        assert (tmp_path / "out.txt").read_text() == "payload\n"
        # Every PUT the CLI made left its audit entry.
        deadline = time.monotonic() + 10
        while len(tenant.audit_where(route="containers.archive_put")) - before < ROUNDS:
            assert time.monotonic() < deadline, "PUTs missing from the audit log"
            time.sleep(0.1)
        assert len(tenant.audit_where(route="containers.archive_put")) - before == ROUNDS
    finally:
        subprocess.run([cli, "rm", "-f", name], capture_output=True, env=env)
