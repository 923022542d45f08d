"""Answer selection for extractive question answering, one plain function per step, shared by evaluation
(:class:`~ftlit.tasks.qa.metric.SquadMetric`) and ``predict``:

* :func:`best_spans` and :func:`null_score` decode one tokenised window (a "feature") the way Hugging Face's
  ``run_qa.py`` (``postprocess_qa_predictions``) does, giving character spans in the example's context;
  :func:`decode_windows` does it for every window of a batch.
* :func:`candidate_rows` flattens decoded windows into rows ``(example, start, end, score, null)``, the metric's
  states, and :func:`choose_answers` picks each example's answer from such rows, over all its windows.
* :func:`answer_row` is the prediction of one question: the chosen span, its text and its probability among the
  question's ``n_best`` candidates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

# A candidate answer: (start_char, end_char, score), end exclusive, score = start logit + end logit.
Span = tuple[int, int, float]
# One candidate of one window: (example index, start_char, end_char, score, the window's null score).
Row = tuple[int, int, int, float, float]


def best_spans(
    start_logits: Tensor,
    end_logits: Tensor,
    offsets: Sequence[tuple[int, int] | None],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[Span]:
    """Best answer spans of one window, as ``run_qa.py``'s ``postprocess_qa_predictions`` finds them.

    Every pair of the ``n_best`` highest start logits and ``n_best`` highest end logits is a candidate; pairs are
    skipped when either token is not in the context (offset ``None``, or a position past the end of ``offsets``,
    e.g. padding), when the end comes before the start, or when the span is longer than ``max_answer_length`` tokens.

    Args:
        start_logits: Start logits of the window, shape ``[T]``.
        end_logits: End logits of the window, shape ``[T]``.
        offsets: Per token, its ``(start_char, end_char)`` in the example's context, or ``None`` for tokens outside
            the context (question, special tokens, padding).
        n_best: Number of start and of end positions tried, and the most spans returned.
        max_answer_length: Longest answer allowed, in tokens.

    Returns:
        ``(start_char, end_char, score)`` per span, ``end_char`` exclusive (the answer is ``context[start:end]``),
        ``score = start_logit + end_logit``, best first, at most ``n_best``; empty if no pair is valid.

    Raises:
        ValueError: If the logits are not 1-D tensors of the same length.
    """
    if start_logits.dim() != 1 or start_logits.shape != end_logits.shape:
        raise ValueError(
            f"start_logits and end_logits must both be [T]; got {tuple(start_logits.shape)}, {tuple(end_logits.shape)}"
        )
    # One host copy, in float32 so that half-precision logits add like run_qa.py's numpy arrays.
    starts, ends = start_logits.detach().float().cpu(), end_logits.detach().float().cpu()
    k = min(n_best, starts.numel())
    start_top, end_top = torch.topk(starts, k).indices.tolist(), torch.topk(ends, k).indices.tolist()
    start_values, end_values = starts.tolist(), ends.tolist()

    spans: list[Span] = []
    for s in start_top:
        if s >= len(offsets) or offsets[s] is None:
            continue
        for e in end_top:
            if e >= len(offsets) or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            spans.append((offsets[s][0], offsets[e][1], start_values[s] + end_values[e]))
    # Stable sort: equal scores keep the (start rank, end rank) order, as in run_qa.py.
    spans.sort(key=lambda span: span[2], reverse=True)
    return spans[:n_best]


def null_score(start_logits: Tensor, end_logits: Tensor) -> float:
    """Score of "no answer" in one window: the start plus end logit of the first ([CLS]) token.

    Args:
        start_logits: Start logits of the window, shape ``[T]``.
        end_logits: End logits of the window, shape ``[T]``.

    Returns:
        ``start_logits[0] + end_logits[0]``.
    """
    return float(start_logits[0]) + float(end_logits[0])


def decode_windows(
    logits: Tensor, offsets: Tensor, mask: Tensor | None, n_best: int, max_answer_length: int
) -> list[tuple[list[Span], float]]:
    """Best spans (character offsets into the context) and null score of every window of a batch.

    Each window is cut to its real tokens first (``mask``, the attention mask), so that padding on either side
    changes nothing and the null score is read at [CLS], the window's first token.

    Args:
        logits: Start and end logits, ``[windows, tokens, 2]``.
        offsets: Each token's ``(start_char, end_char)`` in the context, -1 outside it, ``[windows, tokens, 2]``.
        mask: The attention mask (``None``: every token is real).
        n_best: Start and end positions tried per window.
        max_answer_length: Longest answer, in tokens.
    """
    logits = logits.detach().float().cpu()
    offsets = offsets.cpu()
    keep = mask.bool().cpu() if mask is not None else torch.ones(logits.shape[:2], dtype=torch.bool)
    out = []
    for w in range(logits.shape[0]):
        starts, ends = logits[w, keep[w], 0], logits[w, keep[w], 1]
        window = [None if a < 0 else (a, b) for a, b in offsets[w, keep[w]].tolist()]
        out.append((best_spans(starts, ends, window, n_best, max_answer_length), null_score(starts, ends)))
    return out


def candidate_rows(example_idx: Sequence[int], decoded: Sequence[tuple[list[Span], float]]) -> list[Row]:
    """Every candidate span of every window as a row; a window without one still gives a row (start and end -1,
    score ``-inf``) so that its null score counts."""
    rows: list[Row] = []
    for i, (spans, null) in zip(example_idx, decoded, strict=True):
        rows += [(i, s, e, score, null) for s, e, score in spans] or [(i, -1, -1, -math.inf, null)]
    return rows


def choose_answers(
    rows: Iterable[Row], version_2: bool, null_threshold: float = 0.0
) -> dict[int, tuple[int, int] | None]:
    """Each example's answer over all its windows' rows: ``(start_char, end_char)``, or ``None`` for "no answer".

    The answer is the highest-scoring valid row (ties go to the smaller start, then end, so the result does not
    depend on row order or repeated rows). With ``version_2``, the example's null score is the minimum over its rows
    (``run_qa.py`` takes the minimum over windows), and the answer is "no answer" when ``null - best_score >
    null_threshold`` or when no row is valid. Without it, an example with no valid row has no answer either
    (``run_qa.py`` would answer the placeholder text "empty").
    """
    best: dict[int, tuple[float, int, int]] = {}  # example -> (score, -start, -end) of its best span so far
    min_null: dict[int, float] = {}
    for i, start, end, score, null in rows:
        i, start, end = int(i), int(start), int(end)  # In case a merged state dict held float tensors.
        # NaNs are skipped (not compared), so that they cannot make the result depend on row order.
        current = min_null.setdefault(i, math.inf)
        if null < current:
            min_null[i] = null
        # A valid span: not the placeholder of a window without one (start -1, score -inf), and not NaN.
        if start >= 0 and score > -math.inf:
            # Highest score, then smallest start, then smallest end: independent of row order and duplicates.
            key = (score, -start, -end)
            if i not in best or key > best[i]:
                best[i] = key

    chosen: dict[int, tuple[int, int] | None] = {}
    for i, null in min_null.items():
        if i not in best or (version_2 and null - best[i][0] > null_threshold):
            chosen[i] = None
        else:
            _, neg_start, neg_end = best[i]
            chosen[i] = (-neg_start, -neg_end)
    return chosen


def answer_row(
    question_id: str,
    context: str,
    choice: tuple[int, int] | None,
    spans: list[Span],
    null: float,
    n_best: int,
    version_2: bool,
) -> dict:
    """The prediction row of one question, given the span :func:`choose_answers` chose (``None``: no answer) and
    all its candidates over its windows (``null``: its minimum null score).

    ``{"id", "answer", "score", "start", "end"}``: ``answer == context[start:end]``; ``score`` is the answer's
    probability among the question's ``n_best`` best candidates (softmax of start + end logits, "no answer"
    included under SQuAD v2.0), as ``run_qa.py``'s n-best lists give it.
    """
    chosen: Span | None = None
    if choice is not None:
        # Its best score: the same offsets may come from several windows.
        chosen = max((s for s in spans if (s[0], s[1]) == choice), key=lambda s: s[2])
    elif not version_2:  # v1.1 with no valid span in any window: no answer, and no confidence in one
        return {"id": question_id, "answer": "", "score": 0.0, "start": None, "end": None}
    # run_qa.py's n-best list: the best candidates over all windows, plus "no answer" (None) under v2, which
    # stays in the list (as does the chosen answer) even when n_best others score higher.
    candidates: list[tuple[float, Span | None]] = [(span[2], span) for span in spans]
    if version_2:
        candidates.append((null, None))
    candidates.sort(key=lambda c: c[0], reverse=True)
    top = candidates[:n_best]
    for must in [chosen, None] if version_2 else [chosen]:
        if all(span != must for _, span in top):
            top.append((null if must is None else must[2], must))
    best = max(score for score, _ in top)
    weights = [math.exp(score - best) for score, _ in top]
    score = weights[[span for _, span in top].index(chosen)] / sum(weights)
    start, end = (chosen[0], chosen[1]) if chosen is not None else (None, None)
    answer = context[start:end] if chosen is not None else ""
    return {"id": question_id, "answer": answer, "score": score, "start": start, "end": end}
