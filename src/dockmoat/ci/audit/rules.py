"""The rule catalogue of `dockmoat audit`: one entry per stable rule id."""

from __future__ import annotations

from dockmoat.ci.audit.findings import Rule, Severity

SOCKET_MOUNT = Rule(
    id="socket-mount",
    severity=Severity.HIGH,
    title="Docker socket mounted into a container",
    help=(
        "Whoever can talk to the Docker socket is root on the host: it can start a privileged "
        "container that mounts /. Mounting it read-only does not help, because ':ro' only "
        "stops the file from being replaced, not the API calls made through it. Mounting a "
        "parent directory such as /var/run or /run exposes the socket just the same."
    ),
    fix=(
        "Give the job dockmoat's guarded socket instead (`dockmoat serve`, then mount "
        "/run/dockmoat/docker.sock), or a DinD daemon with TLS "
        "(`dockmoat generate ... --mode dind`)."
    ),
)

PRIVILEGED = Rule(
    id="privileged",
    severity=Severity.HIGH,
    title="Privileged container that is not a Docker daemon",
    help=(
        "A privileged container has every capability and every host device; escaping it is "
        "trivial. Only a Docker-in-Docker daemon has a reason to ask for it."
    ),
    fix=(
        "Drop `privileged`/`--privileged`; add only the capabilities the job needs "
        "(`cap_add`), or move the Docker work to a DinD service or dockmoat's guarded socket."
    ),
)

DIND_PRIVILEGED = Rule(
    id="dind-privileged",
    severity=Severity.MEDIUM,
    title="DinD daemon runs privileged",
    help=(
        "Classic Docker-in-Docker needs privileged mode, which gives the nested daemon, and "
        "whatever escapes it, full access to the host. It is a known, accepted cost of DinD, "
        "not a mistake, but it should be a decision."
    ),
    fix=(
        "Run DinD runners on dedicated hosts or VMs, use a runtime that does not need "
        "privileged mode (for example sysbox-runc), or use dockmoat's guarded socket."
    ),
)

PROXY_PRIVILEGED = Rule(
    id="proxy-privileged",
    severity=Severity.HIGH,
    title="Socket proxy or daemon runs privileged without need",
    help=(
        "A Docker socket proxy (Tecnativa-style, or dockmoat itself) only forwards API calls "
        "to a mounted socket; it never needs privileged mode, and a DinD daemon behind a "
        "runtime such as sysbox does not need it either. Privileged mode turns any bug in "
        "it into a host compromise."
    ),
    fix="Remove `privileged: true` / `--privileged` from this service.",
)

DIND_TLS_DISABLED = Rule(
    id="dind-tls-disabled",
    severity=Severity.HIGH,
    title="DinD daemon with TLS disabled",
    help=(
        "With DOCKER_TLS_CERTDIR empty, `--tls=false`, or a plain `tcp://...:2375` listener, "
        "the nested daemon accepts unauthenticated API calls from anything on its network; "
        "since DinD is privileged, that is root on the host."
    ),
    fix=(
        "Keep TLS on: set DOCKER_TLS_CERTDIR=/certs on the daemon, share /certs/client with "
        "the client read-only, and connect to tcp://HOST:2376 with DOCKER_TLS_VERIFY=1 and "
        "DOCKER_CERT_PATH=/certs/client."
    ),
)

DOCKER_HOST_NO_TLS = Rule(
    id="docker-host-no-tls",
    severity=Severity.HIGH,
    title="Client DOCKER_HOST over TCP without TLS verification",
    help=(
        "A client that talks to a daemon over tcp:// without DOCKER_TLS_VERIFY (or "
        "--tlsverify) neither proves who it is nor checks whom it talks to: the daemon must "
        "be accepting anyone on the network."
    ),
    fix=(
        "Use tcp://HOST:2376 with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH pointing at the "
        "client certificates, or a unix socket (dockmoat's guarded socket)."
    ),
)

PROXY_WRITE_ACCESS = Rule(
    id="proxy-write-access",
    severity=Severity.HIGH,
    title="Socket proxy with body-blind write access",
    help=(
        "A Tecnativa-style proxy filters by URL only. With POST=1 and CONTAINERS=1 a client "
        "can create a container whose body asks for privileged mode or a bind mount of /, "
        "and EXEC=1 lets it run commands in any container: the proxy then protects nothing. "
        "dockmoat with the permissive profile forwards everything likewise."
    ),
    fix=(
        "Replace the proxy with dockmoat (`dockmoat generate compose --mode guarded`), "
        "which reads request bodies and refuses privileged containers and host mounts; or "
        "keep POST=0 and EXEC=0."
    ),
)

DIND_NO_LIMITS = Rule(
    id="dind-no-limits",
    severity=Severity.MEDIUM,
    title="DinD daemon without memory, CPU or PID limits",
    help=(
        "Everything the nested daemon runs is charged to its container; without limits one "
        "job's build or fork bomb starves every other job on the host."
    ),
    fix=(
        "Set memory, CPU and PID limits on the DinD service (compose: mem_limit, cpus, "
        "pids_limit; docker run: --memory, --cpus, --pids-limit)."
    ),
)

