"""`.gitlab-ci.yml`: job images, `services:` (DinD), variables and scripts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.checks import check_containers
from dockmoat.ci.audit.dockerargs import split_words
from dockmoat.ci.audit.findings import Hit
from dockmoat.ci.audit.gitlab_dind import dind_service_hit
from dockmoat.ci.audit.gitlab_extends import extended_vars
from dockmoat.ci.audit.gitlab_refs import resolve_references
from dockmoat.ci.audit.images import Role, parse_image
from dockmoat.ci.audit.model import Container, Located
from dockmoat.ci.audit.runnerctx import AuditContext
from dockmoat.ci.audit.scripts import built_images, check_script, script_lines

_GLOBAL_KEYWORDS = frozenset(
    {"image", "services", "variables", "stages", "before_script", "after_script", "cache",
     "include", "workflow", "default", "types", "spec"}
)  # fmt: skip
_SCRIPT_KEYS = ("before_script", "script", "after_script")
_JOB_KEYS = frozenset({"script", "stage", "extends", "trigger", "image", "services"})


def looks_like(doc: Any) -> bool:
    root = y.mapping(doc)
    if root is None:
        return False
    if any(k in root for k in ("stages", "before_script", "after_script", "workflow", "include")):
        return True
    return any(
        isinstance(v, dict) and _JOB_KEYS & set(v) and k not in _GLOBAL_KEYWORDS
        for k, v in root.items()
    )


def _vars(node: Any, line: int) -> dict[str, Located]:
    return {k: Located(v, n) for k, (v, n) in y.env_vars(node, line).items()}


def analyse(doc: Any, context: AuditContext | None = None) -> Iterator[Hit]:
    root = y.mapping(doc)
    if root is None:
        return
    resolve_references(root)
    global_vars = _vars(root.get("variables"), y.key_line(root, "variables", 1))
    containers: list[Container] = []
    scripts: list[tuple[list[tuple[int, str]], str, list[dict[str, Located]]]] = []

    # (label, node, own variables, variables from `extends`)
    scopes: list[tuple[str, Any, dict[str, Located], dict[str, Located]]] = [
        ("global", root, {}, {})
    ]
    default = y.mapping(root.get("default"))
    if default is not None:
        scopes.append(("default", default, {}, {}))
    for name, job in root.items():
        job_map = y.mapping(job)
        if name in _GLOBAL_KEYWORDS or job_map is None:
            continue
        scopes.append(
            (
                f"job {name!r}",
                job_map,
                _vars(job_map.get("variables"), y.key_line(job_map, "variables", 1)),
                extended_vars(root, job_map),
            )
        )

    for label, node, own_vars, extended in scopes:
        line = y.node_line(node, 1)
        inherited = {**global_vars, **extended} if label != "global" else {}
        env = own_vars if label != "global" else global_vars
        image = _image(node, line)
        values = {k: v.value for k, v in {**inherited, **env}.items()}
        containers.append(
            Container(
                label=f"{label} image" if label != "global" else "image",
                line=line,
                image=image,
                env=env,
                inherited_env=inherited,
                job=True,
                image_vars=values,
            )
        )
        services = list(_services(node, label, {**inherited, **env}))
        containers.extend(services)
        for key in _SCRIPT_KEYS:
            if key in node:
                lines = script_lines(node.get(key), y.value_line(node, key, line))
                scripts.append((lines, f"{label} {key}", [env, inherited]))

    built = frozenset(tag for lines, _, _ in scripts for tag in built_images(lines))
    yield from check_containers(containers, built)
    for container in containers:
        if container.role is Role.DIND and "service" in container.label:
            yield dind_service_hit(container, context)
    for lines, label, env_scopes in scripts:
        yield from check_script(lines, label, env_scopes)


def _image(node: Any, line: int) -> Located | None:
    value = node.get("image")
    as_map = y.mapping(value)
    if as_map is not None:
        name = y.scalar_str(as_map.get("name"))
        return Located(name, y.value_line(as_map, "name", line)) if name else None
    text = y.scalar_str(value)
    return Located(text, y.value_line(node, "image", line)) if text else None


def _services(node: Any, label: str, job_env: dict[str, Located]) -> Iterator[Container]:
    seq = y.sequence(node.get("services"))
    if seq is None:
        return
    base = y.key_line(node, "services", 1)
    for i, item in enumerate(seq):
        line = y.item_line(seq, i, base)
        as_map = y.mapping(item)
        if as_map is not None:
            name = y.scalar_str(as_map.get("name"))
            image = Located(name, y.value_line(as_map, "name", line)) if name else None
            alias = y.scalar_str(as_map.get("alias"))
            words = _word_list(as_map.get("entrypoint")) + _word_list(as_map.get("command"))
            own = _vars(as_map.get("variables"), y.key_line(as_map, "variables", line))
            command_line = y.key_line(as_map, "command", y.key_line(as_map, "entrypoint", line))
        else:
            name = y.scalar_str(item)
            image = Located(name, line) if name else None
            alias, words, own, command_line = None, [], {}, line
        yield Container(
            label=f"{label} service {name!r}",
            line=line,
            hostname=(alias or _default_alias(name)) if name else alias,
            image=image,
            command=words,
            command_line=command_line,
            env=own,
            inherited_env=job_env,
            image_vars={k: v.value for k, v in {**job_env, **own}.items()},
            # Privileged mode, limits and health checks of services live in the runner's
            # config.toml, not in this file: they are not judged here.
        )


def _word_list(node: Any) -> list[str]:
    seq = y.sequence(node)
    if seq is not None:
        return [str(w) for w in seq]
    text = y.scalar_str(node)
    return split_words(text) if text else []


def _default_alias(image: str) -> str:
    """GitLab's default host name for a service: the image path without its tag."""
    return parse_image(image).repository.rsplit("/", 1)[-1]
