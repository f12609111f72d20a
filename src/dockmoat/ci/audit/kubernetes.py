"""Kubernetes manifests and Actions Runner Controller (ARC) configs that run CI jobs.

- Manifests (`apiVersion` + `kind`): the pod template of a Pod, Deployment,
  StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, and of ARC's RunnerDeployment,
  RunnerSet, RunnerReplicaSet, Runner and AutoscalingRunnerSet.
- gha-runner-scale-set values files (`githubConfigUrl`, `containerMode`, `template`):
  the runner pod template, and `containerMode.type: dind`, which adds a privileged
  DinD sidecar that every job drives.
- The legacy ARC runner spec's `dockerdWithinRunnerContainer: true` (a privileged
  runner container) and `dockerEnabled` (a privileged docker sidecar, the default).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dockmoat.ci.audit import rules
from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.checks import check_containers
from dockmoat.ci.audit.findings import Hit, Severity
from dockmoat.ci.audit.podspec import limit_hits, pod_containers
from dockmoat.ci.audit.runnerctx import ArcScaleSet

_LEGACY_RUNNER_KINDS = frozenset({"RunnerDeployment", "RunnerSet", "RunnerReplicaSet", "Runner"})


def looks_like_manifest(doc: Any) -> bool:
    root = y.mapping(doc)
    return root is not None and "apiVersion" in root and "kind" in root


def looks_like_arc_values(doc: Any) -> bool:
    root = y.mapping(doc)
    if root is None:
        return False
    return "githubConfigUrl" in root or ("containerMode" in root and "template" in root)


def scale_set(doc: Any, file: str) -> ArcScaleSet | None:
    """The scale set an ARC values file defines, when it names it (`runnerScaleSetName`)."""
    root = y.mapping(doc)
    if root is None or not looks_like_arc_values(root):
        return None
    name = y.scalar_str(root.get("runnerScaleSetName"))
    if not name:
        return None
    mode = y.mapping(root.get("containerMode"))
    mode_type = (y.scalar_str(mode.get("type")) if mode is not None else None) or ""
    line = y.key_line(root, "runnerScaleSetName", 1)
    return ArcScaleSet(file=file, line=line, name=name, mode=mode_type)


def analyse(doc: Any) -> Iterator[Hit]:
    root = y.mapping(doc)
    if root is None:
        return
    if looks_like_manifest(root):
        yield from _manifest(root)
    else:
        yield from _arc_values(root)


def pod_hits(spec: Any, label: str, line: int) -> Iterator[Hit]:
    containers = pod_containers(spec, label, line)
    yield from check_containers(containers)
    yield from limit_hits(containers)


def _manifest(root: Any) -> Iterator[Hit]:
    kind = y.scalar_str(root.get("kind")) or "?"
    metadata = y.mapping(root.get("metadata"))
    name = y.scalar_str(metadata.get("name")) if metadata is not None else None
    label = f"{kind} {name!r}" if name else kind
    spec = y.mapping(root.get("spec"))
    if spec is None:
        return
    if kind == "Pod":
        yield from pod_hits(spec, label, y.key_line(root, "spec", 1))
        return
    if kind == "CronJob":
        job = y.mapping(spec.get("jobTemplate"))
        spec = y.mapping(job.get("spec")) if job is not None else None
        if spec is None:
            return
    template = y.mapping(spec.get("template"))
    pod = y.mapping(template.get("spec")) if template is not None else None
    if pod is None:
        return
    if kind in _LEGACY_RUNNER_KINDS:
        yield from _legacy_runner(pod, label, y.key_line(template, "spec", 1))
    yield from pod_hits(pod, label, y.key_line(template, "spec", 1))


def _legacy_runner(spec: Any, label: str, line: int) -> Iterator[Hit]:
    if spec.get("dockerdWithinRunnerContainer") is True:
        yield Hit(
            rules.RUNNER_PRIVILEGED,
            y.key_line(spec, "dockerdWithinRunnerContainer", line),
            f"{label}: dockerdWithinRunnerContainer runs every job in a privileged "
            "runner container with its own daemon",
        )
    elif spec.get("dockerEnabled") is not False:
        where = y.key_line(spec, "dockerEnabled", line)
        yield Hit(
            rules.RUNNER_PRIVILEGED,
            where,
            f"{label}: dockerEnabled (the default) gives every job a privileged docker "
            "sidecar to drive",
            severity=Severity.MEDIUM,
        )


def _arc_values(root: Any) -> Iterator[Hit]:
    mode = y.mapping(root.get("containerMode"))
    mode_type = y.scalar_str(mode.get("type")) if mode is not None else None
    if mode is not None and mode_type == "dind":
        yield Hit(
            rules.RUNNER_PRIVILEGED,
            y.value_line(mode, "type", y.key_line(root, "containerMode", 1)),
            "containerMode dind: every job drives a privileged DinD sidecar (the "
            "accepted cost of DinD, as `dind-privileged`; whoever can run a workflow "
            "on this scale set is root on the node)",
            severity=Severity.MEDIUM,
        )
    template = y.mapping(root.get("template"))
    if template is not None and y.mapping(template.get("spec")) is not None:
        yield from pod_hits(template["spec"], "runner pod", y.key_line(template, "spec", 1))
