"""SQuAD evaluation: official normalisation and scores, run_qa.py-style span decoding, and the DDP-safe metric."""

from __future__ import annotations

import collections
import json
import math
import random
import re
import socket
import string
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ftlit.tasks.qa.answers import best_spans, null_score
from ftlit.tasks.qa.metric import SquadBreakdown, SquadMetric, exact_match, f1, normalize_answer

# --- The official scripts' scoring functions, transcribed verbatim (modulo formatting) as references. ---


def _official_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _v1_f1(prediction, ground_truth):  # evaluate-v1.1.py f1_score
    prediction_tokens = _official_normalize(prediction).split()
    ground_truth_tokens = _official_normalize(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _v2_f1(a_gold, a_pred):  # evaluate-v2.0.py compute_f1
    gold_toks = _official_normalize(a_gold).split() if a_gold else []
    pred_toks = _official_normalize(a_pred).split() if a_pred else []
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _v1_scores(prediction, truths):  # evaluate-v1.1.py metric_max_over_ground_truths
    em = max(float(_official_normalize(prediction) == _official_normalize(t)) for t in truths)
    return em, max(_v1_f1(prediction, t) for t in truths)


def _v2_scores(prediction, truths):  # evaluate-v2.0.py get_raw_scores
    gold = [t for t in truths if _official_normalize(t)] or [""]
    em = max(int(_official_normalize(a) == _official_normalize(prediction)) for a in gold)
    return em, max(_v2_f1(a, prediction) for a in gold)


# --- normalisation and per-question scores ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("a cat and an owl", "cat and owl"),
        ("Theatre another", "theatre another"),  # articles only as whole words
        ("  lots \t of\n  space  ", "lots of space"),
        ("Hello, World!", "hello world"),
        ("U.S.A.", "usa"),
        ("rock-'n'-roll", "rocknroll"),  # punctuation is removed, not replaced by a space
        ("the(a)n", "thean"),  # punctuation goes before articles are looked for
        ("The", ""),
        ("Café «Zürich»", "café «zürich»"),  # only ASCII punctuation is removed
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected
    assert normalize_answer(text) == _official_normalize(text)


def test_exact_match() -> None:
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["eiffel tower"]) == 0.0
    assert exact_match("tower", ["Eiffel tower", "the Tower", "a spire"]) == 1.0  # max over gold answers


def test_f1_partial_overlap_and_max_over_gold() -> None:
    # "the big red dog" -> [big, red, dog]; "a red dog barked" -> [red, dog, barked]: 2 common, P = R = 2/3.
    assert f1("the big red dog", ["a red dog barked"]) == pytest.approx(2 / 3)
    # Against [big, red, dog, ran, away]: 3 common, P = 1, R = 3/5, F1 = 2 * 0.6 / 1.6 = 0.75; the max wins.
    assert f1("the big red dog", ["a red dog barked", "big red dog ran away", "cat"]) == pytest.approx(0.75)
    # Repeated tokens count once per occurrence: [dog, dog] vs [dog] -> 1 common, P = 1/2, R = 1.
    assert f1("dog dog", ["dog"]) == pytest.approx(2 / 3)
    assert f1("cat", ["dog"]) == 0.0
    assert f1("The Dog.", ["dog"]) == 1.0


def test_v2_unanswerable() -> None:
    # No gold answer: the only correct prediction is "".
    assert exact_match("", []) == 1.0 and f1("", []) == 1.0
    assert exact_match("Paris", []) == 0.0 and f1("Paris", []) == 0.0
    # As in evaluate-v2.0.py, "empty" means "normalises to nothing", for predictions and for gold answers.
    assert exact_match("The.", []) == 1.0 and f1("The.", []) == 1.0
    assert exact_match("", ["the"]) == 1.0 and f1("", ["the"]) == 1.0
    assert exact_match("the", ["the", "cat"]) == 0.0  # "the" is dropped from the gold list, "cat" remains
    # An answerable question is not answered by "".
    assert exact_match("", ["Paris"]) == 0.0 and f1("", ["Paris"]) == 0.0


