"""Entity-level (span) precision, recall and F1 for token classification, as a DDP-safe torchmetrics ``Metric``.

torchmetrics only scores tokens; NER is conventionally scored on whole entities, the way ``seqeval`` (and the
CoNLL ``conlleval`` script) does. :func:`extract_entities` reproduces seqeval's *default* mode
(``seqeval.metrics.f1_score(y_true, y_pred)`` without ``mode="strict"``) for the tags listed there, and
:class:`SpanF1` counts true/false positives and false negatives per entity type in summable states, so the numbers
after a distributed sync equal those over the whole data set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from typing_extensions import override

__all__ = ["SpanF1", "extract_entities", "split_tag"]

IGNORE_INDEX = -100
_PREFIXES = frozenset("BIES")
# seqeval's type for a tag with no "-TYPE" suffix (a bare "B", "I", ...).
_NO_TYPE = "_"


def split_tag(tag: str) -> tuple[str, str]:
    """Split a tag into its prefix and entity type, as seqeval does.

    Supported tags: ``"O"``; ``"<P>-<TYPE>"`` with ``<P>`` one of ``B``, ``I``, ``E``, ``S`` and a non-empty
    ``<TYPE>`` (everything after the first ``-``, so ``"B-PER-X"`` has type ``"PER-X"``); and a bare ``"B"``, ``"I"``,
    ``"E"`` or ``"S"``, whose type is ``"_"`` as in seqeval. Anything else is rejected rather than given seqeval's
    ill-defined treatment of unknown prefixes.

    Args:
        tag: One tag string.

    Returns:
        ``(prefix, type)``; for ``"O"`` the type is ``"_"`` (it is never used).

    Raises:
        ValueError: If ``tag`` is not one of the supported forms.
    """
    if tag == "O":
        return "O", _NO_TYPE
    prefix, sep, type_ = tag.partition("-")
    if prefix in _PREFIXES and (type_ if sep else True):
        return prefix, type_ or _NO_TYPE
    raise ValueError(f"Unsupported tag {tag!r}: expected 'O', 'B-TYPE', 'I-TYPE', 'E-TYPE', 'S-TYPE' or bare B/I/E/S.")


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk ended at the previous token (seqeval's ``end_of_chunk``, restricted to O/B/I/E/S)."""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag != "O" and prev_type != type_


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk starts at this token (seqeval's ``start_of_chunk``, restricted to O/B/I/E/S)."""
    if tag in ("B", "S"):
        return True
    # An I/E with no open chunk before it starts one (conlleval's lenient reading of IOB).
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and prev_type != type_


def extract_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities in one tag sequence, as seqeval's default (conlleval-compatible) ``get_entities`` finds them.

    Lenient IOB reading: an ``I-X`` after ``O`` (or after an entity of another type) starts a new entity,
    ``I-X I-X`` is one entity, ``B-X B-X`` are two, and a change of type always ends the current entity. ``E-``/``S-``
    tags (IOBES) follow seqeval's default-mode rules too. Tag syntax: see :func:`split_tag`.

    Args:
        tags: Tag strings of one sentence (no padding or ignored positions).

    Returns:
        ``(type, start, end)`` per entity, ``end`` inclusive, in order of their end position.

    Raises:
        ValueError: If a tag is not supported by :func:`split_tag`.
    """
    entities: list[tuple[str, int, int]] = []
    prev_tag, prev_type, begin = "O", "", 0
    # A trailing "O" closes an entity that runs to the end of the sequence.
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = split_tag(chunk)
        if _ends(prev_tag, tag, prev_type, type_):
            entities.append((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return entities


class SpanF1(Metric):
    """Entity-level precision, recall and F1 (micro over types, and per type), matching seqeval's default mode.

    States are per-type counts of true positives, false positives and false negatives, summed across processes, so
    the result under DDP equals the result over all data. An entity is a true positive when the same
    ``(type, start, end)`` is both predicted and in the target of the same sequence.

    ``compute()`` returns ``precision``, ``recall`` and ``f1`` (micro) and ``precision_<TYPE>``, ``recall_<TYPE>``,
    ``f1_<TYPE>`` for every type in ``label_names``; a ratio whose denominator is 0 is reported as 0.

    Example:
        >>> metric = SpanF1(["O", "B-PER", "I-PER"])
        >>> metric.update(torch.tensor([[1, 2, 0]]), torch.tensor([[1, 2, -100]]))
        >>> float(metric.compute()["f1"])
        1.0
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    tp: Tensor
    fp: Tensor
    fn: Tensor

    def __init__(self, label_names: list[str], **kwargs) -> None:
        """
        Args:
            label_names: Tag string of each tag id, e.g. ``["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]``.
            **kwargs: Passed to :class:`torchmetrics.Metric` (``dist_sync_on_step``, ``process_group``, ...).

        Raises:
            ValueError: If a label name is not a supported tag (see :func:`split_tag`).
        """
        super().__init__(**kwargs)
        for name in label_names:
            split_tag(name)  # Fail at construction, not mid-epoch.
        self.label_names = list(label_names)
        self.types = sorted({type_ for tag, type_ in map(split_tag, self.label_names) if tag != "O"})
        self._type_index = {type_: i for i, type_ in enumerate(self.types)}
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(len(self.types), dtype=torch.long), dist_reduce_fx="sum")

    @override
    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count entities of a batch.

        Args:
            preds: Predicted tag ids, shape ``[batch, seq_len]``.
            target: Gold tag ids, same shape; positions equal to -100 (padding, sub-word continuations) are dropped
                from both sequences before entities are extracted.

        Raises:
            ValueError: On a shape mismatch, or a kept tag id outside ``range(len(label_names))``.
        """
        if preds.shape != target.shape or preds.dim() != 2:
            raise ValueError(
                f"preds and target must both be [batch, seq_len]; got {tuple(preds.shape)} and {tuple(target.shape)}"
            )
        keep = target != IGNORE_INDEX
        n = len(self.label_names)
        for name, ids in (("preds", preds), ("target", target)):
            kept = ids[keep]
            if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= n):
                raise ValueError(f"{name} has tag ids outside [0, {n}) at non-ignored positions")

        # One device->host copy per tensor; the per-row entity logic is plain Python.
        tp, fp, fn = [0] * len(self.types), [0] * len(self.types), [0] * len(self.types)
        names = self.label_names
        for pred_row, gold_row in zip(preds.tolist(), target.tolist(), strict=True):
            kept_pairs = [(p, g) for p, g in zip(pred_row, gold_row, strict=True) if g != IGNORE_INDEX]
            pred_entities = set(extract_entities([names[p] for p, _ in kept_pairs]))
            gold_entities = set(extract_entities([names[g] for _, g in kept_pairs]))
            for type_, _, _ in pred_entities & gold_entities:
                tp[self._type_index[type_]] += 1
            for type_, _, _ in pred_entities - gold_entities:
                fp[self._type_index[type_]] += 1
            for type_, _, _ in gold_entities - pred_entities:
                fn[self._type_index[type_]] += 1

        device = self.tp.device
        self.tp += torch.tensor(tp, dtype=torch.long, device=device)
        self.fp += torch.tensor(fp, dtype=torch.long, device=device)
        self.fn += torch.tensor(fn, dtype=torch.long, device=device)

    @override
    def compute(self) -> dict[str, Tensor]:
        """Micro and per-type scores from the accumulated counts.

        Returns:
            ``precision``, ``recall``, ``f1`` and ``precision_<TYPE>``, ``recall_<TYPE>``, ``f1_<TYPE>`` per type, as
            float scalar tensors.
        """
        result = _scores(self.tp.sum(), self.fp.sum(), self.fn.sum(), "")
        for i, type_ in enumerate(self.types):
            result.update(_scores(self.tp[i], self.fp[i], self.fn[i], f"_{type_}"))
        return result


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` as float, 0 where ``den`` is 0 (seqeval's ``zero_division`` default, without the warning)."""
    num, den = num.double(), den.double()
    defined = den > 0
    return torch.where(defined, num / torch.where(defined, den, torch.ones_like(den)), torch.zeros_like(num))


