"""What the rootless DinD tests need from the machine, checked (and where it is a
machine setting, set) by `scripts/test-engine up` and by the tests' fixture.

- **User namespaces.** A rootless dockerd is rootlesskit's user namespace; a kernel
  with `user.max_user_namespaces = 0` cannot have one (the only reason to skip).
- **`/dev/net/tun` usable by everyone** (0666). rootlesskit's child creates its tap
  device (`ip tuntap add`) and slirp4netns opens it as the rootless user, whom a
  0600 root-owned node refuses ("open: Permission denied"). systemd-udev's default
  rules make it 0666 on an ordinary host; this machine has no udev, so the node stays
  0600 and the harness sets the mode udev would. TEST-ENVIRONMENT SETTING, not part
  of dockmoat (dockmoat's diagnosis names it when a nested daemon fails on it).
- **The image** `dockmoat-test/dind-rootless:latest` (harness.images), built from
  the host's Debian packages when its inputs changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from harness import images

TUN = Path("/dev/net/tun")
MAX_USERNS = Path("/proc/sys/user/max_user_namespaces")


class RootlessSetupError(Exception):
    """A prerequisite of rootless DinD is missing and cannot be set here."""


def no_userns_reason(path: Path = MAX_USERNS) -> str | None:
    """Why this kernel cannot run a rootless dockerd, or None when it can."""
    try:
        limit = int(path.read_text().strip())
    except (OSError, ValueError):
        if not Path("/proc/self/ns/user").exists():
            return "the kernel has no user namespaces (CONFIG_USER_NS is off)"
        return None
    if limit == 0:
        return f"user namespaces are disabled ({path} is 0)"
    return None


def tun_mode_ok(mode: int) -> bool:
    """Whether a node of that mode lets any user read and write it."""
    return mode & 0o666 == 0o666


def ensure_tun(say: Callable[[str], None], tun: Path = TUN) -> None:
    """Make /dev/net/tun 0666, as udev does on an ordinary host (see the docstring)."""
    try:
        st = tun.stat()
    except FileNotFoundError:
        raise RootlessSetupError(
            f"{tun} is missing: the kernel has no TUN/TAP driver, which rootlesskit needs"
        ) from None
    if not stat.S_ISCHR(st.st_mode):
        raise RootlessSetupError(f"{tun} is not a character device")
    if tun_mode_ok(st.st_mode):
        return
    if os.geteuid() != 0:
        raise RootlessSetupError(
            f"{tun} is {stat.S_IMODE(st.st_mode):04o}; a rootless dockerd needs 0666 "
            "(what udev sets): run `sudo scripts/test-engine up` or chmod it yourself"
        )
    tun.chmod(0o666)
    say(f"{tun} was {stat.S_IMODE(st.st_mode):04o}; made it 0666 as udev does (rootless DinD)")


def ensure_image(docker: str, say: Callable[[str], None]) -> str:
    """Build the rootless DinD image if its inputs changed; its tag."""
    images.ensure_image(images.dind_rootless_spec(), docker, say)
    return images.ROOTLESS_DIND_IMAGE
