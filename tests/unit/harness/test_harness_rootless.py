"""The rootless DinD prerequisites (harness.rootless), the image's layout
(harness.images.dind_rootless_spec) and the extra runtimes' daemon.json (harness.runtimes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import images, rootless, runtimes
from harness.image_tree import Dir, HostFile, Inline, Symlink


def test_userns_reason_follows_the_kernel_limit(tmp_path: Path) -> None:
    limit = tmp_path / "max_user_namespaces"
    limit.write_text("0\n")
    assert "disabled" in (rootless.no_userns_reason(limit) or "")
    limit.write_text("15000\n")
    assert rootless.no_userns_reason(limit) is None


@pytest.mark.parametrize(("mode", "ok"), [(0o666, True), (0o600, False), (0o660, False)])
def test_tun_must_be_usable_by_everyone(mode: int, ok: bool) -> None:
    assert rootless.tun_mode_ok(0o020000 | mode) is ok


def test_a_missing_tun_is_an_error_not_a_skip(tmp_path: Path) -> None:
    with pytest.raises(rootless.RootlessSetupError, match="TUN/TAP"):
        rootless.ensure_tun(print, tmp_path / "tun")


def test_the_rootless_image_layout() -> None:
    spec = images.dind_rootless_spec()
    entries = spec.tree.entries
    assert "USER rootless" in spec.changes
    assert 'ENTRYPOINT ["/usr/local/bin/dind-rootless"]' in spec.changes
    passwd = entries["etc/passwd"]
    assert isinstance(passwd, Inline) and b"rootless:x:1000:1000:" in passwd.data
    for name in ("etc/subuid", "etc/subgid"):
        sub = entries[name]
        assert isinstance(sub, Inline) and sub.data == b"rootless:100000:65536\n"
    for folder in ("home/rootless/.local/share/docker", "certs"):
        entry = entries[folder]
        assert isinstance(entry, Dir) and (entry.uid, entry.gid) == (1000, 1000), folder
    for setuid in ("usr/bin/newuidmap", "usr/bin/newgidmap"):
        entry = entries[setuid]
        assert isinstance(entry, HostFile) and entry.mode & 0o4000, setuid
    # iproute2's ip (rootlesskit runs `ip tuntap`), not busybox's applet.
    ip = entries["usr/sbin/ip"]
    if isinstance(ip, Symlink):  # Debian: /usr/sbin/ip -> /bin/ip
        assert "busybox" not in ip.target
        ip = entries[spec.tree._resolve_dirs(ip.target.lstrip("/"))]
    assert isinstance(ip, HostFile) and ip.source.name == "ip", ip


def test_a_runtime_is_merged_into_daemon_json_keeping_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"default-runtime": "x", "runtimes": {"x": {"path": "/x"}}}))
    assert runtimes.write_runtime("crun", "/usr/bin/crun", config)
    assert json.loads(config.read_text()) == {
        "default-runtime": "x",
        "runtimes": {"x": {"path": "/x"}, "crun": {"path": "/usr/bin/crun"}},
    }
    assert not runtimes.write_runtime("crun", "/usr/bin/crun", config)  # nothing to change
    assert not any(p.name.endswith(".dockmoat-tmp") for p in tmp_path.iterdir())


def test_a_broken_daemon_json_is_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "daemon.json"
    config.write_text("{not json")
    with pytest.raises(runtimes.RuntimeSetupError, match="not valid JSON"):
        runtimes.write_runtime("crun", "/usr/bin/crun", config)
    assert config.read_text() == "{not json"
    assert os.access(config, os.R_OK)
