"""Rules on container create and update (and the same fields in service specs).

Every HostConfig field is checked both inside "HostConfig" and at the top level
of the create body, where dockerd also reads it (see `base.host_configs`).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import posixpath
from collections.abc import Iterator, Mapping
from typing import Any, cast

from dockmoat.api import dockerfile
from dockmoat.api.gojson import field as go_field
from dockmoat.policy import hostpaths
from dockmoat.policy.decision import Decision, Deny
from dockmoat.policy.rules.base import (
    ALLOW,
    RESTRICTED,
    BodyShape,
    Rule,
    Subject,
    body_host_configs,
    cap_name,
    deny,
    flag,
    host_configs,
    integer,
    key_of,
    obj,
    objects,
    present,
    resources,
    rewrite,
    str_slice,
    string_map,
    text,
    texts,
    top,
)

CREATE = frozenset({"containers.create"})
UPDATE = frozenset({"containers.update"})
SERVICES = frozenset({"services.create", "services.update"})
#: Routes that write an image config: commit (body + `changes`), import (`changes`).
IMAGE_CONFIG = frozenset({"images.commit", "images.create"})

#: Docker's default capability set: adding one of these changes nothing.
DEFAULT_CAPS = frozenset(
    "CAP_" + name
    for name in (
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    )
)
#: Kubernetes' Pod Security Standards "safe" sysctls (namespaced, harmless).
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
LOG_DRIVERS = frozenset({"", "json-file", "local", "none"})
NAMESPACE_FIELDS = ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")
JOIN_FIELDS = ("NetworkMode", "PidMode", "IpcMode", "Cgroup")


def service_spec(subject: Subject) -> Mapping[str, Any] | None:
    """TaskTemplate.ContainerSpec of a service create/update body."""
    task = obj(top(subject), "TaskTemplate", "")
    if task is None:
        return None
    return obj(task, "ContainerSpec", "TaskTemplate.")


def _is_service(subject: Subject) -> bool:
    return subject.route in SERVICES


# --- privileges ------------------------------------------------------------------


def check_privileged(subject: Subject) -> Decision:
    for holder, where in host_configs(subject):
        if flag(holder, "Privileged", where):
            return deny(
                "containers.privileged",
                f"a privileged container ({where}Privileged: true)",
                "Run it unprivileged; add single safe capabilities if needed",
            )
    return ALLOW


def check_host_namespaces(subject: Subject) -> Decision:
    if _is_service(subject):
        task = obj(top(subject), "TaskTemplate", "") or {}
        for network in objects(task, "Networks", "TaskTemplate."):
            if text(network, "Target", "TaskTemplate.Networks[].") == "host":
                return _host_ns("TaskTemplate.Networks[].Target", "host")
        return ALLOW
    for holder, where in host_configs(subject):
        for name in NAMESPACE_FIELDS:
            value = text(holder, name, where)
            if value is not None and (value == "host" or value.startswith("host:")):
                return _host_ns(f"{where}{name}", value)
    return ALLOW


def _host_ns(where: str, value: str) -> Decision:
    return deny(
        "containers.host-namespaces",
        f"sharing a host namespace ({where}: {value!r})",
        "Use the container's own namespaces (bridge or a user-defined network)",
    )


def check_namespace_joins(subject: Subject) -> Decision:
    for holder, where in host_configs(subject):
        for name in JOIN_FIELDS:
            value = text(holder, name, where)
            if value is not None and value.startswith("container:"):
                return deny(
                    "containers.namespace-joins",
                    f"joining another container's namespace ({where}{name}: {value!r})",
                    "Use a user-defined network to reach other containers",
                )
    return ALLOW


def check_volumes_from(subject: Subject) -> Decision:
    for holder, where in host_configs(subject):
        if texts(holder, "VolumesFrom", where):
            return deny(
                "containers.volumes-from",
                f"mounting another container's volumes ({where}VolumesFrom)",
                "Share data through a named volume",
            )
    return ALLOW


def check_links(subject: Subject) -> Decision:
    for holder, where in host_configs(subject):
        if texts(holder, "Links", where):
            return _links(f"{where}Links")
    networking = obj(top(subject), "NetworkingConfig", "")
    if networking is not None:
        endpoints = obj(networking, "EndpointsConfig", "NetworkingConfig.") or {}
        for name, endpoint in endpoints.items():
            if endpoint is None:
                continue
            if not isinstance(endpoint, dict):
                raise BodyShape(f"NetworkingConfig.EndpointsConfig[{name}]", "an object")
            if texts(endpoint, "Links", f"NetworkingConfig.EndpointsConfig[{name}]."):
                return _links(f"NetworkingConfig.EndpointsConfig[{name}].Links")
    return ALLOW


def _links(where: str) -> Decision:
    return deny(
        "containers.links",
        f"linking to other containers ({where})",
        "Use a user-defined network and container names instead of links",
    )


def _cap_lists(subject: Subject, names: tuple[str, ...]) -> Iterator[tuple[str, list[str]]]:
    if _is_service(subject):
        spec = service_spec(subject)
        if spec is not None:
            for name in names:
                service_name = {"CapAdd": "CapabilityAdd", "CapDrop": "CapabilityDrop"}.get(
                    name, name
                )
                yield (
                    f"TaskTemplate.ContainerSpec.{service_name}",
                    texts(spec, service_name, "TaskTemplate.ContainerSpec."),
                )
        return
    for holder, where in host_configs(subject):
        for name in names:
            # HostConfig.CapAdd/CapDrop are Go StrSlices (one string is a list of one);
            # Capabilities is a plain list.
            read = str_slice if name in ("CapAdd", "CapDrop") else texts
            yield f"{where}{name}", read(holder, name, where)


def check_capabilities(subject: Subject) -> Decision:
    for where, caps in _cap_lists(subject, ("CapAdd", "Capabilities")):
        for raw in caps:
            if cap_name(raw) not in DEFAULT_CAPS:
                return deny(
                    "containers.capabilities",
                    f"adding the capability {raw!r} ({where})",
                    "Only Docker's default capabilities may be added",
                )
    return ALLOW


def check_devices(subject: Subject) -> Decision:
    for holder, where in resources(subject):
        for name in ("Devices", "DeviceCgroupRules", "DeviceRequests"):
            value = go_field(holder, name)
            if value is not None and value != []:
                return deny(
                    "containers.devices",
                    f"access to host devices ({where}{name})",
                    "Containers get no host devices; use files or volumes",
                )
    return ALLOW


def _confinement(where: str, what: str) -> Decision:
    return deny(
        "containers.confinement",
        f"weakened confinement: {what} ({where})",
        "Keep the default seccomp and AppArmor profiles and masked paths; "
        "only no-new-privileges and SELinux user/role/level labels may be set",
    )


def security_opt_problem(option: str) -> str | None:
    """Why a SecurityOpt entry weakens confinement (parsed as dockerd parses it)."""
    if option == "no-new-privileges":
        return None
    if option == "disable":
        return "SELinux labelling disabled"
    if "=" in option:
        key, value = option.split("=", 1)
    elif ":" in option:
        key, value = option.split(":", 1)
    else:
        return f"the security option {option!r}"
    if key == "no-new-privileges":
        return None
    if key == "label":
        kind = value.split(":", 1)[0]
        if kind in ("user", "role", "level"):
            return None
        return f"the SELinux label {value!r}"
    if key == "apparmor" and value == "docker-default":
        return None
    if key in ("apparmor", "seccomp"):
        return f"{key} profile {value[:60]!r} instead of the default"
    return f"the security option {option[:60]!r}"


def check_confinement(subject: Subject) -> Decision:
    if _is_service(subject):
        spec = service_spec(subject) or {}
        privileges = obj(spec, "Privileges", "TaskTemplate.ContainerSpec.") or {}
        where = "TaskTemplate.ContainerSpec.Privileges."
        selinux = obj(privileges, "SELinuxContext", where) or {}
        if flag(selinux, "Disable", where + "SELinuxContext.") or text(
            selinux, "Type", where + "SELinuxContext."
        ):
            return _confinement(where + "SELinuxContext", "SELinux disabled or retyped")
        for name in ("Seccomp", "AppArmor"):
            mode = text(obj(privileges, name, where) or {}, "Mode", f"{where}{name}.")
            if mode not in (None, "", "default"):
                return _confinement(f"{where}{name}.Mode", f"{name} mode {mode!r}")
        return ALLOW
    for holder, where in host_configs(subject):
        for option in texts(holder, "SecurityOpt", where):
            problem = security_opt_problem(option)
            if problem is not None:
                return _confinement(f"{where}SecurityOpt", problem)
        for name in ("MaskedPaths", "ReadonlyPaths"):
            if present(holder, name):
                return _confinement(f"{where}{name}", f"an explicit {name} list")
    return ALLOW


def sysctl_name(raw: str) -> str:
    """runc writes /proc/sys/<name with dots as slashes>; both spellings name one knob."""
    return raw.replace("/", ".").strip(".")


def check_sysctls(subject: Subject) -> Decision:
    places: list[tuple[Mapping[str, str], str]] = []
    if _is_service(subject):
        spec = service_spec(subject) or {}
        where = "TaskTemplate.ContainerSpec."
        places.append((string_map(spec, "Sysctls", where), where + "Sysctls"))
    else:
        for holder, where in host_configs(subject):
            places.append((string_map(holder, "Sysctls", where), where + "Sysctls"))
    for sysctls, where in places:
        for name in sysctls:
            if sysctl_name(name) not in SAFE_SYSCTLS:
                return deny(
                    "containers.sysctls",
                    f"setting the sysctl {name!r} ({where})",
                    "Only Kubernetes' safe sysctls may be set: " + ", ".join(sorted(SAFE_SYSCTLS)),
                )
    return ALLOW


def check_cgroup_parent(subject: Subject) -> Decision:
    if subject.route == "build.build":
        value = subject.request.param("cgroupparent")
        if value:
            return _cgroup_parent("the cgroupparent build parameter", value)
        return ALLOW
    for holder, where in resources(subject):
        value = text(holder, "CgroupParent", where)
        if value:
            return _cgroup_parent(f"{where}CgroupParent", value)
    return ALLOW


def _cgroup_parent(where: str, value: str) -> Decision:
    return deny(
        "containers.cgroup-parent",
        f"placing the container in the host cgroup {value!r} ({where})",
        "Leave the cgroup parent to the daemon",
    )


def check_runtime(subject: Subject) -> Decision:
    allowed = subject.settings.runtimes
    for holder, where in host_configs(subject):
        value = text(holder, "Runtime", where)
        if value and value not in allowed:
            shown = ", ".join(sorted(allowed)) or "none"
            return deny(
                "containers.runtime",
                f"the runtime {value!r} ({where}Runtime)",
                f"Use the daemon's default runtime (allowed besides it: {shown})",
            )
    return ALLOW


def check_log_driver(subject: Subject) -> Decision:
    for holder, where in host_configs(subject):
        config = obj(holder, "LogConfig", where)
        if config is None:
            continue
        driver = text(config, "Type", f"{where}LogConfig.") or ""
        if driver not in LOG_DRIVERS:
            return deny(
                "containers.log-driver",
                f"the log driver {driver!r} ({where}LogConfig.Type), which makes the daemon "
                "send logs elsewhere",
                "Use json-file, local or none",
            )
    return ALLOW


def proc_path(path: str) -> bool:
    """Whether a working directory lies under /proc, however it is spelled."""
    normal = posixpath.normpath("/" + path.lstrip("/"))
    return normal == "/proc" or normal.startswith("/proc/")


def _workdir_changes(subject: Subject) -> Iterator[tuple[str, bool]]:
    """(value, could expand) of each WORKDIR in `changes` (commit and import), read with
    the builder's own rules (api/dockerfile.py), ONBUILD triggers included."""
    instructions, escape = dockerfile.changes(subject.request.query.get("changes", []))
    for instruction in instructions:
        keyword, value = instruction.keyword, instruction.arguments
        if keyword == "ONBUILD":
            inner, _, value = value.strip().partition(" ")
            keyword = inner.upper()
        if keyword == "WORKDIR":
            yield value.strip(), dockerfile.needs_expansion(value, escape)


