#!/bin/sh
# The seed's complete CI pipeline: build the image, run its tests in it, tag it for a registry.
# It only uses `docker` and DOCKER_HOST & co., so it runs unchanged in every `dockmoat run` mode:
#   dockmoat run --mode guarded|dind|socket --workspace examples/pipeline -- sh pipeline.sh
set -eu

IMAGE="${IMAGE:-myapp:ci}"
REGISTRY_IMAGE="${REGISTRY_IMAGE:-registry.example.com/myapp:ci}"
BASE_IMAGE="${BASE_IMAGE:-dockmoat-test/busybox:latest}"

echo "== docker: ${DOCKER_HOST:-default socket}"
docker version --format 'client {{.Client.Version}}, server {{.Server.Version}}'

echo "== build $IMAGE"
docker build --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE" .

echo "== test"
docker run --rm "$IMAGE" sh /app/test.sh

echo "== tag $REGISTRY_IMAGE"
docker tag "$IMAGE" "$REGISTRY_IMAGE"
# No registry here; a real pipeline would now `docker push "$REGISTRY_IMAGE"`.
echo "pipeline ok: $REGISTRY_IMAGE"
