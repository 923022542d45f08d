"""Dynamic batching: requests that arrive together are predicted together.

Each request's rows wait in one queue. The batcher takes the first waiting request, then keeps taking requests
until the batch holds ``max_batch_size`` rows or ``timeout_ms`` have passed since it started collecting, and runs
the model once on all of them in a worker thread (the event loop keeps accepting requests meanwhile). The wait is
adaptive: after a batch that held one request alone, the next batch takes what is queued and runs at once, so a
lone client does not pay the wait on every request; once requests arrive together again (a batch holds two or more),
batches wait for company again. The first batch waits. Each request
gets its own rows back, in order; a batch that fails fails only its own requests. ``max_batch_size=1`` predicts each
request alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Rows = list[dict[str, Any]]


class Batcher:
    """Collects requests' rows into batches for ``predict`` (a function from rows to one result per row)."""

    def __init__(self, predict: Callable[[Rows], Rows], max_batch_size: int, timeout_ms: float) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.timeout = timeout_ms / 1000
        self.queue: asyncio.Queue[tuple[Rows, asyncio.Future[Rows]]] = asyncio.Queue()
        # One thread: the model runs one batch at a time, and torch uses its own threads within it.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftlit-predict")
        self.task: asyncio.Task[None] | None = None
        self.arrived = asyncio.Event()  # set when a request is queued
        self.held: tuple[Rows, asyncio.Future[Rows]] | None = None  # taken, but left for the next batch
        self.forming: list[tuple[Rows, asyncio.Future[Rows]]] = []  # the batch being collected
        self.batches = 0  # batches run so far (the tests and /ready report it)
        self.shared = True  # whether the last batch held more than one request: only then does the next one wait
        # Why each batch so far stopped collecting requests: "full" (max_batch_size rows, or the next request would
        # not fit), "timeout" (timeout_ms passed with room left) or "no wait" (after a batch that held one request
        # alone: what was queued, at once). What the tests observe instead of timings.
        self.closed: Counter[str] = Counter()

    @property
    def waiting(self) -> int:
        """Requests waiting for their batch to run: queued, or in the batch being collected."""
        return self.queue.qsize() + (self.held is not None) + len(self.forming)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop after the batch in progress; requests still queued fail (the server stops taking them first)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        waiting = [self.queue.get_nowait() for _ in range(self.queue.qsize())] + ([self.held] if self.held else [])
        for _, future in waiting:
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self.executor.shutdown(wait=True)

    async def submit(self, rows: Rows) -> Rows:
        """The predictions of ``rows``, once the batch they join has run."""
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((rows, future))
        self.arrived.set()
        return await future

    async def _collect(self) -> list[tuple[Rows, asyncio.Future[Rows]]]:
        if self.held is not None:
            first, self.held = self.held, None
        else:
            first = await self.queue.get()
        batch = self.forming = [first]
        size = len(batch[0][0])
        deadline = time.monotonic() + (self.timeout if self.shared else 0.0)
        reason = "full"
        while size < self.max_batch_size:
            if self.queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    reason = "timeout" if self.shared else "no wait"
                    break
                # Requests are only ever taken with get_nowait: a timeout here cannot lose one.
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), left)
                except asyncio.TimeoutError:  # noqa: UP041 - not the builtin before Python 3.11
                    reason = "timeout"
                    break
                continue
            item = self.queue.get_nowait()
            if size + len(item[0]) > self.max_batch_size:
                self.held = item  # too big for this batch: first in the next one
                break
            batch.append(item)
            size += len(item[0])
        self.closed[reason] += 1
        self.shared = len(batch) > 1
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self.forming = []
            live = [(rows, future) for rows, future in batch if not future.done()]  # a cancelled client's are skipped
            if not live:
                continue
            rows = [row for request, _ in live for row in request]
            try:
                results = await loop.run_in_executor(self.executor, self.predict, rows)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error, the batcher goes on
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)
                continue
            finally:
                self.batches += 1
            start = 0
            for request, future in live:
                if not future.done():
                    future.set_result(results[start : start + len(request)])
                start += len(request)
