"""`dockmoat generate`: complete, commented CI configurations with Docker wired in safely.

Entry points:
- `generate(options) -> str`: pure; the text of one configuration file.
- `structure_problems(system, text) -> list[str]`: does the text parse as its format
  (YAML; for a Jenkinsfile, balanced braces and the declarative skeleton)?
"""

from __future__ import annotations

from dockmoat.ci.audit import yamlsrc
from dockmoat.ci.audit.groovy import structure_problems as jenkins_problems
from dockmoat.ci.generate import compose, github, gitlab, jenkins
from dockmoat.ci.generate.options import Mode, Options, System
from dockmoat.errors import ConfigError

__all__ = ["Mode", "Options", "System", "default_filename", "generate", "structure_problems"]

_RENDER = {
    System.COMPOSE: compose.render,
    System.GITLAB: gitlab.render,
    System.GITHUB: github.render,
    System.JENKINS: jenkins.render,
}
_FILENAMES = {
    System.COMPOSE: "compose.yml",
    System.GITLAB: ".gitlab-ci.yml",
    System.GITHUB: ".github/workflows/build.yml",
    System.JENKINS: "Jenkinsfile",
}


def generate(options: Options) -> str:
    return _RENDER[options.system](options)


def default_filename(system: System) -> str:
    """The name the CI system looks for (and `dockmoat audit` recognises)."""
    return _FILENAMES[system]


def structure_problems(system: System, text: str) -> list[str]:
    if system is System.JENKINS:
        return jenkins_problems(text)
    try:
        doc = yamlsrc.load(text)
    except ConfigError as error:
        return [str(error)]
    return [] if yamlsrc.mapping(doc) is not None else ["top level is not a mapping"]
