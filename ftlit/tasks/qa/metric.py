"""SQuAD v1.1 / v2.0 evaluation for extractive question answering: answer scoring and a DDP-safe metric.

Two layers, usable on their own:

* :func:`normalize_answer`, :func:`exact_match` and :func:`f1` reproduce the official evaluation scripts
  (``evaluate-v1.1.py`` and ``evaluate-v2.0.py``) for one question.
* :class:`SquadMetric` collects candidate spans of all windows in ``cat`` states, so after a distributed sync every
  window of an example is seen together, and picks each example's answer with
  :func:`~ftlit.tasks.qa.answers.choose_answers` (as ``predict`` does) and scores it at ``compute()``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat
from typing_extensions import override

from ftlit import upstream
from ftlit.tasks.qa.answers import choose_answers

T = TypeVar("T")

__all__ = ["SquadBreakdown", "SquadMetric", "exact_match", "f1", "normalize_answer"]

# Metric states and their dtypes, in the order of SquadMetric.update's arguments.
_STATE_DTYPES = {
    "example_idx": torch.long,
    "start_char": torch.long,
    "end_char": torch.long,
    "score": torch.float,
    "null": torch.float,
}
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Normalise an answer as both official SQuAD scripts do.

    Lower-cases, removes ASCII punctuation, replaces the articles "a", "an", "the" by a space and collapses runs of
    whitespace, in that order.

    Args:
        s: Answer text.

    Returns:
        The normalised text; tokens are ``normalize_answer(s).split()``.
    """
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _gold_answers(truths: Sequence[str], version_2: bool) -> list[str]:
    """The gold answers a script scores against."""
    if not version_2:
        if not truths:
            raise ValueError("SQuAD v1.1 scoring needs at least one gold answer; use version_2=True for no-answer")
        return list(truths)
    # evaluate-v2.0.py drops answers that normalise to nothing; with none left, "" is the only correct prediction.
    return [t for t in truths if normalize_answer(t)] or [""]


def exact_match(prediction: str, truths: Sequence[str], *, version_2: bool = True) -> float:
    """Exact match of one prediction: 1.0 if its normalised text equals that of any gold answer, else 0.0.

    Args:
        prediction: Predicted answer text ("" for "no answer").
        truths: Gold answer texts; empty means the question is unanswerable (SQuAD v2.0).
        version_2: Follow ``evaluate-v2.0.py`` (default): gold answers that normalise to "" are dropped, and with none
            left the only correct prediction is one that normalises to "". ``False`` follows ``evaluate-v1.1.py``,
            which compares against every gold answer as given and needs at least one. The two agree whenever every
            gold answer has a token left after normalisation.

    Returns:
        0.0 or 1.0.

    Raises:
        ValueError: If ``version_2`` is false and ``truths`` is empty.
    """
    pred = normalize_answer(prediction)
    return max(float(pred == normalize_answer(t)) for t in _gold_answers(truths, version_2))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str], version_2: bool) -> float:
    """Bag-of-tokens F1 of one prediction against one gold answer."""
    if version_2 and (not pred_tokens or not gold_tokens):
        # v2.0: if either side is "no answer", F1 is 1 when both are, 0 otherwise (v1.1 gives 0 in both cases).
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, truths: Sequence[str], *, version_2: bool = True) -> float:
    """Token-level F1 of one prediction: the maximum over gold answers, on normalised whitespace tokens.

    Args:
        prediction: Predicted answer text ("" for "no answer").
        truths: Gold answer texts; empty means the question is unanswerable (SQuAD v2.0).
        version_2: Follow ``evaluate-v2.0.py`` (default) or, if false, ``evaluate-v1.1.py``; see
            :func:`exact_match`. They differ only when a prediction or gold answer normalises to "": v2.0 then scores
            1.0 if both do and 0.0 otherwise, v1.1 always 0.0.

    Returns:
        F1 in ``[0, 1]``.

    Raises:
        ValueError: If ``version_2`` is false and ``truths`` is empty.
    """
    pred_tokens = normalize_answer(prediction).split()
    return max(_token_f1(pred_tokens, normalize_answer(t).split(), version_2) for t in _gold_answers(truths, version_2))