def test_v1_rules() -> None:
    # evaluate-v1.1.py keeps gold answers as given, and its F1 is 0 without a common token, even for "" vs "".
    assert exact_match("", ["the", "cat"], version_2=False) == 1.0
    assert f1("", ["the"], version_2=False) == 0.0
    assert f1("the big red dog", ["a red dog barked"], version_2=False) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one gold answer"):
        f1("x", [], version_2=False)


_PREDICTIONS = ["", "the", "Paris", "paris, France", "The big red dog", "dog dog", "a", "red-dog", "U.S."]
_GOLD_LISTS = [["Paris"], ["the"], ["the", "Paris"], ["big red dog", "a red dog barked"], ["dog"], ["US", "usa"]]


@pytest.mark.parametrize("truths", _GOLD_LISTS)
def test_scores_match_official_scripts(truths: list[str]) -> None:
    for prediction in _PREDICTIONS:
        assert (exact_match(prediction, truths, version_2=False), f1(prediction, truths, version_2=False)) == (
            pytest.approx(_v1_scores(prediction, truths))
        ), prediction
        assert (exact_match(prediction, truths), f1(prediction, truths)) == pytest.approx(
            _v2_scores(prediction, truths)
        ), prediction


# --- span decoding of one window ---

# [CLS] q q [SEP] c c c [SEP]: only tokens 4..6 are in the context.
_OFFSETS = [None, None, None, None, (0, 3), (4, 7), (8, 11), None]


def _logits(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float)


def test_best_spans_all_candidates() -> None:
    starts = _logits(9, 8, 7, 6, 3, 1.5, 0, 2)
    ends = _logits(9, 7, 6, 0, 1, 2, 3, 4)
    # Valid pairs (s, e), s <= e in 4..6: (4,4)=4, (4,5)=5, (4,6)=6, (5,5)=3.5, (5,6)=4.5, (6,6)=3.
    assert best_spans(starts, ends, _OFFSETS) == [
        (0, 11, 6.0),
        (0, 7, 5.0),
        (4, 11, 4.5),
        (0, 3, 4.0),
        (4, 7, 3.5),
        (8, 11, 3.0),
    ]


def test_best_spans_max_answer_length() -> None:
    starts = _logits(9, 8, 7, 6, 3, 1.5, 0, 2)
    ends = _logits(9, 7, 6, 0, 1, 2, 3, 4)
    spans = best_spans(starts, ends, _OFFSETS, max_answer_length=2)
    assert (0, 11, 6.0) not in spans  # three tokens
    assert spans[0] == (0, 7, 5.0)
    assert best_spans(starts, ends, _OFFSETS, max_answer_length=1) == [(0, 3, 4.0), (4, 7, 3.5), (8, 11, 3.0)]


def test_best_spans_skips_end_before_start_and_tokens_outside_context() -> None:
    # The best end (token 4) comes before the best start (token 6); the question and special tokens score highest.
    starts = _logits(20, 20, 20, 20, -1, 0, 5, 20)
    ends = _logits(20, 20, 20, 20, 5, 0, 0, 20)
    spans = best_spans(starts, ends, _OFFSETS)
    assert all(start <= end for start, end, _ in spans)
    assert spans[0] == (8, 11, 5.0)  # (6, 6); the better-scored (6, 4) = 10 is invalid
    # Positions past the end of offsets (padding) are outside the context too.
    assert best_spans(_logits(0, 0, 9, 1), _logits(0, 0, 9, 1), [None, (0, 2)]) == [(0, 2, 0.0)]


