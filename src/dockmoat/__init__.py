"""dockmoat: Docker for CI jobs without handing them the host."""

__version__ = "0.1.0"
