"""Read provider pages ahead in a thread, so HTTP waits overlap rules and database work.

Order is kept and nothing is skipped: the consumer sees exactly the producer's sequence, then
the producer's exception if it raised. At most `depth` pages wait in memory (the engine reads a
write batch ahead, see `prefetch_depth`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


MAX_DEPTH = 12


def prefetch_depth(batch_size: int, page_size: int) -> int:
    """Pages to read ahead: a write batch's worth (at most `MAX_DEPTH`), at least 2.

    While a batch is validated and written the reader keeps fetching; with only two slots it
    stalled after two pages and the next batch then waited for the rest one request at a time.
    """
    return max(2, min(MAX_DEPTH, -(-batch_size // max(1, page_size))))


def prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(_Failure(exc))

    worker = threading.Thread(target=produce, name="esm-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        worker.join()