def test_best_spans_n_best() -> None:
    starts = _logits(9, 8, 7, 6, 3, 1.5, 0, 2)
    ends = _logits(9, 7, 6, 0, 1, 2, 3, 4)
    # Only the top n_best starts [0, 1, 2, 3] and ends [0, 1, 2, 7] are tried: none is in the context.
    assert best_spans(starts, ends, _OFFSETS, n_best=4) == []
    # With five, start 4 and end 6 enter: the single pair (4, 6).
    assert best_spans(starts, ends, _OFFSETS, n_best=5) == [(0, 11, 6.0)]
    # The result holds at most n_best spans, best first.
    offsets = [(i, i + 1) for i in range(5)]
    ramp = _logits(0, 1, 2, 3, 4)
    assert best_spans(ramp, ramp, offsets, n_best=2) == [(4, 5, 8.0), (3, 5, 7.0)]
    generator = torch.Generator().manual_seed(0)
    starts, ends = torch.randn(50, generator=generator), torch.randn(50, generator=generator)
    scores = [score for _, _, score in best_spans(starts, ends, [(i, i + 1) for i in range(50)])]
    assert len(scores) == 20 and scores == sorted(scores, reverse=True)


def test_best_spans_half_precision_and_null_score() -> None:
    starts = _logits(1.5, 0, 2, 0.25).half()
    ends = _logits(-0.5, 0, 0.5, 3).half()
    assert best_spans(starts, ends, [None, None, (0, 4), (5, 9)], n_best=2) == [(0, 9, 5.0), (0, 4, 2.5)]
    assert null_score(starts, ends) == 1.0


def test_best_spans_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[T\]"):
        best_spans(torch.zeros(2, 3), torch.zeros(2, 3), [])


# --- the metric ---


def _rows(*rows: tuple[int, int, int, float, float]) -> tuple[torch.Tensor, ...]:
    """Update arguments from (example_idx, start_char, end_char, score, null) rows."""
    idx, start, end, score, null = zip(*rows, strict=True)
    return (
        torch.tensor(idx),
        torch.tensor(start),
        torch.tensor(end),
        torch.tensor(score, dtype=torch.float),
        torch.tensor(null, dtype=torch.float),
    )


def _window_rows(
    example_idx: int, starts: torch.Tensor, ends: torch.Tensor, offsets: list[tuple[int, int] | None]
) -> list[tuple[int, int, int, float, float]]:
    """What a validation step sends for one window: its best spans, or one placeholder row."""
    null = null_score(starts, ends)
    spans = best_spans(starts, ends, offsets)
    return [(example_idx, s, e, score, null) for s, e, score in spans] or [(example_idx, -1, -1, -math.inf, null)]


def _values(result: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(value) for key, value in result.items()}


_CONTEXT = "Gustave Eiffel built the tower. It stands in Paris, France."
_PARIS = _CONTEXT.index("Paris")


@pytest.mark.parametrize("version_2", [False, True])
def test_answer_in_second_window(version_2: bool) -> None:
    # Window 1 covers "Gustave Eiffel built the tower." and is confident there is no answer in it (null 10);
    # window 2 covers "It stands in Paris, France." and finds "Paris" (score 8, null 1).
    w1_offsets = [None, None, None, (0, 7), (8, 14), (15, 20), (21, 24), (25, 30), None]
    w1_starts = _logits(6, 0, 0, 1, 0, 0, 0, 0, 0)
    w1_ends = _logits(4, 0, 0, 0, 1, 0, 0, 0, 0)
    w2_offsets = [None, None, None, (32, 34), (35, 41), (42, 44), (_PARIS, _PARIS + 5), (_PARIS + 7, _PARIS + 13), None]
    w2_starts = _logits(0.5, 0, 0, 0, 0, 0, 4, 1, 0)
    w2_ends = _logits(0.5, 0, 0, 0, 0, 0, 4, 3, 0)
    rows = _window_rows(0, w1_starts, w1_ends, w1_offsets) + _window_rows(0, w2_starts, w2_ends, w2_offsets)
    assert rows[0][4] == 10.0 and rows[-1][4] == 1.0

    metric = SquadMetric([_CONTEXT], [["Paris"]], version_2=version_2)
    metric.update(*_rows(*rows))
    # v2: null = min(10, 1) = 1 < best span 8, so the span wins; taking the first or the largest null would not.
    assert metric.predictions() == {0: "Paris"}
    assert _values(metric.compute())["exact"] == 100.0

    # A first window without any valid span adds a placeholder row and still changes nothing.
    metric = SquadMetric([_CONTEXT], [["Paris"]], version_2=version_2)
    starts = _logits(6, 0, 0, 0, 0, 0, 0, 0, 0)
    placeholder = _window_rows(0, starts, starts, [None] * 9)
    assert placeholder == [(0, -1, -1, -math.inf, 12.0)]
    metric.update(*_rows(*placeholder, *_window_rows(0, w2_starts, w2_ends, w2_offsets)))
    assert metric.predictions() == {0: "Paris"}