class SquadMetric(Metric):
    """SQuAD exact match and F1 (in percent) over examples whose contexts were split into windows.

    Each ``update`` row is one candidate span of one window. A window with no valid span still adds one row
    (``start_char = end_char = -1``, ``score = -inf``) so that its null score counts. All states are concatenated
    across processes, so ``compute()`` under DDP sees every window of an example, wherever it was evaluated.

    Per example, the answer is the highest-scoring valid row (ties go to the smaller ``start_char``, then
    ``end_char``, so the result does not depend on row order). With ``version_2``, the example's null score is the
    minimum null over its rows (as ``run_qa.py`` takes the minimum over windows), and the prediction is "" when
    ``null - best_score > null_threshold`` or when the example has no valid row. Without ``version_2``, an example
    with no valid row predicts "" (``run_qa.py`` would predict the placeholder text "empty").

    Repeated rows (a distributed sampler pads by repeating samples) do not change any prediction: only a maximum
    and a minimum are taken over rows.

    Every example in ``answers`` is scored. An example with no row at all (its windows were never evaluated) has no
    prediction and scores 0 in EM and F1, even if it is unanswerable, as ``evaluate-v1.1.py`` treats unanswered
    questions; a warning gives their number. Scores therefore fall, rather than silently rise, when windows are lost
    (e.g. ``limit_val_batches``).

    ``compute()`` returns ``exact`` and ``f1``; with ``version_2`` also ``HasAns_exact``, ``HasAns_f1``,
    ``NoAns_exact`` and ``NoAns_f1`` (a group with no example is left out), as ``evaluate-v2.0.py`` names them.
    An example is in ``HasAns`` when its gold list is non-empty.

    Example:
        >>> metric = SquadMetric(["Paris is in France."], [["Paris"]])
        >>> metric.update(torch.tensor([0]), torch.tensor([0]), torch.tensor([5]), torch.tensor([3.0]),
        ...               torch.tensor([0.0]))
        >>> float(metric.compute()["exact"])
        100.0
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    example_idx: list[Tensor] | Tensor
    start_char: list[Tensor] | Tensor
    end_char: list[Tensor] | Tensor
    score: list[Tensor] | Tensor
    null: list[Tensor] | Tensor

    def __init__(
        self,
        contexts: Sequence[str],
        answers: Sequence[Sequence[str]],
        version_2: bool = False,
        null_threshold: float = 0.0,
        **kwargs,
    ) -> None:
        """
        Args:
            contexts: Context text of every example, indexed by example index. Every process needs the full list.
            answers: Gold answer texts of every example, same indexing; an empty list marks an unanswerable
                question (only with ``version_2``).
            version_2: SQuAD v2.0: allow "no answer" predictions and score with ``evaluate-v2.0.py``'s rules.
                Otherwise predictions are always the best span and scoring follows ``evaluate-v1.1.py``.
            null_threshold: ``run_qa.py``'s ``null_score_diff_threshold``: predict "" when the null score exceeds the
                best span score by more than this. Only used with ``version_2``.
            **kwargs: Passed to :class:`torchmetrics.Metric` (``process_group``, ``compute_on_cpu``, ...).

        Raises:
            ValueError: If ``contexts`` and ``answers`` differ in length or are empty, or, without ``version_2``, an
                example has no gold answer.
        """
        super().__init__(**kwargs)
        if len(contexts) != len(answers):
            raise ValueError(
                f"contexts and answers must have one entry per example; got {len(contexts)}, {len(answers)}"
            )
        if not answers:
            raise ValueError("SquadMetric needs at least one example")
        if not version_2 and any(not truths for truths in answers):
            raise ValueError("an example has no gold answer; unanswerable questions need version_2=True")
        # Plain attributes, not states: identical on every process, so never synced.
        self.contexts = list(contexts)
        self.answers = [list(truths) for truths in answers]
        self.version_2 = version_2
        self.null_threshold = float(null_threshold)
        for name in _STATE_DTYPES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @override
    def update(self, example_idx: Tensor, start_char: Tensor, end_char: Tensor, score: Tensor, null: Tensor) -> None:
        """Add candidate spans, from any windows of any examples.

        Args:
            example_idx: Example index of each row, shape ``[N]``.
            start_char: Start of the span in the example's context, ``[N]``; -1 for a window with no valid span.
            end_char: End of the span (exclusive), ``[N]``; -1 for a window with no valid span.
            score: Span score (start plus end logit), ``[N]``; ``-inf`` for a window with no valid span.
            null: Null score of the row's window (see :func:`null_score`), ``[N]``.

        Raises:
            ValueError: If the inputs are not 1-D tensors of the same length.
        """
        rows = (example_idx, start_char, end_char, score, null)
        if any(t.dim() != 1 or t.shape != example_idx.shape for t in rows):
            raise ValueError(f"all inputs must be [N] with the same N; got {[tuple(t.shape) for t in rows]}")
        # On the metric's device: rows are often built on CPU from best_spans, and NCCL only gathers CUDA tensors.
        # Fixed dtypes, so that every process gathers the same dtype whatever the model's precision.
        for (name, dtype), values in zip(_STATE_DTYPES.items(), rows, strict=True):
            getattr(self, name).append(values.detach().to(self.device, dtype))

    @override
    def sync(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable | None = None,
    ) -> None:
        """Gather the states of all processes (see :meth:`torchmetrics.Metric.sync`).

        A process that has no rows would send torchmetrics' float placeholder for an empty ``cat`` state, which
        cannot be gathered together with the long tensors of the other processes (gloo aborts, NCCL may hang); an
        empty tensor of the right dtype is put in its place first.

        Args:
            dist_sync_fn: Function that gathers a tensor from all processes.
            process_group: Process group to sync over; default: the metric's.
            should_sync: Whether to sync at all.
            distributed_available: Function telling whether a distributed run is on.
        """
        for name, dtype in _STATE_DTYPES.items():
            state = getattr(self, name)
            if isinstance(state, list) and not state:
                state.append(torch.empty(0, dtype=dtype, device=self.device))
        super().sync(dist_sync_fn, process_group, should_sync, distributed_available)

    def _rows(self) -> list[tuple[int, int, int, float, float]]:
        """All rows as Python tuples; states are lists before a sync and tensors after one."""
        columns = []
        for name in _STATE_DTYPES:
            state = getattr(self, name)
            if isinstance(state, list) and not state:
                return []
            columns.append(dim_zero_cat(state).tolist())
        return list(zip(*columns, strict=True))

    def _decode(self) -> dict[int, str]:
        """Answer text of every example with at least one row, from the current (local or synced) states."""
        return {i: "" if span is None else self.contexts[i][span[0] : span[1]] for i, span in self._choose().items()}

    def _choose(self) -> dict[int, tuple[int, int] | None]:
        """Chosen ``(start_char, end_char)`` of every example with at least one row; ``None`` for "no answer"."""
        rows = self._rows()
        n = len(self.answers)
        bad = next((int(r[0]) for r in rows if not 0 <= int(r[0]) < n), None)
        if bad is not None:
            raise ValueError(f"example index {bad} outside [0, {n})")
        return choose_answers(rows, self.version_2, self.null_threshold)

    def _synced(self, read: Callable[[], T]) -> T:
        """``read()`` over the states of all processes (a collective call under DDP)."""
        arguments = upstream.sync_arguments(self)
        if arguments is None:  # Between a manual sync() and unsync(): the states are already global.
            return read()
        with self.sync_context(**arguments):
            return read()

    def predictions(self) -> dict[int, str]:
        """Decoded answer of every example seen so far, gathered over all processes, e.g. for a prediction file.

        Uses the same decoding as :meth:`compute`. Under DDP it is a collective call: every process must call it,
        and every process gets the full dictionary.

        Returns:
            Example index to answer text ("" for "no answer"); examples without any row are absent.
        """
        return self._synced(self._decode)

    def spans(self) -> dict[int, tuple[int, int] | None]:
        """The chosen answer of every example as ``(start_char, end_char)`` in its context, ``None`` for "no answer".

        The same choice as :meth:`predictions` (and a collective call under DDP in the same way).
        """
        return self._synced(self._choose)

    def example_scores(self) -> list[tuple[float, float]]:
        """Exact match and F1 (fractions in ``[0, 1]``) of every example, in example order, from the current (local
        or synced) states; an example without rows scores ``(0, 0)``, with a warning giving their number."""
        predictions = self._decode()
        missing = len(self.answers) - len(predictions)
        if missing:
            rank_zero_warn(f"SquadMetric: {missing} of {len(self.answers)} examples have no candidate rows; scored 0.")
        scores = []
        for i, truths in enumerate(self.answers):
            if i in predictions:
                scores.append(
                    (
                        exact_match(predictions[i], truths, version_2=self.version_2),
                        f1(predictions[i], truths, version_2=self.version_2),
                    )
                )
            else:
                scores.append((0.0, 0.0))
        return scores

    @override
    def compute(self) -> dict[str, Tensor]:
        """Exact match and F1 in percent over all examples, as the official scripts report them.

        Returns:
            ``exact`` and ``f1``; with ``version_2`` also ``HasAns_exact``, ``HasAns_f1``, ``NoAns_exact``,
            ``NoAns_f1`` for each group that has examples; float scalar tensors in ``[0, 100]``.
        """
        scores = self.example_scores()
        groups = {"": range(len(self.answers))}
        if self.version_2:
            groups["HasAns_"] = [i for i, truths in enumerate(self.answers) if truths]
            groups["NoAns_"] = [i for i, truths in enumerate(self.answers) if not truths]
        result: dict[str, Tensor] = {}
        for prefix, members in groups.items():
            if members:
                exact, f1s = _means(scores, members)
                result[f"{prefix}exact"] = self._percent(exact)
                result[f"{prefix}f1"] = self._percent(f1s)
        return result

    def _percent(self, fraction: float) -> Tensor:
        """``100 * fraction`` as a float32 scalar on the metric's device."""
        return torch.tensor(100.0 * fraction, dtype=torch.float, device=self.device)


