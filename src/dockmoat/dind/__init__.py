"""Nested Docker daemons: certificates, lifecycle, warm pools, layer caches."""
