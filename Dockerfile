# dockmoat as a container image: the guarded socket (`dockmoat serve`), the DinD
# manager (`dockmoat dind pool`) and the CI tools, on Debian with the locked
# dependencies (uv.lock, exported to deploy/image/requirements.txt with hashes).
#
#   make image                      offline: makes the base image if missing
#                                   (scripts/base-image), fetches the locked wheels
#                                   into deploy/image/wheels/, builds, tags
#                                   dockmoat/dockmoat:<version>
#   docker build -t dockmoat/dockmoat:0.1.0 .     with PyPI reachable
#
# Root or not (docs/deploy.md): the entrypoint starts as root only to hand serve's
# folders to the `dockmoat` user (uid 10001) and pick up the Docker socket's group,
# then runs dockmoat as that user with no capabilities and no_new_privs. Only bind
# pins need root (DOCKMOAT_USER=root); `--user 10001:10001 --group-add <gid>` never
# uses root at all.

FROM debian:bookworm-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# --no-index (make image): only the wheels in deploy/image/wheels/, no network.
ARG PIP_INDEX_OPTION=
COPY deploy/image/requirements.txt /build/requirements.txt
COPY deploy/image/wheels/ /build/wheels/
# Binary wheels only: no compiler in either stage; hashes from uv.lock.
RUN python3 -m venv /opt/dockmoat \
 && /opt/dockmoat/bin/pip install --no-cache-dir --disable-pip-version-check $PIP_INDEX_OPTION \
      --find-links /build/wheels --only-binary=:all: --require-hashes -r /build/requirements.txt
COPY pyproject.toml README.md hatch_build.py /build/src/
COPY src/ /build/src/src/
ARG VCS_REF=unknown
ARG BUILD_DATE=
RUN DOCKMOAT_BUILD_REF="$VCS_REF" DOCKMOAT_BUILD_DATE="$BUILD_DATE" DOCKMOAT_BUILD_SOURCE=image \
    /opt/dockmoat/bin/pip install --no-cache-dir --disable-pip-version-check $PIP_INDEX_OPTION \
      --find-links /build/wheels --no-deps /build/src \
 && /opt/dockmoat/bin/pip uninstall --yes --quiet pip \
 && /opt/dockmoat/bin/python3 -m compileall -q /opt/dockmoat/lib

# dockmoat/dind:<version> (`--target dind`): a nested dockerd (Debian's docker.io)
# that behaves like the official docker:dind for compose files written for it:
# DOCKER_TLS_CERTDIR=/certs makes its certificates (by dockmoat, in milliseconds) and
# serves TLS on 2376. Needs privileged mode, as every classic DinD does.
FROM debian:bookworm-slim AS dind
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker.io python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/share/doc/* /usr/share/man/*
COPY --from=build /opt/dockmoat /opt/dockmoat
COPY deploy/image/dind-entrypoint.sh /usr/local/bin/dockerd-entrypoint.sh
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="dockmoat-dind" \
      org.opencontainers.image.description="Docker-in-Docker with TLS made by dockmoat; the official docker:dind's DOCKER_TLS_CERTDIR layout." \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="debian:bookworm-slim"
VOLUME /var/lib/docker
EXPOSE 2375 2376
# python3 is dockmoat's (the readiness probe: python3 -m dockmoat.deploy.health).
ENV DOCKER_TLS_CERTDIR=/certs \
    PATH=/opt/dockmoat/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/dockerd-entrypoint.sh"]
CMD []

# dockmoat/docker-cli:<version> (`--target docker-cli`): a job image with sh and the
# docker CLI, for the generated files' runner on machines with no registry.
FROM debian:bookworm-slim AS docker-cli
COPY --from=dind /usr/bin/docker /usr/local/bin/docker
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="dockmoat-docker-cli" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.base.name="debian:bookworm-slim"
CMD ["sh"]

# dockmoat/dockmoat:<version>: the guard (the default target, last).
FROM debian:bookworm-slim AS guard
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/share/doc/* /usr/share/man/* \
 && groupadd --system --gid 10001 dockmoat \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/dockmoat \
      --shell /usr/sbin/nologin dockmoat \
 && install -d -o 10001 -g 10001 -m 0755 /run/dockmoat /run/dockmoat/guarded /var/lib/dockmoat
COPY --from=build /opt/dockmoat /opt/dockmoat
COPY deploy/image/entrypoint.sh /usr/local/bin/dockmoat-entrypoint
ENV PATH=/opt/dockmoat/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1

ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=
LABEL org.opencontainers.image.title="dockmoat" \
      org.opencontainers.image.description="Docker for CI jobs without handing them the host: a guarded Docker socket, per-job tenancy, fast DinD." \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$VCS_REF" \
      org.opencontainers.image.created="$BUILD_DATE" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="https://github.com/dockmoat/dockmoat/blob/main/docs/deploy.md" \
      org.opencontainers.image.source="https://github.com/dockmoat/dockmoat" \
      org.opencontainers.image.base.name="debian:bookworm-slim"

# The guard listens in /run/dockmoat/guarded/ (share that folder as a volume, never
# /run/dockmoat, which holds the root-only control socket). Health: GET /_ping
# through serve's own listener (docs/deploy.md).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/opt/dockmoat/bin/python3", "-m", "dockmoat.deploy.health"]
ENTRYPOINT ["/usr/local/bin/dockmoat-entrypoint"]
CMD ["serve", "--listen", "unix:///run/dockmoat/guarded/docker.sock"]
