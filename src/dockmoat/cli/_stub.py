"""What a contract command answers until its implementation lands."""

from __future__ import annotations

from dockmoat.errors import NotAvailable


def not_yet(what: str, issue: str) -> NotAvailable:
    return NotAvailable(f"{what} is not available yet ({issue}); nothing was done")
