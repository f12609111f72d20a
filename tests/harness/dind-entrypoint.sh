#!/bin/sh
# Entrypoint of dockmoat-test/dind: prepare the container for a nested dockerd,
# then exec the given command (default CMD: dockerd).
set -eu

# Scratch space the daemon needs; tolerate a read-only root (volumes/tmpfs may cover these).
mkdir -p /run /tmp /var/run /var/lib/docker 2>/dev/null || true
chmod 1777 /tmp 2>/dev/null || true

# AppArmor/LSM checks in dockerd and runc read securityfs.
if [ -d /sys/kernel/security ] && ! grep -qs ' /sys/kernel/security ' /proc/mounts; then
	mount -t securityfs none /sys/kernel/security 2>/dev/null || true
fi

# cgroup v2: a process may not sit in a cgroup whose subtree controllers are
# enabled, so move ourselves to a leaf ("init") and delegate every controller
# to the children the nested daemon will create. cgroup v1 needs nothing.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
	mkdir -p /sys/fs/cgroup/init
	xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
	sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \
		>/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
fi

# A pid file left by a previous run of this container would stop dockerd.
rm -f /var/run/docker.pid /run/docker/containerd/containerd.pid 2>/dev/null || true

exec "$@"
