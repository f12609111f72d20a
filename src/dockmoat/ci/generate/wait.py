"""The bounded wait for a Docker daemon that every generated job runs before using it."""

from __future__ import annotations


def wait_lines(seconds: int) -> list[str]:
    """Shell lines (POSIX sh, busybox included) polling `docker info` for `seconds` at most.

    Why poll: a daemon container that has started is not a daemon that answers; DinD
    also writes its TLS certificates first. Why bounded: a daemon that never comes up
    must fail the job with a clear message, not hang it until the CI timeout.
    """
    return [
        "i=0",
        "until docker info >/dev/null 2>&1; do",
        f'  i=$((i + 1)); if [ "$i" -ge {seconds} ]; then',
        f'    echo "Docker daemon at $DOCKER_HOST not ready after {seconds}s" >&2',
        "    docker info; exit 1",
        "  fi",
        "  sleep 1",
        "done",
    ]


def pipeline_lines(image: str, test_command: str) -> list[str]:
    """The seed's pipeline: build an image, run its tests in it, tag it for the registry."""
    return [
        f'docker build -t "{image}" .',
        f'docker run --rm "{image}" {test_command}',
    ]