def _proc_workdir(value: str, where: str) -> Decision:
    return deny(
        "containers.proc-workdir",
        f"the working directory {value!r} under /proc ({where}; CVE-2024-21626)",
        "Use a working directory inside the container's own filesystem",
    )


def check_proc_workdir(subject: Subject) -> Decision:
    if subject.route in IMAGE_CONFIG:
        try:
            workdirs = list(_workdir_changes(subject))
        except dockerfile.DockerfileError as error:
            return deny(
                "containers.proc-workdir",
                f"changes the builder would refuse or read otherwise ({error})",
                "Send plain Dockerfile instructions",
            )
        for change, expands in workdirs:
            # The builder expands quotes, escapes and variables: refuse what we cannot
            # expand rather than guess.
            if expands or proc_path(change):
                return _proc_workdir(change, "a WORKDIR change")
        if subject.route != "images.commit" or subject.body is None:
            return ALLOW  # no config body: commit keeps the container's own config
    if _is_service(subject):
        spec = service_spec(subject) or {}
        value = text(spec, "Dir", "TaskTemplate.ContainerSpec.")
        where = "TaskTemplate.ContainerSpec.Dir"
    else:
        value = text(top(subject), "WorkingDir", "")
        where = "WorkingDir"
    if value and proc_path(value):
        return _proc_workdir(value, where)
    return ALLOW


