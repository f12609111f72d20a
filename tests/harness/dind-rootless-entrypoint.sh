#!/bin/sh
# Entrypoint of dockmoat-test/dind-rootless: a nested dockerd under rootlesskit, as the
# unprivileged user the image runs as. `dockerd ARGS` runs as Debian's
# `dockerd-rootless.sh ARGS` (rootlesskit with slirp4netns, the builtin port driver,
# and DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS, e.g. `-p 0.0.0.0:2376:2376/tcp` to publish
# the daemon's TLS port on the container's own address); anything else is exec'd.
set -eu

if [ "$(id -u)" = 0 ]; then
	echo "dind-rootless: runs as the image's rootless user, not root" >&2
	exit 1
fi
: "${HOME:=/home/rootless}"
: "${XDG_RUNTIME_DIR:=/run/user/$(id -u)}"
export HOME XDG_RUNTIME_DIR
# A state folder left by an earlier run of this container would confuse rootlesskit.
rm -rf "$XDG_RUNTIME_DIR"
mkdir -p "$XDG_RUNTIME_DIR" "$HOME/.local/share/docker"
chmod 0700 "$XDG_RUNTIME_DIR"

if [ "${1:-}" = dockerd ]; then
	shift
	set -- dockerd-rootless.sh "$@"
fi
exec "$@"
