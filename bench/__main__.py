"""Run every benchmark module of this package (each defines `main(argv) -> int`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    only = sys.argv[1:]
    status = 0
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("_") or (only and info.name not in only):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        run = getattr(module, "main", None)
        if run is None:
            continue
        print(f"== bench.{info.name}", flush=True)
        status |= int(run([]) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
