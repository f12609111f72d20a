"""`dockmoat run`: a CI job in a container with Docker wired in (guarded, dind or socket).

`options` and `plan` are pure; `modes` (wiring per mode), `job` (the job
container) and `session` (the whole run with clean-up and timing) do the I/O.
"""