DIND_SHARED_DATA = Rule(
    id="dind-shared-data-volume",
    severity=Severity.MEDIUM,
    title="One DinD data volume shared by several services",
    help=(
        "Two daemons (or a daemon and anything else) writing the same /var/lib/docker corrupt "
        "each other's images and containers, and a job can read what another job built."
    ),
    fix="Give each DinD daemon its own data volume and mount it nowhere else.",
)

UNPINNED_IMAGE = Rule(
    id="unpinned-image",
    severity=Severity.MEDIUM,
    title="Image not pinned to a version",
    help=(
        "`latest`, no tag at all, or a moving channel tag such as `dind` or `stable` means "
        "the pipeline runs whatever was pushed last: builds stop being reproducible and a "
        "new daemon version can break or change them without a commit."
    ),
    fix="Pin a version tag (e.g. docker:27.3.1-dind) or a digest (image@sha256:...).",
)

HOST_NETWORK = Rule(
    id="host-network",
    severity=Severity.MEDIUM,
    title="Container shares the host's network namespace",
    help=(
        "With the host network a container reaches every service bound to the host's "
        "loopback (including a Docker daemon on 127.0.0.1:2375) and can bind host ports."
    ),
    fix="Use a user-defined bridge network and publish only the ports needed.",
)

HOST_PID = Rule(
    id="host-pid",
    severity=Severity.HIGH,
    title="Container shares the host's PID namespace",
    help=(
        "With the host PID namespace a container sees every host process, their command "
        "lines and environments (secrets), and with enough capabilities can signal or trace "
        "them."
    ),
    fix="Remove `pid: host` / `--pid=host`.",
)

DIND_NO_HEALTHCHECK = Rule(
    id="dind-no-healthcheck",
    severity=Severity.MEDIUM,
    title="DinD service without a health check",
    help=(
        "The nested daemon needs seconds to generate its certificates and start; without a "
        "health check nothing can wait for it, and clients fail at random with 'Cannot "
        "connect' or a missing certificate."
    ),
    fix=(
        "Add a health check running `docker info` in the DinD service (compose: healthcheck: "
        '{test: ["CMD", "docker", "info"]}; docker run: --health-cmd "docker info").'
    ),
)

DEPENDS_ON_NOT_HEALTHY = Rule(
    id="depends-on-not-healthy",
    severity=Severity.MEDIUM,
    title="Client does not wait for the DinD daemon to be healthy",
    help=(
        "`depends_on` without `condition: service_healthy` only waits for the daemon's "
        "container to start, not for the daemon to answer; the client races the daemon's "
        "start-up and its certificate generation."
    ),
    fix=(
        "Use `depends_on: {DIND: {condition: service_healthy}}` together with a health check "
        "on the DinD service, or wait for `docker info` in a bounded loop."
    ),
)

GITLAB_DIND_SERVICE = Rule(
    id="gitlab-dind-service",
    severity=Severity.MEDIUM,
    title="GitLab job runs a DinD service, which needs a privileged runner",
    help=(
        "A `docker:dind` service only starts on a runner that runs it privileged, and a "
        "job can override a service's entrypoint and command, so whoever can push a "
        "pipeline to that runner can run any code privileged, that is root on the host. "
        "Medium, like `dind-privileged`: classic DinD is GitLab's documented way and the "
        "risk lives in the runner's config.toml. Audited together with that config.toml "
        "it becomes high when the runner makes every job container privileged, and low "
        "when no runner given grants privileged mode (the service cannot start there)."
    ),
    fix=(
        "Use the runner host's daemon through dockmoat's guarded socket "
        "(`dockmoat generate gitlab --mode guarded`: no privileged runner at all), or "
        "rootless DinD (docker:VERSION-dind-rootless) on a runner with `privileged = false` "
        "that grants privileged mode only to that service: `services_privileged = true` "
        'and `allowed_privileged_services = ["docker:*-dind-rootless"]`.'
    ),
)

RUNNER_PRIVILEGED = Rule(
    id="runner-privileged",
    severity=Severity.HIGH,
    title="CI runner makes job containers privileged",
    help=(
        "A GitLab runner with `privileged = true` (docker or Kubernetes executor), or an "
        "Actions Runner Controller runner with a privileged container, runs every job "
        "privileged: any pipeline anyone can push is root on the host or node. "
        "Privileged mode granted to services only (`services_privileged`) is medium when "
        "`allowed_privileged_services` limits it to DinD images, high otherwise."
    ),
    fix=(
        "Set `privileged = false`; give DinD jobs a dedicated runner that grants "
        "privileged mode only to `allowed_privileged_services`, or none at all with "
        "dockmoat's guarded socket (`dockmoat generate gitlab --mode guarded`)."
    ),
)

