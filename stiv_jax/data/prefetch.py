"""Batches made ready on a background thread: the trainer only receives finished arrays.

Shapes: whatever `fn` makes of one item of `source` (the trainer: host batch of
`stiv_jax.data.schema` -> global model batch, captions encoded by the text encoder).

  feed = Prefetch(host_data, fn, ahead=2)
  batch = next(feed)          # fn(next(host_data)), computed while the last step ran
  feed.get_state()            # the source's state after the last batch taken (bytes)

One daemon thread draws `next(source)`, applies `fn` and records `source.get_state()` right
after the draw, up to `ahead` batches ahead of the consumer. Caption embedding (MiniLM on
mostly unique ShapesBench captions, 4–5% of an S step) and latent encoding then overlap the
previous step's XLA program instead of sitting between steps.

Exact resume: `get_state()` is the state recorded with the last batch the consumer took, so
a checkpoint never counts the batches still queued; `set_state()` stops the thread, drops
them and restarts from the given state, so the batch sequence after a resume is the one an
unbroken run sees (`fn` must be deterministic). An error in the thread re-raises in the
consumer at the batch that failed, with its traceback.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_POLL_S = 0.1  # how often a blocked producer checks for close()


class Prefetch:
    """`fn(next(source))` up to `ahead` items ahead on one thread; Grain-style state (bytes).

    `source` has `__next__`, `get_state()` and `set_state(state)` (e.g.
    `stiv_jax.parallel.host_data.HostData`). The thread starts at the first `next()`.
    """

    def __init__(self, source: Any, fn: Callable[[Any], Any], *, ahead: int = 2):
        if int(ahead) < 1:
            raise ValueError(f"ahead={ahead} must be >= 1 (batches prepared ahead of the trainer)")
        self.source, self.fn, self.ahead = source, fn, int(ahead)
        self._state = source.get_state()  # after the last item taken (none yet)
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            self.start_prefetch()
        item, state, error = self._queue.get()
        if error is not None:
            self._queue.put((None, None, error))  # every later call fails the same way
            raise error
        self._state = state
        return item

    def _work(self, q: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                item = self.fn(next(self.source))
                entry = (item, self.source.get_state(), None)
            except BaseException as e:  # StopIteration included: the consumer re-raises it
                entry = (None, None, e)
            while not stop.is_set():
                try:
                    q.put(entry, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if entry[2] is not None:
                return

    def start_prefetch(self) -> None:
        """Starts the thread (Grain's checkpoint handler calls this after `set_state`)."""
        if self._thread is not None:
            return
        self._queue, self._stop = queue.Queue(maxsize=self.ahead), threading.Event()
        self._thread = threading.Thread(
            target=self._work, args=(self._queue, self._stop), name="prefetch", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stops the thread and drops the queued items (the source is then ahead of
        `get_state()`; `set_state` puts it back)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._queue = self._stop = self._thread = None

    def get_state(self) -> Any:
        return self._state

    def set_state(self, state: Any) -> None:
        self.close()
        self.source.set_state(state)
        self._state = self.source.get_state()
