#!/bin/sh
# Entrypoint of the dockmoat/dind image: a nested dockerd that behaves like the
# official docker:dind one for compose files written for it (docs/deploy.md):
#   DOCKER_TLS_CERTDIR non-empty (e.g. /certs): certificates in $DOCKER_TLS_CERTDIR/
#     {ca,server,client} (made by dockmoat in milliseconds), dockerd on tcp 2376 with
#     TLS and client certificates required, plus its unix socket;
#   DOCKER_TLS_CERTDIR empty: plain TCP on 2375 (development only).
# Arguments starting with - are added to dockerd's; any other command runs as given.
set -eu

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ] && [ "$1" != dockerd ]; then
    exec "$@"
fi
[ "${1:-}" != dockerd ] || shift

# securityfs for runc's AppArmor checks; cgroup v2: move to a leaf and delegate every
# controller to the children the nested daemon makes.
if [ -d /sys/kernel/security ] && ! grep -qs ' /sys/kernel/security ' /proc/mounts; then
    mount -t securityfs none /sys/kernel/security 2>/dev/null || true
fi
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
    sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \
        >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
fi
rm -f /var/run/docker.pid /run/docker/containerd/containerd.pid 2>/dev/null || true

certdir=${DOCKER_TLS_CERTDIR-}
if [ -n "$certdir" ]; then
    # shellcheck disable=SC2086  # DOCKER_TLS_SAN is a space-separated list, as upstream
    /opt/dockmoat/bin/python3 -m dockmoat.deploy.dind_certs "$certdir" ${DOCKER_TLS_SAN:-}
    exec dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2376 \
        --tlsverify --tlscacert "$certdir/server/ca.pem" \
        --tlscert "$certdir/server/cert.pem" --tlskey "$certdir/server/key.pem" "$@"
fi
exec dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2375 --tls=false "$@"
