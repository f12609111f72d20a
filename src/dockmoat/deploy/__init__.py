"""Deploying dockmoat: the container image's helpers (health check, private-network
listeners) and the deployment files `dockmoat generate` prints (docs/deploy.md)."""
