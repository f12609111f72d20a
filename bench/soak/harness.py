"""The private dockerd and the `dockmoat serve` under test, started and stopped by the suite."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DOCKMOAT = Path(sys.executable).parent / "dockmoat"
HOST_ENGINE = "unix:///var/run/docker.sock"
BUSYBOX = "dockmoat-test/busybox:latest"


def wait_for(check: object, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        time.sleep(step)
    return False


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text (a `/metrics` answer) as {sample name with its labels: value}:
    `dockmoat_audit_dropped_total` or `dockmoat_dind_pool_idle_daemons{cache_key=""}`."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def ping(sock: str, timeout: float = 2.0) -> int | None:
    """The status of GET /_ping on a unix socket, None when nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(sock)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
        return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


class Dockerd:
    """A dockerd of our own: `unshare --net`, vfs, its own roots; restarted and killed at will."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = str(root / "docker.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        # Days that a fault breaks may leave their network (the load removes them when
        # the daemon answers again): the default pools (31 networks) ran out in a small
        # run, and 256 (/24s of 10.200/16) in a 100-job run; /24s of 10.192/10 give
        # 16,384. The daemon has a network namespace of its own, so the range is free.
        (root / "daemon.json").write_text(
            '{"default-address-pools": [{"base": "10.192.0.0/10", "size": 24}]}'
        )

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def start(self, timeout: float = 90.0) -> None:
        argv = [
            *("unshare", "--net", "dockerd", "--host", self.url),
            *("--config-file", str(self.root / "daemon.json")),
            *("--pidfile", str(self.root / "dockerd.pid")),
            *("--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec")),
            *("--iptables=false", "--ip-masq=false", "--storage-driver", "vfs"),
        ]
        env = dict(os.environ)
        env["PATH"] = env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
        with (self.root / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        if not wait_for(lambda: ping(self.sock) == 200, timeout):
            raise RuntimeError(f"private dockerd did not answer; see {self.root}/dockerd.log")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        # A SIGKILLed dockerd leaves its containerd (same process group, killed above)
        # and its socket; wait until both are gone before the next start.
        wait_for(lambda: not self._containerd_alive(), 20)

    def _containerd_alive(self) -> bool:
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def load_busybox(self) -> None:
        save = subprocess.Popen(
            ["docker", "-H", HOST_ENGINE, "save", BUSYBOX], stdout=subprocess.PIPE
        )
        subprocess.run(
            ["docker", "-H", self.url, "load", "-q"],
            stdin=save.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        save.wait(60)


class Serve:
    """`dockmoat serve` in front of the private dockerd, with tenancy, audit log and metrics."""

    def __init__(self, root: Path, upstream: str, state_dir: Path, audit_dir: Path) -> None:
        self.root = root
        self.upstream = upstream
        self.sock = str(root / "gw.sock")
        self.control = str(root / "control.sock")
        self.jobs_dir = root / "jobs"
        self.state_db = state_dir / "state.db"
        self.audit = audit_dir / "audit.log"
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        argv = [
            str(DOCKMOAT),
            "serve",
            "--listen",
            f"unix://{self.sock}",
            *("--upstream", self.upstream, "--state-db", str(self.state_db)),
            *("--control-socket", self.control, "--jobs-dir", str(self.jobs_dir)),
            *("--audit-log", str(self.audit), "--bind-pins", "off"),
            *("--metrics-listen", f"tcp://127.0.0.1:{self.metrics_port}"),
        ]
        with (self.root / "serve.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        if not wait_for(lambda: os.path.exists(self.control) and ping(self.sock) == 200, timeout):
            raise RuntimeError(f"dockmoat serve did not start; see {self.root}/serve.log")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def metrics(self, timeout: float = 10.0) -> dict[str, float]:
        """The guard's `/metrics` (parse_metrics); empty when it does not answer."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:  # loopback only
                return parse_metrics(answer.read().decode(errors="replace"))
        except OSError:
            return {}

    def job(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DOCKMOAT), "job", *args, "--control", self.control],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def job_socket(self, name: str) -> str:
        return str(self.jobs_dir / f"{name}.sock")

    def ls(self) -> list[dict[str, object]]:
        out = self.job("ls", "--format", "json")
        if out.returncode != 0:
            raise RuntimeError(f"job ls: {out.stderr.strip()}")
        data = json.loads(out.stdout)
        jobs = data["jobs"] if isinstance(data, dict) else data
        return list(jobs)

    def sample(self) -> tuple[int, int, float]:
        """RSS (KiB), open fds and CPU seconds (user+system) of the serving process."""
        pid = self.pid
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return rss, fds, cpu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmallDisk:
    """A small ext4 in a loop device of its own (root only), mounted errors=remount-ro:
    "disk full" is a filler file, "read-only" is an ext4 error the kernel answers by
    remounting it read-only (as it does for a failing disk; a plain `remount,ro` is
    refused while a file is open for writing)."""

    def __init__(self, path: Path, size_mib: int) -> None:
        self.path = path
        self.image = path.with_suffix(".img")
        path.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as f:
            f.truncate(size_mib * 2**20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        self.device = subprocess.run(
            ["losetup", "--find", "--show", str(self.image)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        subprocess.run(["mount", "-o", "errors=remount-ro", self.device, str(path)], check=True)

    def fill(self) -> None:
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={self.path}/filler", "bs=64k"],
            capture_output=True,
            check=False,
        )

    def unfill(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)

    def fs_error(self) -> None:
        name = os.path.basename(self.device)
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("soak\n")

    def repair(self) -> None:
        """What an operator does after an ext4 error (with serve stopped): fsck, mount again."""
        subprocess.run(["umount", str(self.path)], check=True)
        subprocess.run(["e2fsck", "-fy", self.device], capture_output=True, check=False)
        subprocess.run(
            ["mount", "-o", "errors=remount-ro", self.device, str(self.path)], check=True
        )

    def remove(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)
        subprocess.run(["losetup", "-d", self.device], check=False)
        self.image.unlink(missing_ok=True)


def kill_leftovers(root: Path) -> list[int]:
    """Processes of our private engine that outlive it: a SIGKILLed dockerd leaves the
    containerd shims of its containers (`-address <root>/exec/...`), and a container
    whose start it cut short leaves its `runc init` under one. Only those, by pid."""
    shims = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(root).encode() + b"/" in cmdline:
            shims.append(int(entry.name))
    pids = list(shims)
    for pid in shims:
        with contextlib.suppress(OSError):
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def unmount_under(root: Path) -> None:
    """Unmount what dockerd left mounted under our scratch folder (deepest first)."""
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(root) + "/")
    ]
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


def scratch() -> Path:
    # Short: unix socket paths are limited to 108 bytes.
    return Path(tempfile.mkdtemp(prefix="dmsoak-", dir="/tmp"))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
