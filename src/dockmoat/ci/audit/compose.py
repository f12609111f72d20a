"""Compose files: each service is a container; scripts in `command` are scanned too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.checks import check_containers, check_shell
from dockmoat.ci.audit.dockerargs import (
    ShellFacts,
    join_continuations,
    scan_shell_line,
    split_words,
)
from dockmoat.ci.audit.findings import Hit
from dockmoat.ci.audit.model import Container, Located
from dockmoat.ci.audit.mounts import Mount, parse_short


def looks_like(doc: Any) -> bool:
    services = y.mapping(doc.get("services")) if y.mapping(doc) is not None else None
    if services is None:
        return False
    return any(
        isinstance(svc, dict) and ("image" in svc or "build" in svc) for svc in services.values()
    )


def analyse(doc: Any) -> Iterator[Hit]:
    services = y.mapping(doc.get("services"))
    if services is None:
        return
    containers: list[Container] = []
    scripts: list[tuple[Container, list[tuple[int, str]]]] = []
    for name, svc in services.items():
        svc_map = y.mapping(svc)
        if svc_map is None:
            continue
        line = y.key_line(services, name, 1)
        container, script = _service(str(name), svc_map, line)
        containers.append(container)
        scripts.append((container, script))
    shell: list[tuple[Container, int, ShellFacts]] = []
    for container, lines in scripts:
        for number, text in join_continuations(lines):
            shell.append((container, number, scan_shell_line(text, number)))
    built = frozenset(tag for _, _, facts in shell for tag in facts.built)
    yield from check_containers(containers, built)
    for container, number, facts in shell:
        yield from check_shell(facts, number, container.label, [container.env])


def _words(node: Any, line: int) -> tuple[list[str], list[int], list[tuple[int, str]]]:
    """Words of a command/entrypoint, each word's line, and any shell script it carries."""
    seq = y.sequence(node)
    if seq is not None:
        words = [str(w) for w in seq]
        lines = [y.item_line(seq, i, line) for i in range(len(words))]
        script: list[tuple[int, str]] = []
        for i, word in enumerate(words[:-1]):
            if word == "-c":
                script = y.text_lines(seq[i + 1], y.item_line(seq, i + 1, line))
        return words, lines, script
    text = y.scalar_str(node)
    if text is None:
        return [], [], []
    words = split_words(text)
    return words, [line] * len(words), y.text_lines(node, line)


def _service(name: str, svc: Any, line: int) -> tuple[Container, list[tuple[int, str]]]:
    entry, entry_lines, entry_script = _words(
        svc.get("entrypoint"), y.value_line(svc, "entrypoint", line)
    )
    cmd, cmd_lines, cmd_script = _words(svc.get("command"), y.value_line(svc, "command", line))
    image = y.scalar_str(svc.get("image"))
    env = {
        k: Located(v, n)
        for k, (v, n) in y.env_vars(
            svc.get("environment"), y.key_line(svc, "environment", line)
        ).items()
    }
    privileged = svc.get("privileged") is True or str(svc.get("privileged")).lower() == "true"
    container = Container(
        label=f"service {name!r}",
        line=line,
        hostname=name,
        image=Located(image, y.value_line(svc, "image", line)) if image else None,
        command=entry + cmd,
        command_word_lines=entry_lines + cmd_lines,
        command_line=y.key_line(svc, "command", y.key_line(svc, "entrypoint", line)),
        privileged_line=y.key_line(svc, "privileged", line) if privileged else None,
        runtime=y.scalar_str(svc.get("runtime")),
        env=env,
        mounts=list(_mounts(svc.get("volumes"), y.key_line(svc, "volumes", line))),
        network=_located(svc, "network_mode", line),
        pid=_located(svc, "pid", line),
        ipc=_located(svc, "ipc", line),
        ports=list(_ports(svc.get("ports"), y.key_line(svc, "ports", line))),
        builds="build" in svc,
        limits=_limits(svc),
        health=_has_health(svc.get("healthcheck")),
        depends_on=_depends_on(svc.get("depends_on"), y.key_line(svc, "depends_on", line)),
    )
    # The script a shell wrapper runs (`sh -c "..."`), else the command line itself.
    script = cmd_script or entry_script
    return container, script


def _located(svc: Any, key: str, line: int) -> Located | None:
    value = y.scalar_str(svc.get(key))
    return Located(value, y.key_line(svc, key, line)) if value is not None else None


def _ports(node: Any, line: int) -> Iterator[Located]:
    """Published ports as `[IP:]HOST:CONTAINER` text (long syntax is rewritten so)."""
    for item, item_line in y.items(node, line):
        as_map = y.mapping(item)
        if as_map is not None:
            target = y.scalar_str(as_map.get("target"))
            if target is None:
                continue
            host_ip = y.scalar_str(as_map.get("host_ip")) or ""
            published = y.scalar_str(as_map.get("published")) or ""
            spec = ":".join(p for p in (host_ip, published, target) if p)
            yield Located(spec, item_line)
        elif (text := y.scalar_str(item)) is not None:
            yield Located(text, item_line)


def _mounts(node: Any, line: int) -> Iterator[Mount]:
    for item, item_line in y.items(node, line):
        as_map = y.mapping(item)
        if as_map is not None:
            source = y.scalar_str(as_map.get("source"))
            yield Mount(
                source=source,
                target=y.scalar_str(as_map.get("target")) or "",
                read_only=as_map.get("read_only") is True,
                line=item_line,
            )
        elif isinstance(item, str):
            yield parse_short(item, item_line)


def _limits(svc: Any) -> set[str]:
    found: set[str] = set()
    if svc.get("mem_limit") is not None:
        found.add("memory")
    if any(svc.get(k) is not None for k in ("cpus", "cpu_quota", "cpuset")):
        found.add("cpus")
    if svc.get("pids_limit") is not None:
        found.add("pids")
    deploy = y.mapping(svc.get("deploy"))
    resources = y.mapping(deploy.get("resources")) if deploy is not None else None
    limits = y.mapping(resources.get("limits")) if resources is not None else None
    if limits is not None:
        for key, name in (("memory", "memory"), ("cpus", "cpus"), ("pids", "pids")):
            if limits.get(key) is not None:
                found.add(name)
    return found


def _has_health(node: Any) -> bool:
    health = y.mapping(node)
    if health is None:
        return False
    if health.get("disable") is True:
        return False
    test = health.get("test")
    seq = y.sequence(test)
    if seq is not None and len(seq) > 0 and str(seq[0]).upper() == "NONE":
        return False
    return test is not None


def _depends_on(node: Any, line: int) -> dict[str, Located]:
    out: dict[str, Located] = {}
    seq = y.sequence(node)
    if seq is not None:
        for i, item in enumerate(seq):
            out[str(item)] = Located("", y.item_line(seq, i, line))
        return out
    as_map = y.mapping(node)
    if as_map is not None:
        for target, spec in as_map.items():
            spec_map = y.mapping(spec)
            condition = y.scalar_str(spec_map.get("condition")) if spec_map is not None else None
            where = (
                y.key_line(spec_map, "condition", line)
                if spec_map is not None and condition
                else y.key_line(as_map, target, line)
            )
            out[str(target)] = Located(condition or "", where)
    return out
