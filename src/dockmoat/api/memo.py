"""Memoisation with a memory bound: `lru_cache`, for short keys only.

The hot path memoises pure functions of what clients send (paths, query values,
JSON field names), because the same few come again and again. Those keys can be
as long as the head and body limits allow; an `lru_cache` of them would let one
client hold 4096 x 64 KiB of the gateway's memory. Short keys are memoised, long
ones computed each time. Functions called for every request check the length at the
call site and call their `lru_cache` directly (`LONGEST`): a wrapper's Python call
costs as much as the look-up itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from functools import lru_cache, wraps
from typing import TypeVar, cast

F = TypeVar("F", bound=Callable[..., object])

#: The longest key memoised (characters). Paths, names and values CI clients send
#: again and again are far shorter.
LONGEST = 1024


def memo_short(maxsize: int, longest: int = LONGEST) -> Callable[[F], F]:
    """`lru_cache(maxsize)` for calls whose last argument is None or at most `longest` long.

    At most `maxsize` x `longest` characters of keys (and their results) are held.
    """

    def wrap(fn: F) -> F:
        cached = lru_cache(maxsize=maxsize)(fn)

        @wraps(fn)
        def call(*args: object) -> object:
            key = cast(Sized | None, args[-1])
            return cached(*args) if key is None or len(key) <= longest else fn(*args)

        return cast(F, call)

    return wrap
