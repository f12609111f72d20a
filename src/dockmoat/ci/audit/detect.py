"""Which kind of CI file a path is: from its name first, then from its content."""

from __future__ import annotations

from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from dockmoat.ci.audit import compose, github, gitlab, gitlab_runner, jenkins, kubernetes


class Kind(StrEnum):
    COMPOSE = "compose"
    GITLAB = "gitlab"
    GITHUB = "github"
    JENKINS = "jenkins"
    GITLAB_RUNNER = "gitlab-runner"  # GitLab Runner's config.toml
    KUBERNETES = "kubernetes"  # manifests and Actions Runner Controller values


def kind_from_name(path: str) -> Kind | None:
    posix = PurePosixPath(path.replace("\\", "/"))
    name = posix.name.lower()
    if name.startswith("jenkinsfile") or name.endswith((".jenkinsfile", ".groovy")):
        return Kind.JENKINS
    if name == "config.toml":
        return Kind.GITLAB_RUNNER
    if name == ".gitlab-ci.yml" or name.endswith((".gitlab-ci.yml", ".gitlab-ci.yaml")):
        return Kind.GITLAB
    parts = [p.lower() for p in posix.parts]
    if ".github" in parts and "workflows" in parts and name.endswith((".yml", ".yaml")):
        return Kind.GITHUB
    if name.endswith((".yml", ".yaml")) and (
        name.startswith(("docker-compose", "compose")) or ".compose." in name
    ):
        return Kind.COMPOSE
    return None


def kind_from_yaml(doc: Any) -> Kind | None:
    # Order matters: a workflow has `jobs` + `on`; a compose file has `services` of
    # mappings with `image`/`build`; GitLab is what remains with jobs carrying `script`.
    if github.looks_like(doc):
        return Kind.GITHUB
    if compose.looks_like(doc):
        return Kind.COMPOSE
    if kubernetes.looks_like_manifest(doc) or kubernetes.looks_like_arc_values(doc):
        return Kind.KUBERNETES
    if gitlab.looks_like(doc):
        return Kind.GITLAB
    return None


def looks_like_jenkins(text: str) -> bool:
    return jenkins.looks_like(text)


def looks_like_runner_config(text: str) -> bool:
    return gitlab_runner.looks_like(text)
