"""`dockmoat generate kubernetes|arc|gitlab-k8s|systemd`: deployment files (docs/deploy.md).

- kubernetes: the guard as a DaemonSet; each node's runner pods get a guarded socket
  (hostPath /run/dockmoat/guarded/docker.sock) instead of the node's Docker socket;
  plus a PodTemplate showing how a runner pod mounts it.
- arc: values for GitHub's Actions Runner Controller `gha-runner-scale-set` chart, a
  dockmoat DinD sidecar (native sidecar: starts first, ready on /_ping over mutual
  TLS) next to the runner; only the sidecar is privileged.
- gitlab-k8s: a GitLab Runner `config.toml` for the Kubernetes executor with the
  dockmoat DinD image as the only allowed service; only service containers are
  privileged.
- systemd: units for `dockmoat serve` and `dockmoat dind pool` on a host.

Pure functions of `DeployOptions`; the Kubernetes documents are built as data and
dumped, so they are well-formed YAML by construction (tests validate them against
the Kubernetes schemas offline).
"""

from __future__ import annotations

import io
import re
import shlex
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from dockmoat import __version__
from dockmoat.ci.generate.options import image_reference


class Target(StrEnum):
    KUBERNETES = "kubernetes"
    ARC = "arc"
    GITLAB_K8S = "gitlab-k8s"
    SYSTEMD = "systemd"


DEFAULT_GUARD_IMAGE = f"dockmoat/dockmoat:{__version__}"
DEFAULT_DIND_IMAGE = f"dockmoat/dind:{__version__}"
DEFAULT_ARC_RUNNER_IMAGE = "ghcr.io/actions/actions-runner:2.321.0"
DEFAULT_GITLAB_JOB_IMAGE = "docker:27.3.1-cli"
GUARD_UID = 10001
#: The node folder of serve's job-open socket and of the job sockets it makes.
JOB_OPEN_DIR = "/run/dockmoat/open"
#: The group owning the guarded socket; runner pods add it to their supplementalGroups.
DEFAULT_CLIENT_GID = 2375
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?[kmgKMG]?$")
_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$")


class DeployOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Target
    dockmoat_image: str = DEFAULT_GUARD_IMAGE
    dind_image: str = DEFAULT_DIND_IMAGE
    job_image: str = ""  # the runner / job image; default per target
    namespace: str = "dockmoat"
    profile: str = Field(default="baseline", pattern=r"^(baseline|restricted|permissive)$")
    docker_gid: int = Field(default=999, ge=1, le=2**31 - 1)
    client_gid: int = Field(default=DEFAULT_CLIENT_GID, ge=1, le=2**31 - 1)
    socket_dir: str = "/run/dockmoat/guarded"
    memory: str = "4g"
    cpus: float = Field(default=2.0, gt=0, le=1024)
    pids_limit: int = Field(default=4096, ge=64, le=4_194_304)
    wait_seconds: int = Field(default=60, ge=5, le=3600)
    ci_url: str = ""  # GitHub organisation/repository URL, GitLab instance URL
    prefix: str = "/opt/dockmoat"  # systemd: where `pip install` put dockmoat
    pool_size: int = Field(default=2, ge=1, le=256)
    unprivileged: bool = False  # systemd: serve as the dockmoat user, fully sandboxed
    # kubernetes: runner pods open their own job with their CI job's identity token
    # (serve --job-open-socket): (issuer, its JWKS document) each, and the audience.
    job_identities: tuple[tuple[str, str], ...] = ()
    job_identity_audience: str = ""

    @model_validator(mode="after")
    def _job_identity(self) -> DeployOptions:
        if bool(self.job_identities) != bool(self.job_identity_audience):
            raise ValueError("--job-identity and --job-identity-audience go together (kubernetes)")
        return self

    @field_validator("dockmoat_image", "dind_image")
    @classmethod
    def _image(cls, value: str) -> str:
        return image_reference(value)

    @field_validator("job_image")
    @classmethod
    def _job_image(cls, value: str) -> str:
        return image_reference(value) if value else value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"not a Kubernetes namespace name: {value!r}")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.match(value):
            raise ValueError(f"not a memory size like 4g or 512m: {value!r}")
        return value

    @field_validator("socket_dir", "prefix")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _PATH.match(value) or "/../" in value + "/":
            raise ValueError(f"not an absolute path: {value!r}")
        return value.rstrip("/") or "/"

    @field_validator("ci_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not _URL.match(value):
            raise ValueError(f"not an https:// URL: {value!r}")
        return value

    @property
    def k8s_memory(self) -> str:
        """Docker's 4g as Kubernetes' 4Gi."""
        unit = self.memory[-1].lower()
        number = self.memory[:-1] if unit.isalpha() else self.memory
        return number + {"k": "Ki", "m": "Mi", "g": "Gi"}.get(unit, "")

    @property
    def cpus_text(self) -> str:
        return f"{self.cpus:g}"

    @property
    def socket(self) -> str:
        return f"{self.socket_dir}/docker.sock"


def render(o: DeployOptions) -> str:
    return {
        Target.KUBERNETES: kubernetes,
        Target.ARC: arc,
        Target.GITLAB_K8S: gitlab_k8s,
        Target.SYSTEMD: systemd,
    }[o.target](o)


#: Plain scalars YAML 1.1 readers (Kubernetes' among them) take for something else.
_AMBIGUOUS = re.compile(
    r"(?i:y|n|yes|no|on|off|true|false|null|~|)|[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
    r"|0[xob][0-9a-fA-F_]+|[-+]?\.(inf|nan)|\d+(:\d+)+"
)


def _quoted(data: Any) -> Any:
    """Strings a YAML 1.1 reader would not read back as strings, double-quoted."""
    if isinstance(data, dict):
        return {key: _quoted(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_quoted(item) for item in data]
    if isinstance(data, str) and _AMBIGUOUS.fullmatch(data):
        return DoubleQuotedScalarString(data)
    return data


def _dump(*docs: Any) -> str:
    docs = tuple(_quoted(doc) for doc in docs)
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    out = io.StringIO()
    yaml.dump_all(docs, out) if len(docs) > 1 else yaml.dump(docs[0], out)
    return out.getvalue()


def _restricted_context(uid: int) -> dict[str, Any]:
    """What Pod Security's `restricted` level asks of a container."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _health(url: str, *extra: str) -> dict[str, Any]:
    return {"exec": {"command": ["python3", "-m", "dockmoat.deploy.health", url, *extra]}}


def kubernetes(o: DeployOptions) -> str:
    labels = {"app.kubernetes.io/name": "dockmoat", "app.kubernetes.io/component": "guard"}
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": o.namespace,
            # hostPath volumes (the Docker socket, the guarded socket's folder) are
            # beyond Pod Security's baseline level; nothing in this namespace is privileged.
            "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
        },
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "dockmoat-guard", "namespace": o.namespace},
        "automountServiceAccountToken": False,
    }
    serve = [
        "serve",
        "--listen", f"unix://{o.socket}",
        "--socket-group", str(o.client_gid),
        "--profile", o.profile,
        "--audit-log", "/var/log/dockmoat/audit.log",
        "--state-db", "/var/lib/dockmoat/state.db",
        "--bind-pins", "off",
    ]  # fmt: skip
    prepare = (
        f"install -d -o {GUARD_UID} -g {o.client_gid} -m 0750 /host/guarded && "
        f"install -d -o {GUARD_UID} -g {GUARD_UID} -m 0700 /host/state /host/log"
    )
    open_socket = f"{JOB_OPEN_DIR}/open.sock"
    if o.job_identities:
        serve += ["--job-open-socket", open_socket,
                  "--job-identity-audience", o.job_identity_audience]  # fmt: skip
        for index, (issuer, _jwks) in enumerate(o.job_identities):
            serve += ["--job-identity", f"{issuer}=/etc/dockmoat/jwks/{index}.json"]
        prepare += f" && install -d -o {GUARD_UID} -g {o.client_gid} -m 0750 /host/open"
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "dockmoat-guard", "namespace": o.namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "dockmoat-guard",
                    "automountServiceAccountToken": False,
                    # Only nodes whose runners use a Docker engine on the node.
                    "nodeSelector": {"dockmoat.io/docker-engine": "true"},
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        # The node's docker group (the raw socket) and the clients'
                        # group (owner of the guarded socket).
                        "supplementalGroups": [o.docker_gid, o.client_gid],
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [
                        {
                            # Root only to create and hand over three host folders.
                            "name": "prepare",
                            "image": o.dockmoat_image,
                            "command": ["sh", "-c", prepare],
                            "securityContext": {
                                "runAsUser": 0,
                                "runAsNonRoot": False,
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
                            },
                            "volumeMounts": [
                                {"name": "guarded", "mountPath": "/host/guarded"},
                                {"name": "state", "mountPath": "/host/state"},
                                {"name": "audit", "mountPath": "/host/log"},
                            ],
                            "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}},
                        }
                    ],
                    "containers": [
                        {
                            "name": "guard",
                            "image": o.dockmoat_image,
                            "args": serve,
                            "securityContext": _restricted_context(GUARD_UID),
                            "volumeMounts": [
                                {"name": "docker-sock", "mountPath": "/var/run/docker.sock"},
                                {"name": "guarded", "mountPath": o.socket_dir},
                                {"name": "state", "mountPath": "/var/lib/dockmoat"},
                                {"name": "audit", "mountPath": "/var/log/dockmoat"},
                                {"name": "run", "mountPath": "/run/dockmoat"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                            "readinessProbe": {
                                **_health(f"unix://{o.socket}"),
                                "periodSeconds": 5,
                                "timeoutSeconds": 4,
                            },
                            "livenessProbe": {
                                **_health(f"unix://{o.socket}"),
                                "periodSeconds": 20,
                                "timeoutSeconds": 5,
                                "failureThreshold": 6,
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "64Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
                        }
                    ],
                    "volumes": [
                        {
                            "name": "docker-sock",
                            "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"},
                        },
                        {
                            "name": "guarded",
                            "hostPath": {"path": o.socket_dir, "type": "DirectoryOrCreate"},
                        },
                        # Tenancy's SQLite is per node: jobs outlive a guard restart.
                        {
                            "name": "state",
                            "hostPath": {"path": "/var/lib/dockmoat", "type": "DirectoryOrCreate"},
                        },
                        # One JSON line per request; a node log agent ships it.
                        {
                            "name": "audit",
                            "hostPath": {"path": "/var/log/dockmoat", "type": "DirectoryOrCreate"},
                        },
                        # The root-only control socket and pins: never shared.
                        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
    client = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "dockmoat-guarded-runner", "namespace": o.namespace},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "ci-runner"}},
            "spec": {
                "nodeSelector": {"dockmoat.io/docker-engine": "true"},
                "automountServiceAccountToken": False,
                "securityContext": {
                    "supplementalGroups": [o.client_gid],
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "runner",
                        "image": o.job_image or DEFAULT_GITLAB_JOB_IMAGE,
                        "command": ["sh", "-c", "docker version && sleep infinity"],
                        "env": [{"name": "DOCKER_HOST", "value": f"unix://{o.socket}"}],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        # Only the guarded socket's folder: never /var/run/docker.sock
                        # and never /run/dockmoat, which holds the control socket. The
                        # folder, not the socket file: a restarted guard makes a new
                        # socket, which a file mount would not see.
                        "volumeMounts": [
                            {"name": "guarded", "mountPath": o.socket_dir, "readOnly": True}
                        ],
                        "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
                    }
                ],
                "volumes": [
                    {
                        "name": "guarded",
                        "hostPath": {"path": o.socket_dir, "type": "Directory"},
                    }
                ],
            },
        },
    }
    documents: list[dict[str, Any]] = [namespace, account, daemonset, client]
    if o.job_identities:
        documents.insert(2, _with_job_open(o, daemonset, client))
    header = f"""\
# Generated by `dockmoat generate kubernetes` (docs/deploy.md, docs/scale-out.md).
# The guard as a DaemonSet on the nodes labelled dockmoat.io/docker-engine=true
# (nodes whose runners use that node's Docker engine): each node's runner pods
# mount {o.socket} (a hostPath) instead of /var/run/docker.sock.
#   - serve runs as uid {GUARD_UID}, no capabilities, read-only root, in the node's
#     docker group ({o.docker_gid}: set --docker-gid to your nodes' gid of the socket);
#     the guarded socket belongs to group {o.client_gid}, which runner pods add to
#     their supplementalGroups.
#   - per-node state: tenancy's SQLite in /var/lib/dockmoat, the audit log in
#     /var/log/dockmoat/audit.log (ship it with the node's log agent).
#   - bind pins are off: they need root in dockerd's mount namespace.
# Apply: kubectl apply -f dockmoat-guard.yaml; label nodes:
#   kubectl label node NODE dockmoat.io/docker-engine=true
"""
    if o.job_identities:
        header += f"""\
# Job identity (docs/scale-out.md): runner pods also mount {JOB_OPEN_DIR} and, as the
# job's first step, open their own job with the CI system's token for the audience
# {o.job_identity_audience}:
#   curl -s --unix-socket {JOB_OPEN_DIR}/open.sock -X POST \\
#     -H "Authorization: Bearer $ID_TOKEN" http://dockmoat/jobs   # -> docker_host
# The issuers' key sets are in the ConfigMap dockmoat-jwks: refresh it (and restart
# the guard) when an issuer rotates its keys.
"""
    return header + _dump(*documents)


def _with_job_open(
    o: DeployOptions, daemonset: dict[str, Any], client: dict[str, Any]
) -> dict[str, Any]:
    """Wire serve's job-open socket into the guard and the runner template; the
    ConfigMap with the issuers' key sets."""
    pod = daemonset["spec"]["template"]["spec"]
    pod["initContainers"][0]["volumeMounts"].append({"name": "job-open", "mountPath": "/host/open"})
    pod["containers"][0]["volumeMounts"] += [
        {"name": "job-open", "mountPath": JOB_OPEN_DIR},
        {"name": "jwks", "mountPath": "/etc/dockmoat/jwks", "readOnly": True},
    ]
    pod["volumes"] += [
        {"name": "job-open", "hostPath": {"path": JOB_OPEN_DIR, "type": "DirectoryOrCreate"}},
        {"name": "jwks", "configMap": {"name": "dockmoat-jwks"}},
    ]
    runner = client["template"]["spec"]
    runner["containers"][0]["volumeMounts"].append(
        {"name": "job-open", "mountPath": JOB_OPEN_DIR, "readOnly": True}
    )
    runner["volumes"].append(
        {"name": "job-open", "hostPath": {"path": JOB_OPEN_DIR, "type": "Directory"}}
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dockmoat-jwks", "namespace": o.namespace},
        "data": {f"{index}.json": jwks for index, (_issuer, jwks) in enumerate(o.job_identities)},
    }


def _dind_sidecar(o: DeployOptions, certs_mount: str, owner: str) -> dict[str, Any]:
    ping = _health("tcp://127.0.0.1:2376", "--tls-dir", certs_mount)
    return {
        "name": "dind",
        "image": o.dind_image,
        # A native sidecar (Kubernetes 1.29+): started and ready before the runner,
        # stopped after it.
        "restartPolicy": "Always",
        "env": [
            {"name": "DOCKER_TLS_CERTDIR", "value": "/certs"},
            {"name": "DOCKER_TLS_SAN", "value": "DNS:docker IP:127.0.0.1"},
            # The runner's user must read the client key.
            {"name": "DOCKMOAT_CLIENT_KEY_OWNER", "value": owner},
        ],
        # Classic DinD needs privileged mode; it is the only privileged container of
        # the pod (or use a sysbox runtimeClassName and drop this).
        "securityContext": {"privileged": True},
        "startupProbe": {**ping, "periodSeconds": 1, "failureThreshold": o.wait_seconds},
        "readinessProbe": {**ping, "periodSeconds": 5},
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": o.cpus_text, "memory": o.k8s_memory},
        },
        "volumeMounts": [
            {"name": "dind-certs", "mountPath": "/certs/client"},
            {"name": "dind-storage", "mountPath": "/var/lib/docker"},
            {"name": "work", "mountPath": "/home/runner/_work"},
        ],
    }


def arc(o: DeployOptions) -> str:
    runner = {
        "name": "runner",
        "image": o.job_image or DEFAULT_ARC_RUNNER_IMAGE,
        "command": ["/home/runner/run.sh"],
        "env": [
            {"name": "DOCKER_HOST", "value": "tcp://127.0.0.1:2376"},
            {"name": "DOCKER_TLS_VERIFY", "value": "1"},
            {"name": "DOCKER_CERT_PATH", "value": "/certs/client"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1001,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "dind-certs", "mountPath": "/certs/client", "readOnly": True},
            {"name": "work", "mountPath": "/home/runner/_work"},
        ],
        "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
    }
    values = {
        "githubConfigUrl": o.ci_url or "https://github.com/ORGANISATION",
        "githubConfigSecret": "arc-github-app",
        "minRunners": 0,
        "maxRunners": 10,
        # Not the chart's own "dind" mode: dockmoat's sidecar below replaces it.
        "containerMode": {},
        "template": {
            "spec": {
                "automountServiceAccountToken": False,
                "initContainers": [_dind_sidecar(o, "/certs/client", "1001:1001")],
                "containers": [runner],
                "volumes": [
                    {"name": "dind-certs", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                    {"name": "dind-storage", "emptyDir": {}},
                    {"name": "work", "emptyDir": {}},
                ],
            }
        },
    }
    header = f"""\
# Generated by `dockmoat generate arc` (docs/deploy.md): values for GitHub's Actions
# Runner Controller chart gha-runner-scale-set. Each runner pod gets a Docker daemon
# of its own: the dockmoat DinD sidecar ({o.dind_image}), started first as a native
# sidecar, ready once /_ping answers over mutual TLS (certificates made by dockmoat
# in milliseconds, written for the runner's uid 1001 into an in-memory volume).
# Only the sidecar is privileged; the runner drops every capability.
# Install:
#   helm install arc-runners -n arc-runners -f values.yaml \\
#     oci://ghcr.io/actions/actions-runner-controller-charts/gha-runner-scale-set
# with the secret arc-github-app holding your GitHub App's credentials.
"""
    return header + _dump(values)


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gitlab_k8s(o: DeployOptions) -> str:
    dind_repo = o.dind_image.rsplit(":", 1)[0] if ":" in o.dind_image else o.dind_image
    env = [
        "DOCKER_HOST=tcp://docker:2376",
        "DOCKER_TLS_VERIFY=1",
        "DOCKER_CERT_PATH=/certs/client",
        "DOCKER_TLS_CERTDIR=/certs",
        "DOCKER_TLS_SAN=DNS:docker",
    ]
    return f"""\
# Generated by `dockmoat generate gitlab-k8s` (docs/deploy.md): a GitLab Runner
# config.toml for the Kubernetes executor. Every job pod gets a Docker daemon of its
# own: the dockmoat DinD service ({o.dind_image}) with TLS, certificates made by
# dockmoat in milliseconds and shared through an in-memory volume.
#   - Only service containers are privileged (service_container_security_context),
#     and the only service jobs may start is the dockmoat DinD image
#     (allowed_services): a job cannot ask for a privileged container of its own.
#   - The build and helper containers cannot gain privileges.
#   - Limits for the daemon: service_cpu_limit / service_memory_limit.
# Jobs use it as the seed's GitLab example does: `services: [{{name: {o.dind_image},
# alias: docker}}]` with no variables of their own (`dockmoat generate gitlab`).
concurrent = 10
check_interval = 3

[[runners]]
  name = "dockmoat-dind"
  url = {_toml(o.ci_url or "https://gitlab.example.com")}
  token = "REPLACE-WITH-THE-RUNNER-AUTHENTICATION-TOKEN"
  executor = "kubernetes"
  environment = [{", ".join(_toml(e) for e in env)}]
  [runners.kubernetes]
    namespace = {_toml(o.namespace)}
    image = {_toml(o.job_image or DEFAULT_GITLAB_JOB_IMAGE)}
    privileged = false
    allow_privilege_escalation = false
    allowed_services = [{_toml(o.dind_image)}, {_toml(dind_repo + ":*")}]
    service_cpu_request = "500m"
    service_cpu_limit = {_toml(o.cpus_text)}
    service_memory_request = "512Mi"
    service_memory_limit = {_toml(o.k8s_memory)}
    cpu_limit = "2"
    memory_limit = "4Gi"
    poll_timeout = {max(o.wait_seconds * 3, 180)}
    [runners.kubernetes.pod_security_context]
      fs_group = 1000
    [runners.kubernetes.build_container_security_context]
      privileged = false
      allow_privilege_escalation = false
    [runners.kubernetes.helper_container_security_context]
      privileged = false
      allow_privilege_escalation = false
      run_as_non_root = true
      run_as_user = 1000
    [runners.kubernetes.service_container_security_context]
      privileged = true
    [[runners.kubernetes.services]]
      name = {_toml(o.dind_image)}
      alias = "docker"
    [[runners.kubernetes.volumes.empty_dir]]
      name = "docker-certs"
      mount_path = "/certs/client"
      medium = "Memory"
"""


def systemd(o: DeployOptions) -> str:
    """Two units, separated by `# ---- NAME ----` lines (`install_systemd` splits them)."""
    dockmoat = f"{o.prefix}/bin/dockmoat"
    listen = "unix:///run/dockmoat/docker.sock"
    serve = [dockmoat, "serve", "--listen", listen, "--profile", o.profile,
             "--audit-log", "/var/log/dockmoat/audit.log"]  # fmt: skip
    common_hardening = """\
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
UMask=0077"""
    if o.unprivileged:
        serve += ["--bind-pins", "off", "--socket-group", "docker"]
        identity = """\
# Unprivileged: the dockmoat user in the docker group, fully sandboxed; no bind
# pins (they need root in dockerd's mount namespace) and `dockmoat job` needs
# `sudo -u dockmoat`.
User=dockmoat
Group=dockmoat
SupplementaryGroups=docker
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
MemoryDenyWriteExecute=yes
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources"""
    else:
        identity = """\
# Root, in the host's mount namespace: bind pins mount there (docs/policy.md) and
# `dockmoat job` (root) talks to the root-only control socket. No option that gives
# the service a mount namespace of its own (ProtectSystem, PrivateTmp, ...) is used,
# since pins must be made in dockerd's; capabilities are limited to what serve uses.
CapabilityBoundingSet=CAP_SYS_ADMIN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER
CapabilityBoundingSet=CAP_CHOWN CAP_SYS_PTRACE
SystemCallFilter=@system-service @mount"""
    serve_unit = f"""\
[Unit]
Description=dockmoat guarded Docker socket
Documentation=https://github.com/dockmoat/dockmoat/blob/main/docs/deploy.md
After=docker.service network.target
Wants=docker.service

[Service]
Type=exec
ExecStart={" ".join(shlex.quote(a) for a in serve)}
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGTERM
TimeoutStopSec=20s
Restart=on-failure
RestartSec=2s
RuntimeDirectory=dockmoat
RuntimeDirectoryMode=0755
StateDirectory=dockmoat
StateDirectoryMode=0700
LogsDirectory=dockmoat
LogsDirectoryMode=0700
LimitNOFILE=65536
{identity}
{common_hardening}

[Install]
WantedBy=multi-user.target
"""
    pool = [dockmoat, "dind", "pool", "--size", str(o.pool_size), "--image", o.dind_image,
            "--memory", o.memory, "--cpus", o.cpus_text,
            "--pids-limit", str(o.pids_limit)]  # fmt: skip
    pool_unit = f"""\
[Unit]
Description=dockmoat warm pool of DinD daemons
Documentation=https://github.com/dockmoat/dockmoat/blob/main/docs/dind.md
After=docker.service
Requires=docker.service

[Service]
Type=exec
ExecStart={" ".join(shlex.quote(a) for a in pool)}
KillSignal=SIGTERM
TimeoutStopSec=60s
Restart=on-failure
RestartSec=5s
# The pool keeps its CA in /var/lib/dockmoat/dind and answers `dockmoat dind up`
# on the root-only /run/dockmoat/dind-pool.sock; it only talks to dockerd.
RuntimeDirectory=dockmoat
RuntimeDirectoryPreserve=yes
StateDirectory=dockmoat
StateDirectoryMode=0700
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER
{common_hardening}

[Install]
WantedBy=multi-user.target
"""
    header = f"""\
# Generated by `dockmoat generate systemd` (docs/deploy.md): two units, each after its
# `# ---- NAME ----` line. `make install-systemd` (scripts/install-systemd) installs
# dockmoat in {o.prefix} and these units in /etc/systemd/system.
"""
    return (
        header
        + "# ---- dockmoat.service ----\n"
        + serve_unit
        + "# ---- dockmoat-dind-pool.service ----\n"
        + pool_unit
    )


def split_units(text: str) -> dict[str, str]:
    """The units of `systemd(...)` output by file name."""
    units: dict[str, str] = {}
    name = ""
    for line in text.splitlines(keepends=True):
        found = re.fullmatch(r"# ---- (\S+) ----\n?", line)
        if found:
            name = found.group(1)
            units[name] = ""
        elif name:
            units[name] += line
    return units
