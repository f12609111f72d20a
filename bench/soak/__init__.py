"""Soak suite (issue 23): `dockmoat serve` held under load, faults and hostile clients.

Not part of `make bench` or `make test` (this package has no `main`): run it with
`make soak` or `python -m bench.soak --help`. Every scenario is bounded in count and
time; the engine behind the guard is a private dockerd the suite starts in its own
network namespace (own socket, data root, exec root), so faults never touch the
host's engine. See docs/soak.md.
"""
