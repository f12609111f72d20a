#!/usr/bin/python3 -IS
"""OCI runtime wrapper: drop CAP_SYS_RESOURCE, then exec the real `runc`.

TEST-ENVIRONMENT WORKAROUND, not part of dockmoat. Some CI kernels/sandboxes run
dockerd with a capability bounding set that lacks CAP_SYS_RESOURCE, while Docker
20.10 asks runc for *every* capability on `--privileged`; runc then fails with
"unable to apply caps: operation not permitted". `scripts/test-engine up`
registers this file as the engine's default runtime only when it detects that
failure. It must stay self-contained (stdlib only) and fast: it sits in the path
of every container start, so it runs with `-IS` and only parses JSON when the
capability is actually mentioned.
"""

from __future__ import annotations

import json
import os
import sys

DROPPED = "CAP_SYS_RESOURCE"

# runc's global options that take a value; needed to find the subcommand.
_GLOBAL_VALUED = frozenset({"--root", "--log", "--log-format", "--criu", "--rootless"})
_FALLBACK_RUNC = ("/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc")


def subcommand(argv: list[str]) -> tuple[str | None, int]:
    """The runc subcommand in argv (without argv[0]) and its index; (None, -1) if none."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg.startswith("-"):
            if arg in _GLOBAL_VALUED:
                i += 1  # skip the option's value
            i += 1
            continue
        return arg, i
    return None, -1


def option_value(args: list[str], names: tuple[str, ...]) -> str | None:
    """The value of the last `--name VALUE` / `--name=VALUE` / `-n VALUE` in args."""
    found: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
                i += 1
                break
            if arg.startswith(name + "="):
                found = arg[len(name) + 1 :]
                break
        i += 1
    return found


def strip_capability(caps: object) -> bool:
    """Remove DROPPED from every list of an OCI `capabilities` object; True if changed."""
    if not isinstance(caps, dict):
        return False
    changed = False
    for key, value in caps.items():
        if isinstance(value, list) and DROPPED in value:
            caps[key] = [c for c in value if c != DROPPED]
            changed = True
    return changed


def edit_json_file(path: str, in_process: bool) -> bool:
    """Drop the capability from a bundle config.json (in_process=False) or a process.json."""
    with open(path, "rb") as f:
        raw = f.read()
    if DROPPED.encode() not in raw:
        return False  # the common case: no JSON parsing at all
    doc = json.loads(raw)
    process = doc if in_process else doc.get("process")
    if not isinstance(process, dict) or not strip_capability(process.get("capabilities")):
        return False
    tmp = f"{path}.dockmoat-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, path)  # atomic: runc never reads a half-written file
    return True


def find_runc() -> str:
    """The real runc: first on PATH, else the usual system locations."""
    for d in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(d or ".", "runc")
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    for candidate in _FALLBACK_RUNC:
        if os.access(candidate, os.X_OK):
            return candidate
    return "runc"


def main(argv: list[str]) -> None:
    args = argv[1:]
    cmd, at = subcommand(args)
    try:
        if cmd in ("create", "run"):
            bundle = option_value(args[at + 1 :], ("--bundle", "-b")) or os.getcwd()
            edit_json_file(os.path.join(bundle, "config.json"), in_process=False)
        elif cmd == "exec":
            process = option_value(args[at + 1 :], ("--process", "-p"))
            if process:
                edit_json_file(process, in_process=True)
    except (OSError, ValueError) as exc:
        # Leave the spec as it is and let runc report what it makes of it.
        print(f"dockmoat-test runtime wrapper: could not edit spec: {exc}", file=sys.stderr)
    runc = find_runc()
    os.execv(runc, [runc, *args])


if __name__ == "__main__":
    main(sys.argv)