def test_only_placeholders_predict_empty() -> None:
    metric = SquadMetric([_CONTEXT], [["Paris"]])
    metric.update(*_rows((0, -1, -1, -math.inf, 0.0), (0, -1, -1, -math.inf, 3.0)))
    assert metric.predictions() == {0: ""}
    assert _values(metric.compute()) == {"exact": 0.0, "f1": 0.0}


_ROWS = [
    (0, _PARIS, _PARIS + 5, 8.0, 1.0),  # "Paris"
    (0, _PARIS, _PARIS + 13, 5.0, 1.0),  # "Paris, France"
    (0, 0, 14, 2.0, 10.0),  # "Gustave Eiffel", from the other window
    (1, 0, 5, 3.0, 0.0),  # "Water" and "boils" tie at 3.0
    (1, 6, 11, 3.0, 0.0),
    (1, 0, 11, 1.0, 0.0),
]
_CONTEXTS = [_CONTEXT, "Water boils at 100 degrees."]
_ANSWERS = [["Paris"], ["boils"]]


@pytest.mark.parametrize("version_2", [False, True])
def test_duplicate_and_reordered_rows_change_nothing(version_2: bool) -> None:
    reference = SquadMetric(_CONTEXTS, _ANSWERS, version_2=version_2)
    reference.update(*_rows(*_ROWS))
    expected_predictions = reference.predictions()
    expected = _values(reference.compute())
    # The tie goes to the smaller start whatever the row order: "Water", so EM 50.
    assert expected_predictions == {0: "Paris", 1: "Water"}
    assert expected == {"exact": 50.0, "f1": 50.0, **({"HasAns_exact": 50.0, "HasAns_f1": 50.0} if version_2 else {})}

    rng = random.Random(0)
    for _ in range(5):
        # A distributed sampler repeats samples to fill the last batches: some rows come twice or more.
        rows = _ROWS + rng.choices(_ROWS, k=4)
        rng.shuffle(rows)
        metric = SquadMetric(_CONTEXTS, _ANSWERS, version_2=version_2)
        for chunk in (rows[:3], rows[3:]):
            metric.update(*_rows(*chunk))
        assert metric.predictions() == expected_predictions
        assert _values(metric.compute()) == expected


def test_null_threshold() -> None:
    rows = _rows((0, _PARIS, _PARIS + 5, 4.0, 5.0))  # null - best = 1.0

    def predict(version_2: bool, null_threshold: float) -> str:
        metric = SquadMetric([_CONTEXT], [["Paris"]], version_2=version_2, null_threshold=null_threshold)
        metric.update(*rows)
        return metric.predictions()[0]

    assert predict(True, 0.0) == ""
    assert predict(True, 0.5) == ""
    assert predict(True, 1.0) == "Paris"  # the null must exceed the span by *more* than the threshold
    assert predict(True, 1.5) == "Paris"
    assert predict(False, 0.0) == "Paris"  # v1.1 always answers