HOST_IPC = Rule(
    id="host-ipc",
    severity=Severity.MEDIUM,
    title="Container shares the host's IPC namespace",
    help=(
        "With the host IPC namespace a container reads and writes the shared memory of "
        "every host process (`hostIPC: true`, `ipc: host`, `--ipc host`)."
    ),
    fix="Remove `hostIPC: true` / `ipc: host` / `--ipc host`.",
)

POD_NO_LIMITS = Rule(
    id="pod-no-limits",
    severity=Severity.LOW,
    title="CI pod container without memory or CPU limits",
    help=(
        "A build container without limits on a shared Kubernetes node can take all of its "
        "memory or CPU: one job's build starves every other job (and the node's kubelet)."
    ),
    fix=(
        "Set `resources.limits.memory` and `resources.limits.cpu` on the container "
        "(GitLab runner: `memory_limit`, `cpu_limit` in `[runners.kubernetes]`)."
    ),
)

DOCKER_API_PLAIN_TCP = Rule(
    id="docker-api-plain-tcp",
    severity=Severity.HIGH,
    title="Docker API reached or offered over plain TCP",
    help=(
        "A Docker endpoint such as tcp://HOST:2375 in any variable, flag or command "
        "(a reverse proxy's `--providers.docker.endpoint`, a dashboard's `*_REMOTE_HOST`, "
        "`socat TCP-LISTEN:2375,... UNIX-CONNECT:/var/run/docker.sock`) carries the whole "
        "Docker API unauthenticated: anything on the network that reaches it is root on "
        "the daemon's host."
    ),
    fix=(
        "Mount dockmoat's guarded socket (or a read-only, filtered proxy) instead; if the "
        "daemon must be remote, use tcp://HOST:2376 with TLS client certificates "
        "(--tlsverify) on both sides."
    ),
)

DOCKER_PORT_PUBLISHED = Rule(
    id="docker-port-published",
    severity=Severity.HIGH,
    title="Docker API port published on the host",
    help=(
        "Publishing 2375 (plain) on the host hands the Docker API to every machine that "
        "can reach the host; on 127.0.0.1 it is still every local process (medium). "
        "2376 is the TLS port: medium, since it is only as safe as the client "
        "certificates it requires."
    ),
    fix=(
        "Do not publish the daemon's port: let clients reach it on a private network "
        "(compose network, service alias), or use dockmoat's guarded socket."
    ),
)

SOCKET_WORLD_WRITABLE = Rule(
    id="socket-world-writable",
    severity=Severity.HIGH,
    title="Docker socket made world-writable",
    help=(
        "`chmod 666` (or 777, o+w, a+rw) on docker.sock lets every user and every "
        "container that sees the file drive the daemon: every local account becomes root."
    ),
    fix=(
        "Leave the socket 660 root:docker; give the job user dockmoat's guarded socket, "
        "or membership of a group that is meant to be root-equivalent."
    ),
)

BUILDKIT_PLAIN_TCP = Rule(
    id="buildkit-plain-tcp",
    severity=Severity.HIGH,
    title="BuildKit daemon listens on plain TCP",
    help=(
        "`buildkitd --addr tcp://...` without `--tlscert`/`--tlskey`/`--tlscacert` accepts "
        "builds from anyone who reaches the port: they run code in the build "
        "containers, read every cache and secret mounted into builds, and push as the "
        "daemon's credentials."
    ),
    fix=(
        "Give buildkitd `--tlscacert`, `--tlscert` and `--tlskey` (mutual TLS), or listen "
        "on a unix socket only (`--addr unix:///run/buildkit/buildkitd.sock`)."
    ),
)

UNREADABLE = Rule(
    id="unreadable",
    severity=Severity.HIGH,
    title="File could not be audited",
    help=(
        "dockmoat could not read this file (missing, not UTF-8, not YAML or Groovy it "
        "understands, an unknown format): none of its risks were checked. A CI gate that "
        "passed it would be passing a file nobody audited."
    ),
    fix=(
        "Fix the path or the syntax, or name its format with --type; pass --lenient to "
        "report unreadable files as low instead of failing the audit."
    ),
)

ALL_RULES: tuple[Rule, ...] = (
    SOCKET_MOUNT,
    PRIVILEGED,
    PROXY_PRIVILEGED,
    DIND_PRIVILEGED,
    DIND_TLS_DISABLED,
    DOCKER_HOST_NO_TLS,
    PROXY_WRITE_ACCESS,
    DIND_NO_LIMITS,
    DIND_SHARED_DATA,
    UNPINNED_IMAGE,
    HOST_NETWORK,
    HOST_PID,
    DIND_NO_HEALTHCHECK,
    DEPENDS_ON_NOT_HEALTHY,
    GITLAB_DIND_SERVICE,
    RUNNER_PRIVILEGED,
    HOST_IPC,
    POD_NO_LIMITS,
    DOCKER_API_PLAIN_TCP,
    DOCKER_PORT_PUBLISHED,
    SOCKET_WORLD_WRITABLE,
    BUILDKIT_PLAIN_TCP,
    UNREADABLE,
)
