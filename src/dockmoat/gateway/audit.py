"""The audit log: one JSON object per request, written off the relay's path.

Entries go into a bounded in-memory queue; a background task writes them in
batches from a worker thread, so a slow disk never stalls a request. If the
queue is full (the disk cannot keep up), entries are counted as dropped and
the count is written with the next entry that fits, so a gap is never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

QUEUE_LIMIT = 10_000
# One encoder for every entry (json.dumps with arguments builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class AuditLog:
    def __init__(self, target: str | None) -> None:
        self._target = target
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_LIMIT)
        self._dropped = 0
        self._file: TextIO | None = None
        self._task: asyncio.Task[None] | None = None
        self._stamp: tuple[int, str] = (0, "")

    def stamp(self) -> str:
        """The entry's time (whole seconds, UTC), formatted once per second."""
        second = int(time.time())
        if self._stamp[0] != second:
            self._stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
        return self._stamp[1]

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def open(self) -> None:
        """Open the file now (start-up), so a bad path fails loudly before serving."""
        if self._target is None:
            return
        if self._target == "-":
            self._file = sys.stdout
        else:
            path = Path(self._target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1 << 16)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    def record(self, entry: dict[str, Any]) -> None:
        if self._target is None:
            return
        if self._dropped and not self._queue.full():
            entry = {**entry, "audit_dropped_before": self._dropped}
            self._dropped = 0
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self._dropped += 1

    async def _run(self) -> None:
        stop = False
        while not stop:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 1000:
                batch.append(self._queue.get_nowait())
            stop = None in batch
            entries = [e for e in batch if e is not None]
            text = "".join(_ENCODER.encode(e) + "\n" for e in entries)
            if text:
                await asyncio.to_thread(self._write, text)

    def _write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text)
            self._file.flush()

    async def close(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=10)
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