def test_has_ans_and_no_ans_split() -> None:
    contexts = [
        "Paris is the capital of France.",
        "The big red dog barked loudly.",
        "Nothing here.",
        "Or here, loudly.",
    ]
    answers = [["Paris"], ["big red dog"], [], []]
    metric = SquadMetric(contexts, answers, version_2=True)
    metric.update(
        *_rows(
            (0, 0, 5, 5.0, 0.0),  # "Paris": right
            (1, 8, 22, 5.0, 0.0),  # "red dog barked": EM 0, F1 2/3 against "big red dog"
            (2, 0, 7, 1.0, 4.0),  # null wins: "" is right
            (3, 9, 15, 5.0, 0.0),  # "loudly" for an unanswerable question: wrong
        )
    )
    assert metric.predictions() == {0: "Paris", 1: "red dog barked", 2: "", 3: "loudly"}
    assert _values(metric.compute()) == pytest.approx(
        {
            "exact": 50.0,
            "f1": 100 * (1 + 2 / 3 + 1 + 0) / 4,
            "HasAns_exact": 50.0,
            "HasAns_f1": 100 * (1 + 2 / 3) / 2,
            "NoAns_exact": 50.0,
            "NoAns_f1": 50.0,
        }
    )


def test_breakdown_scores_each_answer_length_and_answerability_group() -> None:
    contexts = ["Paris is the capital of France.", "The big red dog barked loudly.", "Nothing here.", "Or here."]
    answers = [["Paris"], ["the big red dog"], [], []]  # "the" is not a word of the answer once normalized
    rows = _rows((0, 0, 5, 5.0, 0.0), (1, 8, 22, 5.0, 0.0), (2, 0, 7, 1.0, 4.0), (3, 0, 2, 5.0, 0.0))
    metric, breakdown = SquadMetric(contexts, answers, version_2=True), SquadBreakdown(contexts, answers, True)
    metric.update(*rows)
    breakdown.update(*rows)
    overall, groups = _values(metric.compute()), breakdown.compute()
    assert groups["by_answer_length"] == [
        {"answer_words": "1", "questions": 1, "exact": 100.0, "f1": 100.0},
        {"answer_words": "3", "questions": 1, "exact": 0.0, "f1": pytest.approx(100 * 2 / 3)},
    ]
    # The answerability groups are the logged HasAns_/NoAns_ scores.
    has, no = groups["by_answerability"]
    assert (has["group"], has["questions"], no["group"], no["questions"]) == ("has answer", 2, "no answer", 2)
    assert (has["exact"], has["f1"]) == pytest.approx((overall["HasAns_exact"], overall["HasAns_f1"]))
    assert (no["exact"], no["f1"]) == pytest.approx((overall["NoAns_exact"], overall["NoAns_f1"]))


def test_groups_without_examples_are_left_out() -> None:
    metric = SquadMetric(["ab"], [[]], version_2=True)
    metric.update(*_rows((0, -1, -1, -math.inf, 0.0)))
    assert _values(metric.compute()) == {"exact": 100.0, "f1": 100.0, "NoAns_exact": 100.0, "NoAns_f1": 100.0}


@pytest.mark.parametrize("version_2", [False, True])
def test_examples_without_rows_score_zero(version_2: bool) -> None:
    # Example 1 is unanswerable under v2, but it was never evaluated: it counts as wrong, not as a right "".
    answers = [["Paris"], [] if version_2 else ["boils"]]
    metric = SquadMetric(_CONTEXTS, answers, version_2=version_2)
    metric.update(*_rows((0, _PARIS, _PARIS + 5, 8.0, 1.0)))
    assert metric.predictions() == {0: "Paris"}
    with pytest.warns(UserWarning, match="1 of 2 examples have no candidate rows"):
        result = _values(metric.compute())
    assert result["exact"] == 50.0 and result["f1"] == 50.0
    if version_2:
        assert result["NoAns_exact"] == 0.0


