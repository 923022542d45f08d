"""Framework-neutral measurement: a step timer fed by either system's callbacks, loader throughput, peak memory.

Both systems are timed by the same code at the same points: an epoch's start, each optimizer step's end (after
the optimizer and scheduler stepped) and the end of training. No per-step device sync: on a GPU the clock is
synced only at the warm-up boundary, epoch ends and the end of training.
"""

from __future__ import annotations

import hashlib
import resource
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch


class StepTimer:
    """Times optimizer steps and counts the samples and non-padding tokens they consumed."""

    def __init__(self, sync: Callable[[], None] | None = None, warmup_steps: int = 1) -> None:
        """
        Args:
            sync: Waits for queued device work (``torch.cuda.synchronize``); none on the CPU.
            warmup_steps: Leading steps reported apart (allocator warm-up, lazy initialisation).
        """
        self.sync = sync or (lambda: None)
        self.warmup_steps = warmup_steps
        self.train_start: float | None = None  # wall clock (time.time) of the first epoch's start
        self.t_start: float | None = None
        self.t_warm: float | None = None  # end of the last warm-up step
        self.t_end: float | None = None
        self.cpu_warm = self.cpu_end = 0.0  # process CPU time (all threads) at those two points
        self.epoch_seconds: list[float] = []
        self._epoch_start = 0.0
        self._last = 0.0  # end of the previous step, or the epoch's start
        self.step_seconds: list[float] = []  # each step after the warm-up ones, from the previous step's end
        self._epoch_first_step: list[int] = []
        self.samples: list[int] = []
        self.memory_at_start: dict[str, float] = {}
        self.memory_at_end: dict[str, float] = {}
        self.tokens: list[Any] = []  # ints, or device tensors summed without a sync until the end
        self.padded: list[int] = []  # batch elements including padding (rows x padded length)

    def epoch_start(self) -> None:
        now = time.perf_counter()
        if self.t_start is None:
            self.train_start, self.t_start = time.time(), now
            self.memory_at_start = proc_memory_mib()
        self._epoch_start = self._last = now
        self._epoch_first_step.append(len(self.samples))

    def step_end(self, samples: int, tokens: int | torch.Tensor, padded: int) -> None:
        """One optimizer step is done: ``samples`` rows, ``tokens`` non-padding tokens and ``padded`` tokens with
        padding (the batch's ``input_ids`` size) went into it."""
        self.samples.append(samples)
        self.tokens.append(tokens)
        self.padded.append(padded)
        if len(self.samples) == self.warmup_steps:
            self.sync()
            self.t_warm, self.cpu_warm = time.perf_counter(), time.process_time()
        self.t_end, self.cpu_end = time.perf_counter(), time.process_time()
        if len(self.samples) > self.warmup_steps:  # without a per-step sync, on a GPU this is the host's view
            self.step_seconds.append(self.t_end - self._last)
        self._last = self.t_end

    def epoch_end(self) -> None:
        self.sync()
        self.t_end, self.cpu_end = time.perf_counter(), time.process_time()
        self.epoch_seconds.append(self.t_end - self._epoch_start)

    def train_end(self) -> None:
        self.sync()
        self.memory_at_end = proc_memory_mib()
        if self.samples:
            self.t_end, self.cpu_end = time.perf_counter(), time.process_time()

    def summary(self) -> dict[str, Any]:
        """Totals and rates; the ``*_per_s`` figures leave out the warm-up steps, ``*_incl_warmup`` keep them."""
        tokens = [int(t) for t in self.tokens]
        n, w = len(self.samples), self.warmup_steps
        if n <= w or self.t_start is None or self.t_warm is None or self.t_end is None:
            raise RuntimeError(f"only {n} steps timed: need more than the {w} warm-up step(s)")
        measured = self.t_end - self.t_warm
        bounds = [*self._epoch_first_step, n]
        total = self.t_end - self.t_start
        return {
            "steps": n,
            "samples": sum(self.samples),
            "tokens": sum(tokens),
            "padded_tokens": sum(self.padded),
            "padding_share": 1 - sum(tokens) / sum(self.padded),
            "warmup_steps_excluded": w,
            "warmup_s": self.t_warm - self.t_start,
            "measured_steps": n - w,
            "measured_s": measured,
            "train_s": total,
            "step_ms": 1000 * measured / (n - w),
            # The typical step, untouched by a recompilation or a stall, and the slowest one (where those show).
            "median_step_ms": 1000 * statistics.median(self.step_seconds),
            "max_step_ms": 1000 * max(self.step_seconds),
            "each_step_ms": [round(1000 * s, 1) for s in self.step_seconds],  # to see which steps are slow
            "train_samples_per_s": sum(self.samples[w:]) / measured,
            "train_tokens_per_s": sum(tokens[w:]) / measured,
            # CPU seconds the process spent (all its threads) over the same span: on a machine shared with other
            # work, waiting for a core does not count, so this varies less than the wall-clock rates.
            "measured_cpu_s": self.cpu_end - self.cpu_warm,
            "train_samples_per_cpu_s": sum(self.samples[w:]) / (self.cpu_end - self.cpu_warm),
            "train_samples_per_s_incl_warmup": sum(self.samples) / total,
            "train_tokens_per_s_incl_warmup": sum(tokens) / total,
            "epoch_s": self.epoch_seconds,
            # Equal digests: both systems trained on batches of the same token counts in the same order.
            "epoch_batch_digests": [_digest(tokens[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)],
            "train_start_unix": self.train_start,
            "rss_at_first_step_mib": self.memory_at_start.get("rss"),
            "peak_rss_at_first_step_mib": self.memory_at_start.get("peak"),
            "peak_rss_after_training_mib": self.memory_at_end.get("peak"),
        }


def _digest(values: list[int]) -> str:
    return hashlib.sha1(repr(values).encode()).hexdigest()[:12]


def loader_throughput(loader: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Batches/s and samples/s of one pass over ``loader`` alone (collation included, no model)."""
    start = time.perf_counter()
    batches = samples = 0
    for batch in loader:
        batches += 1
        samples += int(batch["input_ids"].shape[0])
    seconds = time.perf_counter() - start
    return {
        "loader_batches": batches,
        "loader_s": seconds,
        "loader_batches_per_s": batches / seconds,
        "loader_samples_per_s": samples / seconds,
    }


def proc_memory_mib() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, from /proc (Linux; else empty)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    except OSError:
        return {}
    return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}


def peak_memory_mib(device: str) -> dict[str, float]:
    """Peak RSS of this process (Linux reports KiB) and, on a GPU, the peak of allocated device memory."""
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda" and torch.cuda.is_available():
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def cuda_sync(device: str) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` on a GPU, else None."""
    return torch.cuda.synchronize if device == "cuda" else None


def device_name(device: str) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"
