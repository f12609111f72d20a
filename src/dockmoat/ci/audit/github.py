"""GitHub Actions workflows: job containers, `services:`, env at every level, `run:` steps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.checks import check_containers
from dockmoat.ci.audit.dockerargs import RunArgs, parse_run_options, split_words
from dockmoat.ci.audit.findings import Hit
from dockmoat.ci.audit.github_actions import action_input_hits, on_arc_dind
from dockmoat.ci.audit.model import Container, Located
from dockmoat.ci.audit.mounts import Mount, parse_short
from dockmoat.ci.audit.runnerctx import AuditContext
from dockmoat.ci.audit.scripts import check_script, script_lines


def looks_like(doc: Any) -> bool:
    root = y.mapping(doc)
    return (
        root is not None
        and y.mapping(root.get("jobs")) is not None
        and ("on" in root or True in root)
    )


def _env(node: Any, key: str) -> dict[str, Located]:
    line = y.key_line(node, key, 1)
    return {k: Located(v, n) for k, (v, n) in y.env_vars(node.get(key), line).items()}


def analyse(doc: Any, context: AuditContext | None = None) -> Iterator[Hit]:
    root = y.mapping(doc)
    jobs = y.mapping(root.get("jobs")) if root is not None else None
    if root is None or jobs is None:
        return
    workflow_env = _env(root, "env")
    # The workflow's env on its own: Docker endpoints in it are judged once, here.
    yield from check_containers(
        [
            Container(
                label="workflow env", line=1, env=workflow_env, job=True, image_entrypoint=False
            )
        ]
    )
    for job_id, job in jobs.items():
        job_map = y.mapping(job)
        if job_map is not None:
            hits = _job(str(job_id), job_map, y.key_line(jobs, job_id, 1), workflow_env)
            scale_set = context.arc_dind_set(_runs_on(job_map)) if context else None
            yield from (on_arc_dind(hit, scale_set) for hit in hits) if scale_set else hits


def _runs_on(job: Any) -> list[str]:
    value = job.get("runs-on")
    seq = y.sequence(value)
    if seq is not None:
        return [str(v) for v in seq]
    as_map = y.mapping(value)
    if as_map is not None:  # `runs-on: {group: ..., labels: [...]}`
        labels = as_map.get("labels")
        return [str(v) for v in labels] if isinstance(labels, list) else [str(labels)]
    text = y.scalar_str(value)
    return [text] if text else []


def _job(job_id: str, job: Any, line: int, workflow_env: dict[str, Located]) -> Iterator[Hit]:
    label = f"job {job_id!r}"
    job_env = _env(job, "env")
    containers: list[Container] = []
    container_env: dict[str, Located] = {}
    spec = job.get("container")
    spec_map = y.mapping(spec)
    if spec_map is not None:
        container_env = _env(spec_map, "env")
        containers.append(
            _container(
                f"{label} container",
                None,
                spec_map,
                y.key_line(job, "container", line),
                {**workflow_env, **job_env},
                job=True,
            )
        )
    elif y.scalar_str(spec):
        containers.append(
            Container(
                label=f"{label} container",
                line=y.key_line(job, "container", line),
                image=Located(str(spec), y.value_line(job, "container", line)),
                env=job_env,
                inherited_env=workflow_env,
                job=True,
                image_entrypoint=False,
            )
        )
    else:
        # No container: the steps run on the runner itself, with the job's environment.
        containers.append(
            Container(
                label=label,
                line=line,
                env=job_env,
                inherited_env=workflow_env,
                job=True,
                image_entrypoint=False,
            )
        )
    services = y.mapping(job.get("services"))
    if services is not None:
        for name, svc in services.items():
            svc_map = y.mapping(svc)
            if svc_map is not None:
                containers.append(
                    _container(
                        f"{label} service {str(name)!r}",
                        str(name),
                        svc_map,
                        y.key_line(services, name, line),
                        {},
                        job=False,
                    )
                )
    yield from check_containers(containers)
    steps = y.sequence(job.get("steps"))
    if steps is None:
        return
    for i, step in enumerate(steps):
        step_map = y.mapping(step)
        if step_map is None:
            continue
        step_line = y.item_line(steps, i, line)
        yield from action_input_hits(step_map, step_line, f"{label} step {i + 1}")
        if "run" not in step_map:
            continue
        lines = script_lines(step_map.get("run"), y.value_line(step_map, "run", step_line))
        scopes = [_env(step_map, "env"), container_env, job_env, workflow_env]
        yield from check_script(lines, f"{label} step {i + 1}", scopes)


def _container(
    label: str,
    hostname: str | None,
    spec: Any,
    line: int,
    inherited: dict[str, Located],
    *,
    job: bool,
) -> Container:
    options_text = y.scalar_str(spec.get("options")) or ""
    options_line = y.value_line(spec, "options", line)
    options: RunArgs = parse_run_options(
        split_words(options_text), options_line, expect_image=False
    )
    image = y.scalar_str(spec.get("image"))
    mounts: list[Mount] = list(options.mounts)
    volumes = y.sequence(spec.get("volumes"))
    if volumes is not None:
        base = y.key_line(spec, "volumes", line)
        for i, item in enumerate(volumes):
            if isinstance(item, str):
                mounts.append(parse_short(item, y.item_line(volumes, i, base)))
    env = _env(spec, "env")
    for key, value in options.env.items():
        if value is not None:
            env.setdefault(key, Located(value, options_line))
    limits = {n for n, ok in (("memory", options.memory), ("cpus", options.cpus),
                              ("pids", options.pids)) if ok}  # fmt: skip
    return Container(
        label=label,
        line=line,
        hostname=hostname,
        image=Located(image, y.value_line(spec, "image", line)) if image else None,
        privileged_line=options_line if options.privileged else None,
        runtime=options.runtime,
        env=env,
        inherited_env=inherited,
        mounts=mounts,
        network=Located(options.network, options_line) if options.network else None,
        pid=Located(options.pid, options_line) if options.pid else None,
        ipc=Located(options.ipc, options_line) if options.ipc else None,
        ports=[Located(p, options_line) for p in options.ports] + _ports(spec, line),
        job=job,
        image_entrypoint=not job,
        limits=limits,
        health=options.health,
    )


def _ports(spec: Any, line: int) -> list[Located]:
    seq = y.sequence(spec.get("ports"))
    if seq is None:
        return []
    base = y.key_line(spec, "ports", line)
    return [
        Located(text, y.item_line(seq, i, base))
        for i, item in enumerate(seq)
        if (text := y.scalar_str(item)) is not None
    ]
