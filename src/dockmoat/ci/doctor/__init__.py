"""`dockmoat doctor`: the seed's troubleshooting section as checks.

Pure checks (facts in, findings out) live in `checks_*` modules; `probe` and
`gather` are the only modules doing I/O (sockets, files, the engine).
"""
