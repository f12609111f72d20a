#!/bin/sh
# The dockmoat image's entrypoint (docs/deploy.md).
#
#   (no arguments) | serve ... | dind ... | job ... | audit ... | <any dockmoat command>
#   anything else (sh, python3, ...) is run as given.
#
# Started as root (the image's default), it prepares what serve writes to (the folders
# of its unix sockets, /run/dockmoat, /var/lib/dockmoat) for the `dockmoat` user, then
# runs dockmoat as that user with the group of the upstream Docker socket, no
# capabilities and no_new_privs. DOCKMOAT_USER=root keeps root: needed only for bind
# pins (they mount in dockerd's mount namespace: with pid: host and CAP_SYS_ADMIN).
# Started as another user (`--user 10001:10001 --group-add <docker gid>`) it runs
# dockmoat as that user directly.
set -eu

[ $# -gt 0 ] || set -- serve
case "$1" in
    -*|serve|policy|job|dind|run|audit|generate|doctor) set -- dockmoat "$@" ;;
esac

if [ "$1" != dockmoat ] || [ "$(id -u)" != 0 ] || [ "${DOCKMOAT_USER:-dockmoat}" = root ]; then
    exec "$@"
fi

user=${DOCKMOAT_USER:-dockmoat}
uid=$(id -u "$user")
gid=$(id -g "$user")

# The Docker socket serve forwards to (or dind manages daemons through).
upstream=${DOCKER_HOST:-unix:///var/run/docker.sock}
groups=$gid
case "$upstream" in
    unix://*)
        sock=${upstream#unix://}
        if [ -S "$sock" ]; then
            groups="$gid,$(stat -c %g "$sock")"
        fi
        ;;
esac

# Folders of unix sockets named on the command line, given to the service user.
previous=
for arg in "$@"; do
    case "$previous:$arg" in
        --listen:unix://*|--control-socket:*|--jobs-dir:*|--state-db:*|--pin-dir:*)
            path=${arg#unix://}
            case "$previous" in --jobs-dir|--pin-dir) dir=$path ;; *) dir=$(dirname "$path") ;; esac
            mkdir -p "$dir" && chown "$uid:$gid" "$dir"
            ;;
    esac
    case "$arg" in
        --listen=unix://*) dir=$(dirname "${arg#--listen=unix://}"); mkdir -p "$dir" && chown "$uid:$gid" "$dir" ;;
    esac
    previous=$arg
done
for dir in /run/dockmoat /var/lib/dockmoat; do
    mkdir -p "$dir" && chown "$uid:$gid" "$dir"
done

exec setpriv --reuid="$uid" --regid="$gid" --groups="$groups" \
    --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
