"""The guarded socket: listeners, HTTP relay and the upstream connection pool."""
