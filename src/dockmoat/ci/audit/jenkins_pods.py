"""Kubernetes pods in Jenkinsfiles: `podTemplate(yaml: ...)`, `agent { kubernetes { yaml
... } }`, `containerTemplate(...)` and `hostPathVolume(...)`.

The pod YAML is read at its place in the file, so findings carry the Jenkinsfile's lines.
`yamlFile 'pod.yaml'` names another file, which is audited when given on its own.
"""

from __future__ import annotations

from collections.abc import Iterator

from dockmoat.ci.audit import rules, yamlsrc
from dockmoat.ci.audit.findings import Hit
from dockmoat.ci.audit.groovy import Token
from dockmoat.ci.audit.kubernetes import pod_hits
from dockmoat.ci.audit.model import Container, Located
from dockmoat.ci.audit.mounts import Mount, socket_exposure
from dockmoat.errors import ConfigError


def pod_yaml_hits(text: Token) -> Iterator[Hit]:
    """Findings in a pod YAML string literal, on the Jenkinsfile's own lines."""
    label = f"pod YAML (line {text.line})"
    try:
        docs = yamlsrc.load_all("\n" * (text.line - 1) + text.text)
    except ConfigError as error:
        yield Hit(rules.UNREADABLE, text.line, f"{label} not audited: {error}")
        return
    for doc in docs:
        root = yamlsrc.mapping(doc)
        spec = yamlsrc.mapping(root.get("spec")) if root is not None else None
        if spec is not None:
            yield from pod_hits(spec, label, yamlsrc.key_line(root, "spec", text.line))


def named_args(tokens: list[Token], start: int) -> dict[str, Token]:
    """`name: value` pairs of the call whose `(` is at `start`, at its own depth."""
    args: dict[str, Token] = {}
    depth, i = 0, start
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "punct" and token.text in "([{":
            depth += 1
        elif token.kind == "punct" and token.text in ")]}":
            depth -= 1
            if depth == 0:
                break
        elif (
            depth == 1
            and token.kind == "ident"
            and i + 2 < len(tokens)
            and tokens[i + 1].text == ":"
            and tokens[i + 1].kind == "punct"
        ):
            args[token.text] = tokens[i + 2]
        i += 1
    return args


def container_template(tokens: list[Token], start: int) -> Container:
    """`containerTemplate(name: 'dind', image: '...', privileged: true, ...)`."""
    args = named_args(tokens, start + 1)
    name = args.get("name")
    image = args.get("image")
    privileged = args.get("privileged")
    command = " ".join(a.text for k, a in args.items() if k in ("command", "args"))
    return Container(
        label=f"containerTemplate {name.text if name else '?'!r}",
        line=tokens[start].line,
        image=Located(image.text, image.line) if image and image.kind == "string" else None,
        command=command.split(),
        privileged_line=privileged.line if privileged and privileged.text == "true" else None,
        limits={"memory", "cpus", "pids"}
        if any(k in args for k in ("resourceLimitMemory", "resourceLimitCpu"))
        else {"pids"},
    )


def host_path_volume(tokens: list[Token], start: int) -> Iterator[Hit]:
    """`hostPathVolume(hostPath: '/var/run/docker.sock', mountPath: '...')`."""
    args = named_args(tokens, start + 1)
    source = args.get("hostPath")
    if source is None or source.kind != "string":
        return
    target = args.get("mountPath")
    mount = Mount(source.text, target.text if target else "", False, source.line)
    exposure = socket_exposure(mount)
    if exposure:
        yield Hit(rules.SOCKET_MOUNT, source.line, f"hostPathVolume (every container): {exposure}")
