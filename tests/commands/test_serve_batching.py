"""The dynamic batcher on its own, with a plain function as the model: which requests share a batch."""

from __future__ import annotations

import asyncio

from ftlit.serve.batching import Batcher, Rows


def record(batches: list[list[str]]):
    """A model that answers each row with its own text and records the batches it was given."""

    def predict(rows: Rows) -> Rows:
        batches.append([row["text"] for row in rows])
        return [{"echo": row["text"]} for row in rows]

    return predict


async def pair(batcher: Batcher, first: str, second: str, gap: float) -> list[Rows]:
    """Two one-row requests, the second ``gap`` seconds after the first."""
    one = asyncio.ensure_future(batcher.submit([{"text": first}]))
    await asyncio.sleep(gap)
    two = asyncio.ensure_future(batcher.submit([{"text": second}]))
    return await asyncio.gather(one, two)


def test_the_wait_is_kept_while_requests_share_batches_and_dropped_after_a_lone_one():
    """A batch waits up to the timeout for company while requests come together; after a batch that held one
    request alone, the next runs without waiting (so a lone client pays no wait per request), until requests share
    a batch again."""
    batches: list[list[str]] = []

    async def scenario() -> list[list[Rows]]:
        batcher = Batcher(record(batches), max_batch_size=8, timeout_ms=1500)
        batcher.start()
        try:
            answers = [await pair(batcher, "a", "b", 0.2)]  # the first batch waits: a and b together
            answers.append(await pair(batcher, "c", "d", 0.2))  # after a shared batch: waits again
            answers.append([await batcher.submit([{"text": "e"}])])  # alone after the wait: a lone batch
            answers.append(await pair(batcher, "f", "g", 0.2))  # after it: f runs at once, g in its own batch
            answers.append(await asyncio.gather(*(batcher.submit([{"text": t}]) for t in "hi")))  # together
            answers.append(await pair(batcher, "j", "k", 0.2))  # after a shared batch: waits again
            return answers
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario())
    assert batches == [["a", "b"], ["c", "d"], ["e"], ["f"], ["g"], ["h", "i"], ["j", "k"]]
    echoed = [row["echo"] for group in answers for rows in group for row in rows]
    assert echoed == list("abcdefghijk")  # each request got its own row back


def test_a_request_that_would_overflow_the_batch_is_first_in_the_next():
    batches: list[list[str]] = []

    async def scenario() -> list[Rows]:
        batcher = Batcher(record(batches), max_batch_size=3, timeout_ms=200)
        batcher.start()
        try:
            rows = [[{"text": "a"}, {"text": "b"}], [{"text": "c"}, {"text": "d"}], [{"text": "e"}]]
            return await asyncio.gather(*(batcher.submit(r) for r in rows))
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario())
    assert batches == [["a", "b"], ["c", "d", "e"]]
    assert [[row["echo"] for row in rows] for rows in answers] == [["a", "b"], ["c", "d"], ["e"]]
