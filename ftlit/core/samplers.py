"""Training orders that a resumed run draws again: shuffled per (seed, epoch), or length-grouped (batches of
similar length waste less compute on padding)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DistributedSampler, Sampler
from typing_extensions import override


class ResumableOrder:
    """The loader-checkpoint state of a sampler whose order is a pure function of ``(seed, epoch)``: the epoch and
    how many indices were taken, so a resumed fit skips exactly those, in that epoch's order.

    The order is drawn at the first index taken, not when the iterator is made: resuming, Lightning restores the
    loader (making its iterator) before it calls ``set_epoch``. A state saved at an epoch's end skips nothing: the
    next epoch starts afresh.
    """

    epoch: int
    taken = 0  # indices of this epoch handed out so far
    _skip = 0  # indices to skip at the next iteration (from a restored state)

    def _resumed(self, order: Iterator[int]) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        self.taken = skip
        for index in itertools.islice(order, skip, None):
            self.taken += 1
            yield index

    def state_dict(self) -> dict[str, Any]:
        """Saved by torchdata's loader in every checkpoint."""
        return {"epoch": self.epoch, "yielded": self.taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved position (before the loader makes its iterator)."""
        self.set_epoch(int(state["epoch"]))  # type: ignore[attr-defined]
        taken = int(state["yielded"])
        self._skip = 0 if taken >= len(self) else taken  # type: ignore[arg-type]


class EpochShuffle(ResumableOrder, DistributedSampler):
    """torch's ``DistributedSampler`` (an order that is a pure function of ``seed + epoch``, sharded by rank), made
    resumable exactly (:class:`ResumableOrder`), one process or several."""

    @override
    def __iter__(self) -> Iterator[int]:
        yield from self._resumed(super().__iter__())


def upgrade_loader_state(checkpoint: dict[str, Any]) -> None:
    """Let a checkpoint from before :class:`EpochShuffle` resume: its training loader's state holds the position
    of torchdata's ``RandomSampler`` generator, which no ftlit sampler has now. It becomes a :class:`ResumableOrder`
    state: the resumed epoch skips as many rows of the new order as the old run had taken, so it keeps its length
    (its order is new)."""
    for loop in (checkpoint.get("loops") or {}).values():
        states = loop.get("state_dict", {}).get("combined_loader") if isinstance(loop, dict) else None
        for state in states or []:
            position = state.get("_sampler_iter_state") if isinstance(state, dict) else None
            if isinstance(position, dict) and "sampler_iter_state" in position:
                del position["sampler_iter_state"]
                position["sampler_state"] = {
                    "epoch": checkpoint.get("epoch", 0),
                    "yielded": position["samples_yielded"],
                }


class LengthGroupedSampler(ResumableOrder, Sampler[int]):
    """Shuffles, then sorts within mega-batches of ``batch_size * mega`` rows by length, longest first.

    Batches hold rows of similar length (little padding) while their order stays random across the epoch, as in
    Hugging Face's sampler of the same name. The order is a pure function of ``(seed, epoch)``, so a resumed loader
    can skip to its position; with several ranks each takes every ``num_replicas``-th batch of the same order, so
    every rank's batches are length-grouped too (the last batches repeat to give every rank the same count).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        mega: int | None = None,
    ) -> None:
        """
        Args:
            lengths: Length of every row.
            batch_size: Rows per batch.
            seed: Seed of the shuffle (each epoch adds its number).
            num_replicas: Number of ranks.
            rank: This rank.
            mega: Batches per sorted group; default as Hugging Face's: ``len(lengths) // (4 * batch_size)``, at
                most 50, so even a small data set is sorted in several groups and stays random across them.
        """
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.mega = mega or max(1, min(len(self.lengths) // (4 * batch_size), 50))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start: a new order per epoch."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches for every rank, in order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.mega
        grouped = []
        for start in range(0, len(order), size):
            grouped += sorted(order[start : start + size], key=lambda i: -self.lengths[i])
        return [grouped[i : i + self.batch_size] for i in range(0, len(grouped), self.batch_size)]

    def _rank_batches(self) -> list[list[int]]:
        batches = self.batches()
        per_rank = -(-len(batches) // self.num_replicas)
        batches += batches[: per_rank * self.num_replicas - len(batches)]  # pad with repeats
        return batches[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        yield from self._resumed(index for batch in self._rank_batches() for index in batch)

    def __len__(self) -> int:
        return sum(len(b) for b in self._rank_batches())
