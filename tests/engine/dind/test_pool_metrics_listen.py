"""`dockmoat dind pool --metrics-listen`: ready once a warm daemon is, and a hand-out
through `dind up` shows in /metrics (read with prometheus_client's parser)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dindtest_support import Dind
from prometheus_client.parser import text_string_to_metric_families

from dockmoat.dind.info import DindInfo

P = "dockmoat_dind_pool_"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_pool_metrics_count_a_hand_out(
    dind: Dind, dind_name: Callable[[], str], tmp_path: Path
) -> None:
    sock, log, port = tmp_path / "pool.sock", tmp_path / "pool.log", _free_port()
    base, listen = f"http://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "dockmoat", "dind", "pool", "--size", "1", "--image",
            dind.image, "--socket", str(sock), "--metrics-listen", listen]  # fmt: skip
    with log.open("wb") as out:
        pool = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dind.env())
    try:
        deadline = time.monotonic() + 120
        while True:
            assert pool.poll() is None, log.read_text()
            try:
                status, why = _get(f"{base}/ready")
            except OSError as error:  # not listening yet
                status, why = 0, str(error)
            if status == 200:
                break
            assert time.monotonic() < deadline, (status, why, log.read_text())
            time.sleep(0.2)
        assert why.startswith("ready: 1 idle"), why

        up = dind.cli("dind", "up", dind_name(), "--image", dind.image,
                      "--pool-socket", str(sock), "--format", "json")  # fmt: skip
        assert "took warm daemon" in up.stderr
        DindInfo.from_json(json.loads(up.stdout))

        status, text = _get(f"{base}/metrics")
        assert status == 200
        families = {family.name: family for family in text_string_to_metric_families(text)}
        values = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in families.values()
            for sample in family.samples
        }
        assert values[(P + "handouts_total", (("outcome", "served"),))] == 1
        assert values[(P + "handouts_total", (("outcome", "empty"),))] == 0
        assert values[(P + "daemon_starts_total", (("outcome", "ok"),))] >= 1
        assert values[(P + "handout_duration_seconds_count", ())] == 1
        assert values[(P + "target_size", (("cache_key", ""),))] == 1
        assert _get(f"{base}/live") == (200, "live\n")
    finally:
        pool.terminate()
        pool.wait(timeout=180)
    assert pool.returncode == 0, log.read_text()
    assert f"metrics on {listen}" in log.read_text()