def test_merge_state_equals_one_metric_on_all_rows() -> None:
    whole = SquadMetric(_CONTEXTS, _ANSWERS, version_2=True)
    whole.update(*_rows(*_ROWS))
    # Example 0's windows are split between the two parts, and part b holds no row of example 1.
    part_a = SquadMetric(_CONTEXTS, _ANSWERS, version_2=True)
    part_a.update(*_rows(*_ROWS[1:2], *_ROWS[3:]))
    part_b = SquadMetric(_CONTEXTS, _ANSWERS, version_2=True)
    part_b.update(*_rows(_ROWS[0], _ROWS[2]))
    assert part_a.predictions() == {0: "Paris, France", 1: "Water"}  # alone, part a gets example 0 wrong

    part_a.merge_state(part_b)
    assert part_a.predictions() == whole.predictions()
    assert _values(part_a.compute()) == _values(whole.compute())


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric SquadMetric was called before")
def test_concatenated_states_equal_one_metric_on_all_rows() -> None:
    # After a dist sync, each state is one tensor: the concatenation of all processes' rows, process by process.
    whole = SquadMetric(_CONTEXTS, _ANSWERS, version_2=True)
    whole.update(*_rows(*_ROWS))
    ranks = [_rows(*_ROWS[0::2]), _rows(*_ROWS[1::2])]
    synced = SquadMetric(_CONTEXTS, _ANSWERS, version_2=True)
    for name, column in zip(
        ("example_idx", "start_char", "end_char", "score", "null"), zip(*ranks, strict=True), strict=True
    ):
        setattr(synced, name, torch.cat(column))
    assert synced.predictions() == whole.predictions()
    assert _values(synced.compute()) == _values(whole.compute())


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric SquadMetric was called before")
def test_process_without_rows_sends_states_of_the_right_dtype() -> None:
    # torchmetrics would send a float32 placeholder for an empty state; gathered with the long tensors of the other
    # processes, that aborts gloo. A one-process "gather" shows what is sent.
    sent: list[torch.dtype] = []

    def gather(tensor: torch.Tensor, group: object = None) -> list[torch.Tensor]:
        sent.append(tensor.dtype)
        return [tensor]

    metric = SquadMetric(_CONTEXTS, _ANSWERS, dist_sync_fn=gather, distributed_available_fn=lambda: True)
    with pytest.warns(UserWarning, match="no candidate rows"):
        assert _values(metric.compute()) == {"exact": 0.0, "f1": 0.0}
    assert sorted(sent, key=str) == sorted([torch.long] * 3 + [torch.float] * 2, key=str)
    assert metric.predictions() == {}


def test_metric_validates_inputs() -> None:
    with pytest.raises(ValueError, match="one entry per example"):
        SquadMetric(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="version_2=True"):
        SquadMetric(["a"], [[]])
    metric = SquadMetric(["a"], [["a"]])
    with pytest.raises(ValueError, match="same N"):
        metric.update(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(3))
    metric.update(*_rows((1, 0, 1, 1.0, 0.0)))
    with pytest.raises(ValueError, match="outside"):
        metric.predictions()


# --- a real two-process sync (gloo on localhost) ---


def _ddp_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # Example 0's windows on both processes; process 1 repeats a row, as a padding sampler would.
        split = SquadMetric(_CONTEXTS, _ANSWERS, version_2=True)
        split.update(*_rows(*(_ROWS[2:] if rank == 0 else [_ROWS[0], _ROWS[1], _ROWS[0]])))
        # Process 1 has no row at all.
        lopsided = SquadMetric(_CONTEXTS, _ANSWERS, version_2=True)
        if rank == 0:
            lopsided.update(*_rows(*_ROWS))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "compute before update" on the empty process
            result = {
                name: {"scores": _values(metric.compute()), "predictions": metric.predictions()}
                for name, metric in (("split", split), ("lopsided", lopsided))
            }
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two fresh interpreters importing torch: seconds, not milliseconds
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_process_sync_equals_one_metric_on_all_rows(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    whole = SquadMetric(_CONTEXTS, _ANSWERS, version_2=True)
    whole.update(*_rows(*_ROWS))
    expected = {"scores": _values(whole.compute()), "predictions": {str(k): v for k, v in whole.predictions().items()}}
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result == {"split": expected, "lopsided": expected}, rank