def _scores(tp: Tensor, fp: Tensor, fn: Tensor, suffix: str) -> dict[str, Tensor]:
    """Precision, recall and F1 from counts, named ``<score><suffix>``."""
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    # Harmonic mean of P and R, as seqeval computes it (not 2tp / (2tp + fp + fn)); 0 when both are 0.
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {
        f"precision{suffix}": precision.float(),
        f"recall{suffix}": recall.float(),
        f"f1{suffix}": f1.float(),
    }


class EntityConfusion(Metric):
    """Which entity types are taken for which: a ``[types + 1, types + 1]`` count matrix, rows gold, columns
    predicted, the last row and column "no entity".

    An entity found with the right span counts on its (gold type, predicted type) cell, so the diagonal holds the
    exact matches and the off-diagonal cells the confused types; a gold entity with no predicted entity on its span
    counts in the "no entity" column (missed), a predicted one with no gold entity on its span in the "no entity"
    row (spurious). Summed over processes, as :class:`SpanF1`'s counts.
    """

    full_state_update = False
    counts: Tensor

    def __init__(self, label_names: list[str], **kwargs: Any) -> None:
        """
        Args:
            label_names: Tag string of each tag id (``O``, ``B-PER``, ...).
            **kwargs: Passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        self.types = SpanF1(self.label_names).types
        n = len(self.types) + 1
        self.add_state("counts", default=torch.zeros(n, n, dtype=torch.long), dist_reduce_fx="sum")

    @override
    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count a batch: predicted and gold tag ids ``[batch, seq_len]``, -100 where nothing is scored."""
        index = {type_: i for i, type_ in enumerate(self.types)}
        none = len(self.types)
        counts = torch.zeros_like(self.counts, device="cpu")
        names = self.label_names
        for pred_row, gold_row in zip(preds.tolist(), target.tolist(), strict=True):
            kept = [(p, g) for p, g in zip(pred_row, gold_row, strict=True) if g != IGNORE_INDEX]
            pred = {(s, e): t for t, s, e in extract_entities([names[p] for p, _ in kept])}
            gold = {(s, e): t for t, s, e in extract_entities([names[g] for _, g in kept])}
            for span, type_ in gold.items():
                counts[index[type_], index[pred[span]] if span in pred else none] += 1
            for span, type_ in pred.items():
                if span not in gold:
                    counts[none, index[type_]] += 1
        self.counts += counts.to(self.counts.device)

    @override
    def compute(self) -> Tensor:
        return self.counts
