"""Entity-level span F1: hand-worked cases, agreement with seqeval's default mode, and DDP-style state merging."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from ftlit.tasks.ner.metric import SpanF1, extract_entities, split_tag

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
ID = {name: i for i, name in enumerate(LABELS)}
IGN = -100


def ids(*tags: str) -> list[int]:
    """Tag ids for tag strings; "-" stands for the ignore index."""
    return [IGN if t == "-" else ID[t] for t in tags]


def run(preds: list[list[int]], target: list[list[int]], labels: list[str] = LABELS) -> dict[str, float]:
    """One update over a batch (rows padded with -100) and the computed scores as floats."""
    width = max((len(r) for r in preds), default=0)
    pad = [[*r, *[IGN] * (width - len(r))] for r in preds], [[*r, *[IGN] * (width - len(r))] for r in target]
    metric = SpanF1(labels)
    metric.update(torch.tensor(pad[0], dtype=torch.long), torch.tensor(pad[1], dtype=torch.long))
    return {k: float(v) for k, v in metric.compute().items()}


# --- extract_entities -------------------------------------------------------------------------------------------------

ENTITY_CASES = [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    (["O", "I-PER", "I-PER"], [("PER", 1, 2)]),  # I- after O starts an entity
    (["I-PER", "I-PER"], [("PER", 0, 1)]),  # I- at the start, continued by I-
    (["B-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),  # type switch ends the chunk
    (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),  # adjacent B- are two entities
    (["I-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),
    (["O", "O", "B-LOC", "I-LOC"], [("LOC", 2, 3)]),  # entity running to the end
    (["B-PER", "O", "I-PER"], [("PER", 0, 0), ("PER", 2, 2)]),
    (["O", "O"], []),
    ([], []),
    (["B-MISC-X", "I-MISC-X"], [("MISC-X", 0, 1)]),  # type is everything after the first "-"
    (["B", "I", "O", "I", "B"], [("_", 0, 1), ("_", 3, 3), ("_", 4, 4)]),  # bare tags: seqeval's type "_"
    (["S-PER", "B-LOC", "I-LOC", "E-LOC", "E-LOC"], [("PER", 0, 0), ("LOC", 1, 3), ("LOC", 4, 4)]),  # IOBES
]


@pytest.mark.parametrize(("tags", "expected"), ENTITY_CASES)
def test_extract_entities_hand_worked(tags: list[str], expected: list[tuple[str, int, int]]) -> None:
    assert extract_entities(tags) == expected


@pytest.mark.parametrize(("tags", "expected"), ENTITY_CASES)
def test_extract_entities_hand_worked_agree_with_seqeval(tags: list[str], expected: list) -> None:
    get_entities = pytest.importorskip("seqeval.metrics.sequence_labeling").get_entities
    assert get_entities(list(tags)) == expected


@pytest.mark.parametrize("bad", ["", "o", "X-PER", "B-", "O-PER", "BI-PER", ".-PER", "b-PER"])
def test_unsupported_tags_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="Unsupported tag"):
        extract_entities(["O", bad])
    with pytest.raises(ValueError, match="Unsupported tag"):
        SpanF1(["O", bad])


def test_split_tag() -> None:
    assert split_tag("O") == ("O", "_")
    assert split_tag("I-LOC") == ("I", "LOC")
    assert split_tag("S") == ("S", "_")


# --- SpanF1, hand-worked ----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric SpanF1 was called before")
def test_types_are_sorted_and_keys_complete() -> None:
    metric = SpanF1(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC"])
    assert metric.types == ["LOC", "MISC", "PER"]
    assert metric.tp.dtype == torch.long and metric.tp.shape == (3,)
    scores = metric.compute()
    expected = {"precision", "recall", "f1"} | {f"{s}_{t}" for s in ("precision", "recall", "f1") for t in metric.types}
    assert set(scores) == expected


def test_exact_match() -> None:
    tags = ids("B-PER", "I-PER", "O", "B-LOC")
    scores = run([tags], [tags])
    assert scores["precision"] == scores["recall"] == scores["f1"] == 1.0
    assert scores["f1_PER"] == scores["f1_LOC"] == 1.0


def test_partial_overlap_is_one_false_positive_and_one_false_negative() -> None:
    metric = SpanF1(LABELS)
    preds = torch.tensor([ids("B-PER", "I-PER", "O", "B-LOC")])
    target = torch.tensor([ids("B-PER", "I-PER", "I-PER", "B-LOC")])
    metric.update(preds, target)
    # types sorted: LOC, PER. PER (0,1) vs (0,2): no credit for overlap.
    assert metric.tp.tolist() == [1, 0]
    assert metric.fp.tolist() == [0, 1]
    assert metric.fn.tolist() == [0, 1]
    scores = {k: float(v) for k, v in metric.compute().items()}
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(0.5)
    assert scores["f1_PER"] == 0.0
    assert scores["f1_LOC"] == 1.0


def test_i_after_o_starts_an_entity() -> None:
    # Gold is B-PER I-PER; a prediction of O-less "I-PER I-PER" is the same span, so it is a match.
    scores = run([ids("O", "I-PER", "I-PER")], [ids("O", "B-PER", "I-PER")])
    assert scores["f1"] == 1.0
    # ...but a lone I-PER after O is its own one-token entity, not nothing.
    scores = run([ids("B-PER", "O", "I-PER")], [ids("B-PER", "O", "B-PER")])
    assert scores["f1"] == 1.0


def test_type_switch_gives_two_entities() -> None:
    scores = run([ids("B-PER", "I-LOC")], [ids("B-PER", "B-LOC")])
    assert scores["f1"] == 1.0
    assert scores["f1_PER"] == scores["f1_LOC"] == 1.0


def test_adjacent_b_tags_are_two_entities() -> None:
    # Predicting one two-token PER where gold has two one-token PERs: 1 fp, 2 fn.
    scores = run([ids("B-PER", "I-PER")], [ids("B-PER", "B-PER")])
    assert scores["precision"] == 0.0 and scores["recall"] == 0.0 and scores["f1"] == 0.0
    scores = run([ids("B-PER", "B-PER", "O")], [ids("B-PER", "B-PER", "O")])
    assert scores["f1"] == 1.0


def test_entity_at_sequence_end() -> None:
    metric = SpanF1(LABELS)
    metric.update(torch.tensor([ids("O", "B-LOC", "I-LOC")]), torch.tensor([ids("O", "B-LOC", "I-LOC")]))
    assert metric.tp.tolist() == [1, 0]
    # Same sentence padded: the entity still closes at the last kept token.
    metric.update(torch.tensor([ids("O", "B-LOC", "I-LOC", "B-LOC")]), torch.tensor([ids("O", "B-LOC", "I-LOC", "-")]))
    assert metric.tp.tolist() == [2, 0]
    assert metric.fp.tolist() == [0, 0]


def test_ignored_positions_are_dropped_not_read_as_o() -> None:
    metric = SpanF1(LABELS)
    # Sub-word continuation in the middle of an entity, and padding at the end with junk predictions.
    preds = torch.tensor([ids("B-PER", "B-LOC", "I-PER", "B-LOC", "B-LOC")])
    target = torch.tensor([ids("B-PER", "-", "I-PER", "-", "-")])
    metric.update(preds, target)
    assert metric.tp.tolist() == [0, 1]  # one PER (0,1) over the kept positions
    assert metric.fp.tolist() == [0, 0]
    assert metric.fn.tolist() == [0, 0]


def test_per_type_numbers() -> None:
    preds = [ids("B-PER", "I-PER", "O", "B-LOC", "O", "B-PER", "I-PER")]
    target = [ids("B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "I-LOC")]
    scores = run(preds, target)
    # PER: tp 1, fp 1, fn 0. LOC: tp 1, fp 0, fn 1. Micro: tp 2, fp 1, fn 1.
    assert scores["precision_PER"] == pytest.approx(0.5)
    assert scores["recall_PER"] == pytest.approx(1.0)
    assert scores["f1_PER"] == pytest.approx(2 / 3)
    assert scores["precision_LOC"] == pytest.approx(1.0)
    assert scores["recall_LOC"] == pytest.approx(0.5)
    assert scores["f1_LOC"] == pytest.approx(2 / 3)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)


def test_f1_is_harmonic_mean_of_micro_precision_and_recall() -> None:
    # tp 1, fp 0, fn 2: P 1, R 1/3, F 0.5.
    scores = run([ids("B-PER", "O", "O")], [ids("B-PER", "B-LOC", "B-PER")])
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric SpanF1 was called before")
def test_empty_predictions_give_zero_not_nan() -> None:
    scores = run([ids("O", "O", "O")], [ids("B-PER", "O", "B-LOC")])
    assert scores["precision"] == 0.0 and scores["recall"] == 0.0 and scores["f1"] == 0.0
    # Nothing anywhere: everything undefined, reported as 0.
    scores = run([ids("O", "O")], [ids("O", "O")])
    assert all(v == 0.0 for v in scores.values())
    assert SpanF1(LABELS).compute()["f1"].item() == 0.0


def test_counts_accumulate_over_updates_and_reset() -> None:
    metric = SpanF1(LABELS)
    gold = torch.tensor([ids("B-PER", "O")])
    metric.update(gold, gold)
    metric.update(torch.tensor([ids("O", "O")]), gold)
    assert metric.tp.tolist() == [0, 1] and metric.fn.tolist() == [0, 1]
    assert float(metric.compute()["recall"]) == pytest.approx(0.5)
    metric.reset()
    assert metric.tp.tolist() == [0, 0] and metric.fn.tolist() == [0, 0]


def test_bad_inputs_are_rejected() -> None:
    metric = SpanF1(LABELS)
    with pytest.raises(ValueError, match="batch, seq_len"):
        metric.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch, seq_len"):
        metric.update(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="preds has tag ids outside"):
        metric.update(torch.tensor([[0, len(LABELS)]]), torch.tensor([[0, 0]]))
    # An out-of-range prediction at an ignored position is fine.
    metric.update(torch.tensor([[0, len(LABELS)]]), torch.tensor([[0, IGN]]))


# --- agreement with seqeval on random data ----------------------------------------------------------------------------

LABEL_SETS = {
    "iob2": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"],
    "iobes": ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"],
    "bare": ["O", "B", "I"],
}


def random_batches(labels: list[str], seed: int, sentences: int = 300, batch: int = 16):
    """Random gold sentences, predictions that copy gold with some corruption, random ignored positions.

    Returns:
        Tensor batches ``[(preds, target), ...]`` and the kept tag strings ``(y_pred, y_true)`` per sentence.
    """
    rng = random.Random(seed)
    n = len(labels)
    rows = []
    for _ in range(sentences):
        length = rng.randint(0, 14)
        gold = [0 if rng.random() < 0.4 else rng.randrange(n) for _ in range(length)]
        pred = [g if rng.random() < 0.8 else rng.randrange(n) for g in gold]
        ignored = [rng.random() < 0.15 for _ in range(length)]
        target = [IGN if skip else g for g, skip in zip(gold, ignored, strict=True)]
        rows.append((pred, target))

    batches, y_pred, y_true = [], [], []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        width = max(len(p) for p, _ in chunk)
        preds = torch.tensor([[*p, *[0] * (width - len(p))] for p, _ in chunk], dtype=torch.long)  # junk under pad
        target = torch.tensor([[*t, *[IGN] * (width - len(t))] for _, t in chunk], dtype=torch.long)
        batches.append((preds, target))
        for p, t in chunk:
            y_pred.append([labels[a] for a, b in zip(p, t, strict=True) if b != IGN])
            y_true.append([labels[b] for b in t if b != IGN])
    return batches, y_pred, y_true


@pytest.mark.parametrize("scheme", sorted(LABEL_SETS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_seqeval_default_mode(scheme: str, seed: int) -> None:
    sm = pytest.importorskip("seqeval.metrics")
    get_entities = pytest.importorskip("seqeval.metrics.sequence_labeling").get_entities
    labels = LABEL_SETS[scheme]
    batches, y_pred, y_true = random_batches(labels, seed)

    for seq in y_pred + y_true:
        assert extract_entities(seq) == get_entities(list(seq))

    metric = SpanF1(labels)
    for preds, target in batches:
        metric.update(preds, target)
    ours = {k: float(v) for k, v in metric.compute().items()}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval's UndefinedMetricWarning for empty classes
        assert ours["precision"] == pytest.approx(sm.precision_score(y_true, y_pred), abs=1e-6)
        assert ours["recall"] == pytest.approx(sm.recall_score(y_true, y_pred), abs=1e-6)
        assert ours["f1"] == pytest.approx(sm.f1_score(y_true, y_pred), abs=1e-6)
        report = sm.classification_report(y_true, y_pred, output_dict=True)

    types = [k for k in report if not k.endswith(" avg")]
    assert types and set(types) <= set(metric.types)
    for type_ in types:
        assert ours[f"precision_{type_}"] == pytest.approx(report[type_]["precision"], abs=1e-6), type_
        assert ours[f"recall_{type_}"] == pytest.approx(report[type_]["recall"], abs=1e-6), type_
        assert ours[f"f1_{type_}"] == pytest.approx(report[type_]["f1-score"], abs=1e-6), type_
    # The micro average is a non-trivial number, so the comparison above means something.
    assert 0.05 < ours["f1"] < 0.95


# --- distributed correctness ------------------------------------------------------------------------------------------


def _halves(seed: int = 3, **kwargs) -> tuple[SpanF1, SpanF1, SpanF1]:
    """A metric per half of a random data set (halves of unequal size), and one over all of it."""
    batches, _, _ = random_batches(LABEL_SETS["iob2"], seed, sentences=200, batch=10)
    first, second, full = SpanF1(LABEL_SETS["iob2"], **kwargs), SpanF1(LABEL_SETS["iob2"]), SpanF1(LABEL_SETS["iob2"])
    for i, (preds, target) in enumerate(batches):
        (first if i < 7 else second).update(preds, target)
        full.update(preds, target)
    return first, second, full


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_merge_state_equals_single_metric() -> None:
    first, second, full = _halves()
    assert not torch.equal(first.tp, second.tp)  # otherwise mean and sum reductions would agree
    first.merge_state(second)
    for name in ("tp", "fp", "fn"):
        assert torch.equal(getattr(first, name), getattr(full, name)), name
    _assert_same(first.compute(), full.compute())


def test_compute_under_dist_sync_equals_single_metric() -> None:
    """Rank 0 of two: ``compute()`` gathers both ranks' states through ``dist_sync_fn`` and reduces them."""
    others: dict[int, torch.Tensor] = {}

    def fake_all_gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        """What ``gather_all_tensors`` returns on rank 0: this rank's tensor, then rank 1's."""
        return [tensor, others[id(tensor)]]

    first, second, full = _halves(dist_sync_fn=fake_all_gather, distributed_available_fn=lambda: True)
    others.update({id(getattr(first, name)): getattr(second, name) for name in ("tp", "fp", "fn")})
    local_tp = first.tp.clone()

    _assert_same(first.compute(), full.compute())
    assert torch.equal(first.tp, local_tp)  # unsynced again after compute, ready for more updates
