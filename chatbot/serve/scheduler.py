"""One engine serves requests in turn: a single worker thread runs them one after another (the
engine and its KV cache are not shared between two replies at once), and at most `queue_size`
wait behind the one running. Beyond that a request is refused at once (429), not queued without
end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class QueueFull(Exception):
    pass


class Scheduler:
    def __init__(self, queue_size: int):
        self.queue_size = queue_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._lock = threading.Lock()
        self._pending = 0  # running + waiting

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, job: Callable[[], object]) -> Future:
        with self._lock:
            if self._pending >= self.queue_size + 1:
                raise QueueFull(f"the server is busy: {self._pending} requests running or waiting, try again later")
            self._pending += 1
        future = self._executor.submit(job)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