# --- mounts ----------------------------------------------------------------------


def bind_sources(subject: Subject) -> Iterator[tuple[str, str]]:
    """Every host path a create body (or service spec) binds: (source, where).

    `Binds` entries are `src:dst[:opts]`; the source is a host path exactly when
    it is absolute, otherwise it names a volume. `Mounts` of type bind carry it in
    `Source`. Mount types other than bind, volume and tmpfs are refused here.
    """
    if _is_service(subject):
        spec = service_spec(subject) or {}
        for source, place, _slot in _bind_slots(spec, "TaskTemplate.ContainerSpec."):
            yield source, place
    else:
        yield from create_bind_sources(top(subject))


def create_bind_sources(body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """`bind_sources` of a container create body (a JSON object)."""
    for holder, where in body_host_configs(body):
        for source, place, _slot in _bind_slots(holder, where):
            yield source, place


_Slot = tuple[list[str], int] | tuple[dict[str, Any], str]


def _bind_slots(holder: Mapping[str, Any], where: str) -> Iterator[tuple[str, str, _Slot]]:
    """(source, where, the list or object holding it) for each bind in one holder."""
    binds = texts(holder, "Binds", where)
    for index, spec_text in enumerate(binds):
        parts = spec_text.split(":")
        if len(parts) > 3:
            raise BodyShape(f"{where}Binds entry {spec_text!r}", "src:dst[:opts]")
        if len(parts) >= 2 and parts[0].startswith("/"):
            yield parts[0], f"{where}Binds", (binds, index)
    for mount in objects(holder, "Mounts", where):
        kind = text(mount, "Type", f"{where}Mounts[].") or ""
        if kind == "bind":
            source = text(mount, "Source", f"{where}Mounts[].") or ""
            if not source.startswith("/"):
                raise BodyShape(f"{where}Mounts[].Source", "an absolute host path")
            slot = (cast(dict[str, Any], mount), key_of(mount, "Source") or "")
            yield source, f"{where}Mounts", slot
        elif kind not in ("volume", "tmpfs"):
            raise BodyShape(f"{where}Mounts[].Type", "bind, volume or tmpfs")


def rebind(body: Any, sources: Mapping[str, str]) -> Any:
    """A copy of a container create body whose bind sources are replaced (old -> new).

    The places are exactly those `bind_sources` reads, in both HostConfig holders;
    the gateway uses it to point dockerd at pinned sources (gateway/pins.py).
    """
    changed = copy.deepcopy(body)
    for holder, where in body_host_configs(changed):
        for source, _where, slot in list(_bind_slots(holder, where)):
            new = sources.get(source)
            if new is None:
                continue
            container, key = slot
            if isinstance(container, list):
                assert isinstance(key, int)
                container[key] = new + container[key][len(source) :]
            else:
                assert isinstance(key, str)
                container[key] = new
    return changed


def check_bind_mounts(subject: Subject) -> Decision:
    settings = subject.settings
    for source, where in bind_sources(subject):
        problem = hostpaths.bind_problem(
            source, settings.allow_bind, settings.protected_paths, settings.own_socket
        )
        if problem is not None:
            allowed = ", ".join(settings.allow_bind) or "none configured"
            return deny(
                "containers.bind-mounts",
                f"{problem} ({where})",
                f"Bind only from the allowed folders ({allowed}) or use a named volume",
            )
    return ALLOW


def check_no_binds(subject: Subject) -> Decision:
    for source, where in bind_sources(subject):
        return deny(
            "containers.no-binds",
            f"a bind mount of host path {source} ({where})",
            "The restricted profile allows no bind mounts; use a named volume",
        )
    return ALLOW


# --- ports -----------------------------------------------------------------------


def _loopback(host_ip: str) -> bool:
    try:
        return ipaddress.ip_address(host_ip).is_loopback
    except ValueError:
        return False


def check_published_ports(subject: Subject) -> Decision:
    body = top(subject)
    for holder, where in host_configs(subject):
        if flag(holder, "PublishAllPorts", where):
            return deny(
                "containers.published-ports",
                f"publishing all exposed ports on every host interface ({where}PublishAllPorts)",
                "Publish single ports on 127.0.0.1 (-p 127.0.0.1:HOST:CONTAINER)",
            )
    changed: Any = None
    notes: list[str] = []
    path: list[str] = []
    for holder, where in host_configs(subject):
        bindings = obj(holder, "PortBindings", where)
        if bindings is None:
            continue
        for port, entries in bindings.items():
            if entries is None:
                continue
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise BodyShape(f"{where}PortBindings[{port}]", "a list of objects")
            for index, entry in enumerate(entries):
                host_ip = text(entry, "HostIp", f"{where}PortBindings[{port}].") or ""
                if _loopback(host_ip):
                    continue
                if changed is None:
                    changed = copy.deepcopy(body)
                target = _locate(changed, where, port, index)
                target[key_of(target, "HostIp") or "HostIp"] = "127.0.0.1"
                notes.append(
                    f"port {port} published on {host_ip or 'all interfaces'} rewritten to 127.0.0.1"
                )
                path.append(port)
    if changed is None:
        return ALLOW
    return rewrite("containers.published-ports", changed, *notes)


def _locate(body: Any, where: str, port: str, index: int) -> dict[str, Any]:
    holder = body[key_of(body, "HostConfig") or ""] if where else body
    bindings = holder[key_of(holder, "PortBindings") or ""]
    entry: dict[str, Any] = bindings[port][index]
    return entry


# --- limits ----------------------------------------------------------------------


def _effective_holder(body: Mapping[str, Any]) -> dict[str, Any]:
    """Where dockerd takes HostConfig from: "HostConfig" when set, else the top level."""
    key = key_of(body, "HostConfig")
    if key is not None and isinstance(body[key], dict):
        inner: dict[str, Any] = body[key]
        return inner
    assert isinstance(body, dict)  # top() and deepcopy hand out dicts
    return body


def check_pids_limit(subject: Subject) -> Decision:
    limit = subject.settings.pids
    for holder, where in resources(subject):
        value = integer(holder, "PidsLimit", where)
        if value is None:
            continue
        unlimited = value < 0 or (value == 0 and subject.route == "containers.update")
        if unlimited:
            return _pids(f"an unlimited PID count ({where}PidsLimit: {value})", limit.maximum)
        if limit.maximum is not None and value > limit.maximum:
            return _pids(f"a PID limit of {value} ({where}PidsLimit)", limit.maximum)
    if subject.route != "containers.create" or limit.default is None:
        return ALLOW
    body = top(subject)
    holder = _effective_holder(body)
    if integer(holder, "PidsLimit", "") not in (None, 0):
        return ALLOW
    changed = copy.deepcopy(body)
    target = _effective_holder(changed)
    target[key_of(target, "PidsLimit") or "PidsLimit"] = limit.default
    return rewrite(
        "containers.pids-limit", changed, f"PidsLimit {limit.default} injected (none was set)"
    )


def _pids(refused: str, maximum: int | None) -> Decision:
    bound = f" up to {maximum}" if maximum is not None else ""
    return deny(
        "containers.pids-limit",
        refused,
        f"Set a positive PidsLimit{bound}, or none to get the default",
    )


def check_memory_limit(subject: Subject) -> Decision:
    limit = subject.settings.memory
    return _resource_limit(
        subject, "containers.memory-limit", "Memory", limit.default, limit.maximum
    )


def check_cpu_limit(subject: Subject) -> Decision:
    limit = subject.settings.nano_cpus
    for holder, where in resources(subject):
        quota = integer(holder, "CpuQuota", where)
        period = integer(holder, "CpuPeriod", where) or 100_000
        if limit.maximum is None or quota is None or quota == 0:
            continue
        if quota < 0 or period <= 0 or quota * 1_000_000_000 // period > limit.maximum:
            return deny(
                "containers.cpu-limit",
                f"a CPU quota of {quota}/{period} ({where}CpuQuota)",
                f"Use at most {limit.maximum / 1e9:g} CPUs",
            )
    if subject.route == "containers.create":
        holder = _effective_holder(top(subject))
        if integer(holder, "CpuQuota", "") or integer(holder, "CpuPeriod", ""):
            # Limited by quota already; dockerd refuses NanoCpus next to it, so no injection.
            return _resource_limit(subject, "containers.cpu-limit", "NanoCpus", None, None)
    return _resource_limit(
        subject, "containers.cpu-limit", "NanoCpus", limit.default, limit.maximum
    )


def _resource_limit(
    subject: Subject, rule_id: str, name: str, default: int | None, maximum: int | None
) -> Decision:
    for holder, where in resources(subject):
        value = integer(holder, name, where)
        if maximum is None or value is None:
            continue
        if value < 0 or value > maximum:
            return deny(
                rule_id, f"{name} {value} ({where}{name})", f"Set {name} to at most {maximum}"
            )
    if subject.route != "containers.create":
        return ALLOW  # on update, an absent or zero field leaves the limit as it is
    body = top(subject)
    if integer(_effective_holder(body), name, ""):
        return ALLOW
    if default is None:
        if maximum is None:
            return ALLOW
        return deny(
            rule_id, f"a container without a {name} limit", f"Set {name} to at most {maximum}"
        )
    changed = copy.deepcopy(body)
    target = _effective_holder(changed)
    target[key_of(target, name) or name] = default
    return rewrite(rule_id, changed, f"{name} {default} injected (none was set)")


def check_private_cgroupns(subject: Subject) -> Decision:
    """Inject `CgroupnsMode: private` when the create leaves it to the daemon.

    On cgroup v1 hosts dockerd's default is the host's cgroup namespace, whatever
    the API version (verified on 20.10 with /v1.40 and /v1.41): the container then
    sees the host's cgroup tree and its own place in it. An explicit `private` is
    honoured at every version and is already the default on cgroup v2, so it is
    injected always. `host` itself is refused by containers.host-namespaces.
    """
    if subject.route != "containers.create":
        return ALLOW
    body = top(subject)
    # Only the HostConfig dockerd uses counts: a top-level CgroupnsMode next to a
    # "HostConfig" object is not merged into it (runconfig's getHostConfig).
    if text(_effective_holder(body), "CgroupnsMode", ""):
        return ALLOW  # set explicitly (host is refused by its own rule)
    changed = copy.deepcopy(body)
    target = _effective_holder(changed)
    target[key_of(target, "CgroupnsMode") or "CgroupnsMode"] = "private"
    return rewrite(
        "containers.cgroupns-private", changed, "CgroupnsMode private injected (none was set)"
    )


# --- restricted ------------------------------------------------------------------


def is_root_user(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("", "root") or (name.isdigit() and int(name) == 0)


def check_non_root_user(subject: Subject) -> Decision:
    if _is_service(subject):
        user = text(service_spec(subject) or {}, "User", "TaskTemplate.ContainerSpec.") or ""
    else:
        user = text(top(subject), "User", "") or ""
    if is_root_user(user):
        return deny(
            "containers.non-root-user",
            f"running as {user or 'the image default user'!r}",
            "Set User to a non-root user (e.g. --user 1000:1000)",
        )
    return ALLOW


def check_drop_all_caps(subject: Subject) -> Decision:
    drops = {cap_name(c) for _, caps in _cap_lists(subject, ("CapDrop",)) for c in caps}
    if "ALL" not in drops:
        return deny(
            "containers.drop-all-caps",
            "keeping Docker's default capabilities",
            "Drop all capabilities (--cap-drop ALL); only NET_BIND_SERVICE may be added back",
        )
    for where, caps in _cap_lists(subject, ("CapAdd", "Capabilities")):
        for raw in caps:
            if cap_name(raw) != "CAP_NET_BIND_SERVICE":
                return deny(
                    "containers.drop-all-caps",
                    f"adding the capability {raw!r} ({where})",
                    "Only NET_BIND_SERVICE may be added",
                )
    return ALLOW


def _parse_go_bool(value: str) -> bool | None:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def check_no_new_privileges(subject: Subject) -> Decision:
    if _is_service(subject):
        privileges = obj(service_spec(subject) or {}, "Privileges", "TaskTemplate.ContainerSpec.")
        if privileges is not None and flag(privileges, "NoNewPrivileges", ""):
            return ALLOW
        return _nnp()
    for holder, where in host_configs(subject):
        enabled = False
        for option in texts(holder, "SecurityOpt", where):
            if option == "no-new-privileges":
                enabled = True
            elif option.startswith(("no-new-privileges=", "no-new-privileges:")):
                enabled = bool(_parse_go_bool(option[len("no-new-privileges=") :]))
        if enabled:
            return ALLOW
    return _nnp()


def _nnp() -> Decision:
    return deny(
        "containers.no-new-privileges",
        "a container that may gain privileges through setuid binaries",
        "Set --security-opt no-new-privileges",
    )


_ALL_CONTAINER = CREATE | SERVICES

# --- resource bounds ---------------------------------------------------------------

#: Docker's defaults: a container gets CPU shares 1024 and block-I/O weight 500.
MAX_CPU_SHARES = 1024
MAX_BLKIO_WEIGHT = 500
#: /dev/shm above this is memory the container takes outside its own memory limit's
#: accounting on cgroup v1; 2 GiB covers browsers in CI (the usual reason to raise it).
MAX_SHM_SIZE = 2 * 1024**3
#: Per-limit ceilings: raising these above the host's takes from every other job.
#: Names not listed only lower what a process may use; rtprio/rttime/nice are refused
#: (real-time scheduling and negative nice values starve the host's own processes).
ULIMIT_CEILINGS = {"nofile": 1 << 20, "nproc": 1 << 16, "memlock": 64 * 1024**2}
ULIMITS_REFUSED = frozenset({"rtprio", "rttime", "nice"})


#: Block-I/O lists whose entries name a host device by path. dockerd stats each path on
#: the host when the container starts, and its error says whether the path exists: any
#: path would be a probe of the host's files. Only device nodes are named here.
BLKIO_DEVICE_LISTS = (
    "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
)  # fmt: skip
#: Under /dev but not device nodes (tmpfs folders, the process's descriptors).
_NOT_DEVICES = ("/dev/shm/", "/dev/mqueue/", "/dev/fd/", "/dev/pts/")


def device_path_problem(path: str) -> bool:
    """Whether a throttled device's path may name something other than a device node."""
    return (
        not path.startswith("/dev/")
        or posixpath.normpath(path) != path
        or path.startswith(_NOT_DEVICES)
    )


def _bound(field: str, value: int, bound: str) -> Decision:
    return deny(
        "containers.resource-bounds",
        f"{field}: {value} takes resources or protections from the host and other jobs ({bound})",
        "Leave it unset, or ask the operator for a policy file that disables this rule",
    )


def ulimit_problem(name: str, soft: int | None, hard: int | None) -> tuple[str, int, str] | None:
    """What is wrong with one ulimit under the container bounds, as (the part: "Name",
    "Soft" or "Hard", its value, the bound), or None; containers' ulimits and those of
    BuildKit build steps alike."""
    name = name.lower()
    if name in ULIMITS_REFUSED:
        return "Name", 0, f"the {name} limit is not allowed"
    ceiling = ULIMIT_CEILINGS.get(name)
    for label, value in (("Soft", soft), ("Hard", hard)):
        if value is None or ceiling is None:
            continue
        if value < 0 or value > ceiling:
            return label, value, f"at most {ceiling}"
    return None


def _ulimit_problem(entry: Mapping[str, Any], where: str) -> Decision:
    name = (text(entry, "Name", where) or "").lower()
    problem = ulimit_problem(name, integer(entry, "Soft", where), integer(entry, "Hard", where))
    if problem is None:
        return ALLOW
    part, value, bound = problem
    return _bound(f"{where}Name" if part == "Name" else f"{where}{part} of {name}", value, bound)


def check_resource_bounds(subject: Subject) -> Decision:
    """OomScoreAdj, OomKillDisable, CpuShares, BlkioWeight(Device), block-I/O device
    paths, real-time CPU, ShmSize and Ulimits, in both HostConfig holders (create) and
    in update bodies; `ulimits` of a classic build."""
    if subject.route == "build.build":
        raw = subject.request.param("ulimits")
        if not raw or raw.strip() in ("null", "[]"):
            return ALLOW
        try:
            entries = json.loads(raw)
        except ValueError:
            return _bound("ulimits", 0, "the build parameter is not a JSON list")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            return _bound("ulimits", 0, "the build parameter is not a JSON list of objects")
        for entry in entries:
            decision = _ulimit_problem(entry, "ulimits[].")
            if isinstance(decision, Deny):
                return decision
        return ALLOW
    for holder, where in resources(subject):
        oom = integer(holder, "OomScoreAdj", where)
        if oom is not None and oom < 0:
            return _bound(f"{where}OomScoreAdj", oom, "below 0 the host's OOM killer spares "
                          "the container and kills host processes instead")  # fmt: skip
        if flag(holder, "OomKillDisable", where):
            return _bound(f"{where}OomKillDisable", 1, "the kernel could not stop the container "
                          "when memory runs out")  # fmt: skip
        shares = integer(holder, "CpuShares", where)
        if shares is not None and shares > MAX_CPU_SHARES:
            return _bound(f"{where}CpuShares", shares, f"at most {MAX_CPU_SHARES}, the default")
        weight = integer(holder, "BlkioWeight", where)
        if weight is not None and weight > MAX_BLKIO_WEIGHT:
            return _bound(f"{where}BlkioWeight", weight, f"at most {MAX_BLKIO_WEIGHT}")
        for device in objects(holder, "BlkioWeightDevice", where):
            value = integer(device, "Weight", f"{where}BlkioWeightDevice[].")
            if value is not None and value > MAX_BLKIO_WEIGHT:
                return _bound(f"{where}BlkioWeightDevice[].Weight", value,
                              f"at most {MAX_BLKIO_WEIGHT}")  # fmt: skip
        for name in BLKIO_DEVICE_LISTS:
            for device in objects(holder, name, where):
                path = text(device, "Path", f"{where}{name}[].")
                if path is not None and device_path_problem(path):
                    return deny(
                        "containers.resource-bounds",
                        f"{where}{name}[].Path: {path!r} is not a device under /dev (dockerd "
                        "looks the path up on the host, which would tell whether it exists)",
                        "Name a block device, e.g. /dev/sda",
                    )
        for name in ("CpuRealtimePeriod", "CpuRealtimeRuntime"):
            value = integer(holder, name, where)
            if value:
                return _bound(f"{where}{name}", value, "real-time CPU time is not allowed")
        shm = integer(holder, "ShmSize", where)
        if shm is not None and shm > MAX_SHM_SIZE:
            return _bound(f"{where}ShmSize", shm, f"at most {MAX_SHM_SIZE} bytes")
        for entry in objects(holder, "Ulimits", where):
            decision = _ulimit_problem(entry, f"{where}Ulimits[].")
            if isinstance(decision, Deny):
                return decision
    return ALLOW


RULES: tuple[Rule, ...] = (
    Rule(
        "containers.privileged",
        "containers",
        CREATE,
        "A privileged container is root on the host: all devices and capabilities, no confinement.",
        check_privileged,
    ),
    Rule(
        "containers.host-namespaces",
        "containers",
        _ALL_CONTAINER,
        "Host network, PID, IPC, UTS, user or cgroup namespaces expose the host's processes "
        "and services.",
        check_host_namespaces,
    ),
    Rule(
        "containers.namespace-joins",
        "containers",
        CREATE,
        "Joining another container's namespaces reaches into workloads that are not yours.",
        check_namespace_joins,
        tags=frozenset({"joins"}),
    ),
    Rule(
        "containers.volumes-from",
        "containers",
        CREATE,
        "VolumesFrom mounts another container's data.",
        check_volumes_from,
        tags=frozenset({"joins"}),
    ),
    Rule(
        "containers.links",
        "containers",
        CREATE,
        "Links reach into other containers and read their environment.",
        check_links,
        tags=frozenset({"joins"}),
    ),
    Rule(
        "containers.capabilities",
        "containers",
        _ALL_CONTAINER,
        "Capabilities beyond Docker's defaults (SYS_ADMIN, NET_ADMIN, ...) open known escapes.",
        check_capabilities,
    ),
    Rule(
        "containers.devices",
        "containers",
        CREATE | UPDATE,
        "Host devices (disks, /dev/mem, GPUs) bypass every other isolation.",
        check_devices,
    ),
    Rule(
        "containers.confinement",
        "containers",
        _ALL_CONTAINER,
        "Seccomp, AppArmor, SELinux and masked /proc paths stop kernel-level escapes.",
        check_confinement,
    ),
    Rule(
        "containers.sysctls",
        "containers",
        _ALL_CONTAINER,
        "Only Kubernetes' safe, namespaced sysctls cannot change the host kernel.",
        check_sysctls,
    ),
    Rule(
        "containers.cgroup-parent",
        "containers",
        CREATE | UPDATE | frozenset({"build.build"}),
        "A chosen cgroup parent escapes the daemon's resource accounting and limits.",
        check_cgroup_parent,
        query_only=frozenset({"build.build"}),
    ),
    Rule(
        "containers.runtime",
        "containers",
        CREATE,
        "Another OCI runtime may run containers with weaker isolation.",
        check_runtime,
    ),
    Rule(
        "containers.log-driver",
        "containers",
        CREATE,
        "Log drivers such as syslog, fluentd or gelf make the daemon connect out.",
        check_log_driver,
    ),
    Rule(
        "containers.proc-workdir",
        "containers",
        _ALL_CONTAINER | IMAGE_CONFIG,
        "A working directory under /proc leaks host file descriptors (CVE-2024-21626).",
        check_proc_workdir,
        query_only=frozenset({"images.create"}),
    ),
    Rule(
        "containers.bind-mounts",
        "containers",
        _ALL_CONTAINER,
        "Bind mounts from outside the allowed folders hand out the host's files and the "
        "daemon socket.",
        check_bind_mounts,
    ),
    Rule(
        "containers.published-ports",
        "containers",
        CREATE,
        "Ports published on every interface expose CI services to the network; bound to "
        "127.0.0.1 instead.",
        check_published_ports,
    ),
    Rule(
        "containers.pids-limit",
        "containers",
        CREATE | UPDATE,
        "Without a PID limit one fork bomb takes the whole host down; a default is injected.",
        check_pids_limit,
    ),
    Rule(
        "containers.memory-limit",
        "containers",
        CREATE | UPDATE,
        "Memory above the policy's maximum starves other jobs (a default may be injected).",
        check_memory_limit,
    ),
    Rule(
        "containers.cpu-limit",
        "containers",
        CREATE | UPDATE,
        "CPUs above the policy's maximum starve other jobs (a default may be injected).",
        check_cpu_limit,
    ),
    Rule(
        "containers.resource-bounds",
        "containers",
        CREATE | UPDATE | frozenset({"build.build"}),
        "OomScoreAdj below 0 makes the host's OOM killer kill host processes instead of "
        "the container; OomKillDisable, CPU shares and block-I/O weights above the "
        "defaults, real-time CPU, huge /dev/shm and raised ulimits take from the host.",
        check_resource_bounds,
        query_only=frozenset({"build.build"}),
    ),
    Rule(
        "containers.cgroupns-private",
        "containers",
        CREATE,
        "On cgroup v1 hosts dockerd shares the host's cgroup namespace by default, "
        "showing the container the host's cgroup tree; a private one is injected.",
        check_private_cgroupns,
    ),
    Rule(
        "containers.non-root-user",
        "containers",
        _ALL_CONTAINER,
        "Root in a container is one kernel bug away from root on the host.",
        check_non_root_user,
        profiles=RESTRICTED,
    ),
    Rule(
        "containers.drop-all-caps",
        "containers",
        _ALL_CONTAINER,
        "Every capability kept is attack surface; only NET_BIND_SERVICE is needed by services.",
        check_drop_all_caps,
        profiles=RESTRICTED,
    ),
    Rule(
        "containers.no-new-privileges",
        "containers",
        _ALL_CONTAINER,
        "no-new-privileges stops setuid binaries from raising privileges.",
        check_no_new_privileges,
        profiles=RESTRICTED,
    ),
    Rule(
        "containers.no-binds",
        "containers",
        _ALL_CONTAINER,
        "The restricted profile allows no host files in containers at all.",
        check_no_binds,
        profiles=RESTRICTED,
    ),
)
