"""Shared by the deploy engine tests: where the repository is, the images' names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
VERSION_TAG = "0.1.0"


@dataclass(frozen=True)
class Images:
    guard: str
    dind: str
    cli: str
