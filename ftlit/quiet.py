"""Upstream output that needs no action from the user, kept off a run's stderr; what is expected is said once in
ftlit's words instead (the new head: :func:`ftlit.backbone.describe_load`).

Each filter names the message and the module or logger it comes from, never a whole category: a warning that asks
the user to act still shows, and so does the same message from the user's own code. :func:`install` runs once at
the start of the ``ftlit`` command; :func:`load_report_hidden` hides transformers' load report only around a load
whose outcome ftlit states itself.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from typing_extensions import override

# (message regex, category, module regex): a deprecation inside a library's own code, which its next release fixes.
WARNINGS: list[tuple[str, type[Warning], str]] = [
    # torchdata 0.11's StatefulDataLoader calls torch.set_vital, which torch 2.13 deprecated (a no-op now).
    (r"'set_vital' is deprecated", UserWarning, r"torchdata\."),
    # Lightning 2.6's _tree_flatten builds torch.utils._pytree.LeafSpec, deprecated in torch 2.13.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\."),
]

# (logger, message start): Lightning's advertisement for its cloud logger, printed by every Trainer.
LOG_LINES: list[tuple[str, str]] = [
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud logging"),
    ("lightning.fabric.utilities.rank_zero", "💡 Tip: For seamless cloud logging"),
]

# transformers' table of missing, unexpected and mismatched weights after ``from_pretrained``.
LOAD_REPORT_LOGGER = "transformers.modeling_utils"
LOAD_REPORT = "LOAD REPORT"


class _Drop(logging.Filter):
    """Drops a logger's records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


class _HoldBack(logging.Filter):
    """Keeps a logger's records that ``hold`` picks back, to let them through later or drop them."""

    def __init__(self, hold: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.hold = hold
        self.held: list[logging.LogRecord] = []

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        if self.hold(record):
            self.held.append(record)
            return False
        return True


def install() -> None:
    """Filter the upstream lines that need no action (:data:`WARNINGS`, :data:`LOG_LINES`); calling it again adds
    nothing."""
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    starts: dict[str, tuple[str, ...]] = {}
    for logger, start in LOG_LINES:
        starts[logger] = (*starts.get(logger, ()), start)
    for name, prefixes in starts.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) and f.starts == prefixes for f in logger.filters):
            logger.addFilter(_Drop(prefixes))


def _is_load_report(record: logging.LogRecord) -> bool:
    return LOAD_REPORT in str(record.msg)


@contextmanager
def load_report_hidden() -> Iterator[None]:
    """Hide transformers' load report inside, for a load whose outcome the caller states itself. When the load
    fails (transformers raises after its report, "look at the above report"), the report is printed after all."""
    logger = logging.getLogger(LOAD_REPORT_LOGGER)
    hold = _HoldBack(_is_load_report)
    logger.addFilter(hold)
    try:
        yield
    except BaseException:
        logger.removeFilter(hold)
        for record in hold.held:
            logger.handle(record)
        raise
    finally:
        logger.removeFilter(hold)