class SquadBreakdown(SquadMetric):
    """:class:`SquadMetric`'s exact match and F1 per group of questions, for ``test-results.json``: by the length of
    the gold answer (words of the first gold answer, normalized as the official scripts do) and, with SQuAD v2.0
    data, by whether the question has an answer. Updated and synced exactly like :class:`SquadMetric`."""

    @override
    def compute(self) -> dict[str, list[dict[str, Any]]]:  # type: ignore[override]
        """``by_answer_length``: rows ``{"answer_words", "questions", "exact", "f1"}`` (percent), shortest first,
        answerable questions only; ``by_answerability``: rows ``{"group", "questions", "exact", "f1"}`` ("has
        answer", "no answer"), groups without questions left out."""
        scores = self.example_scores()
        lengths: dict[str, list[int]] = {name: [] for name, _, _ in ANSWER_LENGTHS}
        for i, truths in enumerate(self.answers):
            if truths:
                words = len(normalize_answer(truths[0]).split())
                name = next(n for n, low, high in ANSWER_LENGTHS if low <= words <= high)
                lengths[name].append(i)
        answerable = {
            "has answer": [i for i, truths in enumerate(self.answers) if truths],
            "no answer": [i for i, truths in enumerate(self.answers) if not truths],
        }

        def rows(key: str, groups: dict[str, list[int]]) -> list[dict[str, Any]]:
            out = []
            for name, members in groups.items():
                if members:
                    exact, f1s = _means(scores, members)
                    out.append({key: name, "questions": len(members), "exact": 100 * exact, "f1": 100 * f1s})
            return out

        return {"by_answer_length": rows("answer_words", lengths), "by_answerability": rows("group", answerable)}


# Gold answer lengths, in words, that the breakdown groups questions by: (name, shortest, longest).
ANSWER_LENGTHS = (
    ("0", 0, 0),  # an answer that normalizes to nothing (only punctuation or articles)
    ("1", 1, 1),
    ("2", 2, 2),
    ("3", 3, 3),
    ("4-5", 4, 5),
    ("6-10", 6, 10),
    ("11+", 11, 1 << 30),
)


def _means(scores: list[tuple[float, float]], members: Sequence[int]) -> tuple[float, float]:
    """Mean exact match and F1 (fractions) of the ``members`` examples."""
    return (sum(scores[i][0] for i in members) / len(members), sum(scores[i][1] for i in members) / len(members))
