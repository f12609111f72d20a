"""Streams do not grow the gateway's memory: `docker save`/`load` of a 200 MB image."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
from gwserve import Served


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_save_and_load_keep_memory_flat(
    permissive: Served, dind_image: str, tmp_path: Path
) -> None:
    pid = permissive.process.pid
    before = rss_mib(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mib(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    tar = tmp_path / "dind.tar"
    try:
        with tar.open("wb") as out:
            subprocess.run(["docker", "save", dind_image], stdout=out, env=permissive.env(),
                           check=True, timeout=300)  # fmt: skip
        loaded = subprocess.run(["docker", "load", "-i", str(tar)], capture_output=True,
                                env=permissive.env(), check=True, timeout=300)  # fmt: skip
    finally:
        done.set()
        sampler.join()
    assert tar.stat().st_size > 100 * 1024 * 1024
    assert b"Loaded image" in loaded.stdout
    assert peak[0] - before < 40, (before, peak[0])
