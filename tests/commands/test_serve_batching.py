"""The dynamic batcher on its own, with a plain function as the model: which requests share a batch, and why each
batch closed (``Batcher.closed``).

Nothing here depends on how fast the machine is. Each step waits for the batcher's own state (a request taken and
waiting for company, a batch run), never for a time; the batches close by being full, by the adaptive no-wait, or,
in the one test of the timeout, by that timeout with no other request anywhere. ``CAP`` only turns a batcher that is
stuck (a batch that waits when it should not) into a failure instead of a hang.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable

from ftlit.serve.batching import Batcher, Rows

CAP = 60.0  # seconds: how long a step may take before the batcher counts as stuck; far above any real step
NEVER = 3_600_000.0  # ms: a batch timeout no test reaches; a batch that waited for it would hit CAP first


def record(batches: list[list[str]], gate: Callable[[], None] = lambda: None):
    """A model that answers each row with its own text and records the batches it was given (after ``gate``)."""

    def predict(rows: Rows) -> Rows:
        gate()
        batches.append([row["text"] for row in rows])
        return [{"echo": row["text"]} for row in rows]

    return predict


def submit(batcher: Batcher, *texts: str) -> asyncio.Future[Rows]:
    """One request of these rows, queued now."""
    return asyncio.ensure_future(batcher.submit([{"text": t} for t in texts]))


def collecting(batcher: Batcher) -> list[str]:
    """The first rows of the requests in the batch being collected: seen from outside the batcher, non-empty only
    while it waits for company (it collects without pausing otherwise)."""
    return [rows[0]["text"] for rows, _ in batcher.forming]


async def until(condition: Callable[[], object], what: str) -> None:
    """Let the batcher run until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + CAP
    while not condition():
        assert loop.time() < end, f"the batcher is stuck before {what}"
        await asyncio.sleep(0.001)


async def answered(*requests: Awaitable[Rows]) -> list[Rows]:
    return await asyncio.wait_for(asyncio.gather(*requests), CAP)


async def taken(batcher: Batcher, batches: list[list[str]], text: str) -> tuple[asyncio.Future[Rows], list[str]]:
    """Submit a one-row request and let the batcher take it: the request, and the requests its batch waits for company
    with (empty: it ran at once)."""
    n = len(batches)
    request = submit(batcher, text)
    await until(lambda: collecting(batcher) or len(batches) > n, f"{text} is taken")
    return request, collecting(batcher)


def echoes(answers: list[Rows]) -> list[str]:
    return [row["echo"] for rows in answers for row in rows]


def test_the_wait_is_kept_while_requests_share_batches_and_dropped_after_a_lone_one():
    """A batch waits for company while requests come together (the first one too); after a batch that held one
    request alone, the next runs at once with what is queued (a lone client pays no wait per request), until
    requests share a batch again. Batches of 2 rows and a timeout never reached: every wait ends by a batch filling."""
    batches: list[list[str]] = []

    async def scenario() -> list[str]:
        batcher = Batcher(record(batches), max_batch_size=2, timeout_ms=NEVER)
        batcher.start()
        try:
            echoed = []
            for first, second in ("ab", "cd"):  # the first batch waits, and after a shared batch the next one does
                request, waiting_with = await taken(batcher, batches, first)
                assert waiting_with == [first] and batcher.waiting == 1  # taken, counted as waiting, not run
                echoed += echoes(await answered(request, submit(batcher, second)))
                assert batches[-1] == [first, second] and batcher.waiting == 0
            assert batcher.closed == Counter(full=2)
            # A request that fills a batch alone is a lone batch: after it f runs at once, and after f, g too.
            echoed += echoes(await answered(submit(batcher, "e1", "e2")))
            for text in "fg":
                request, waiting_with = await taken(batcher, batches, text)
                assert waiting_with == [] and batches[-1] == [text]
                echoed += echoes(await answered(request))
            assert batcher.closed == Counter({"full": 3, "no wait": 2})
            # Requests queued together share a batch, wait or not; after that shared batch, j waits again.
            echoed += echoes(await answered(*(batcher.submit([{"text": t}]) for t in "hi")))
            request, waiting_with = await taken(batcher, batches, "j")
            assert waiting_with == ["j"]
            echoed += echoes(await answered(request, submit(batcher, "k")))
            assert batcher.closed == Counter({"full": 5, "no wait": 2})  # never the timeout
            return echoed
        finally:
            await batcher.stop()

    echoed = asyncio.run(scenario())
    assert batches == [["a", "b"], ["c", "d"], ["e1", "e2"], ["f"], ["g"], ["h", "i"], ["j", "k"]]
    assert echoed == ["a", "b", "c", "d", "e1", "e2", "f", "g", "h", "i", "j", "k"]  # each request got its own rows


def test_a_lone_request_runs_after_the_timeout_and_the_next_one_at_once():
    """Nothing else ever arrives: the timeout is the only way the first batch can close, however slow the machine."""
    batches: list[list[str]] = []

    async def scenario() -> None:
        batcher = Batcher(record(batches), max_batch_size=8, timeout_ms=50)
        batcher.start()
        try:
            assert await answered(submit(batcher, "a")) == [[{"echo": "a"}]]
            assert batcher.closed == Counter(timeout=1) and batcher.waiting == 0
            assert await answered(submit(batcher, "b")) == [[{"echo": "b"}]]  # after a lone batch: no wait
            assert batcher.closed == Counter({"timeout": 1, "no wait": 1})
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert batches == [["a"], ["b"]]


def test_requests_that_arrive_while_a_batch_runs_wait_and_share_the_next():
    batches: list[list[str]] = []
    running, release = threading.Event(), threading.Event()

    def gate() -> None:
        running.set()
        assert release.wait(CAP), "never released"

    async def scenario() -> None:
        batcher = Batcher(record(batches, gate), max_batch_size=3, timeout_ms=NEVER)
        batcher.start()
        try:
            first = submit(batcher, "a1", "a2", "a3")  # fills a batch alone
            await until(running.is_set, "the first batch runs")
            later = [submit(batcher, t) for t in "bcd"]
            await until(lambda: batcher.queue.qsize() == 3, "b, c and d are queued")
            assert batcher.waiting == 3  # queued behind the running batch, each counted
            release.set()
            assert echoes(await answered(first, *later)) == ["a1", "a2", "a3", "b", "c", "d"]
            assert batcher.closed == Counter(full=2) and batcher.waiting == 0
        finally:
            release.set()
            await batcher.stop()

    asyncio.run(scenario())
    assert batches == [["a1", "a2", "a3"], ["b", "c", "d"]]


def test_a_request_that_would_overflow_the_batch_is_first_in_the_next():
    batches: list[list[str]] = []

    async def scenario() -> tuple[list[Rows], Counter[str]]:
        batcher = Batcher(record(batches), max_batch_size=3, timeout_ms=NEVER)
        batcher.start()
        try:
            rows = [[{"text": "a"}, {"text": "b"}], [{"text": "c"}, {"text": "d"}], [{"text": "e"}]]
            return await answered(*(batcher.submit(r) for r in rows)), batcher.closed
        finally:
            await batcher.stop()

    answers, closed = asyncio.run(scenario())
    assert batches == [["a", "b"], ["c", "d", "e"]]
    assert closed == Counter(full=2)  # the first closed as c, d would not fit: it never waited for the timeout
    assert [[row["echo"] for row in rows] for rows in answers] == [["a", "b"], ["c", "d"], ["e"]]
