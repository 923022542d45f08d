"""Extractive QA: SQuAD JSON and flat sources, windows and labels, bad input, decoding, fit/test/predict, DDP."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from helpers.qa import CONTEXT_WORDS, TASK, fit_args, toy_qa_rows, write_squad
from helpers.runs import ftlit, last_metrics
from torchmetrics import MetricCollection

from conftest import TEST_FIXTURES, cli_args, cli_error, column, encoded, read_metrics, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.core.datamodule import META
from ftlit.errors import ConfigError
from ftlit.tasks.qa.answers import answer_row
from ftlit.tasks.qa.data import CONTEXT, END, EXAMPLE_IDX, OFFSETS, START, QuestionAnsweringDataModule
from ftlit.tasks.qa.metric import SquadMetric, exact_match
from ftlit.tasks.qa.model import QuestionAnswering

FIXTURES = TEST_FIXTURES / "qa"
V1, V2 = FIXTURES / "squad_v1.json", FIXTURES / "squad_v2.json"
DDP = ("--trainer.strategy=ddp", "--trainer.devices=2")


def make(tiny_bert: str, **kwargs) -> QuestionAnsweringDataModule:
    kwargs.setdefault("val_fraction", 0)
    kwargs.setdefault("max_length", 64)
    kwargs.setdefault("doc_stride", 16)
    return QuestionAnsweringDataModule(tokenizer=tiny_bert, **kwargs)


def window_text(dm: QuestionAnsweringDataModule, window: dict) -> str:
    """The tokens of a window's labelled span, joined back into text."""
    tokens = dm.tokenizer.convert_ids_to_tokens(window["input_ids"][window[START] : window[END] + 1])
    return dm.tokenizer.convert_tokens_to_string(tokens)


# --- sources ------------------------------------------------------------------------------------------------------


def test_squad_v1_json_is_read_into_one_row_per_question(tiny_bert):
    dm = make(tiny_bert, train_file=str(V1))
    train = dm.raw["train"]
    assert list(train["id"]) == ["m1", "m2", "f1", "f2"]
    assert list(train["title"]) == ["Movies", "Movies", "Food", "Food"]
    assert train[0]["answers"] == {"text": ["very good", "good"], "answer_start": [14, 19]}
    assert train[1]["context"] == train[0]["context"]  # two questions on one paragraph
    assert train[1]["question"] == "  the acting ?"
    windows = encoded(dm)
    # Training uses the first answer ("very good"), as run_qa.py does; the question's leading spaces are gone.
    assert window_text(dm, windows[0]) == "very good"
    tokens = dm.tokenizer.convert_ids_to_tokens(windows[1]["input_ids"])
    assert tokens[:5] == ["[CLS]", "the", "acting", "?", "[SEP]"]
    assert [window_text(dm, w) for w in windows.select(range(1, 4))] == ["quite awful", "lovely", "boring"]


def test_squad_v2_json_needs_version_2_and_keeps_plausible_answers_out(tiny_bert):
    with pytest.raises(ConfigError, match=r"^data\.version_2_with_negative: row 1 of the train split \(id 'a2'\) has"):
        make(tiny_bert, train_file=str(V2)).validate()
    dm = make(tiny_bert, train_file=str(V2), version_2_with_negative=True)
    assert [a["text"] for a in dm.raw["train"]["answers"]] == [["fine"], [], [], ["quite awful"]]
    windows = encoded(dm)
    # Unanswerable questions point at [CLS] (token 0).
    assert [(w[START], w[END]) for w in windows.select([1, 2])] == [(0, 0), (0, 0)]
    assert [window_text(dm, w) for w in windows.select([0, 3])] == ["fine", "quite awful"]


def _as_list(rows: list[dict]) -> list[dict]:
    """Rows with SQuAD's own answer layout (a list of ``{"text", "answer_start"}``) instead of the Hub's."""
    return [
        {
            **r,
            "answers": [
                dict(zip(("text", "answer_start"), a, strict=True)) for a in zip(*r["answers"].values(), strict=True)
            ],
        }
        for r in rows
    ]


@pytest.mark.parametrize("source", ["jsonl", "jsonl-list", "json-records", "csv", "parquet", "hub"])
def test_flat_files_and_hub_datasets_encode_like_squad_json(tiny_bert, tmp_path, source):
    reference = encoded(make(tiny_bert, train_file=str(V1), cache_dir=str(tmp_path / "c1")))
    rows = [dict(r) for r in make(tiny_bert, train_file=str(V1)).raw["train"]]
    kind = source.split("-")[0]
    if source == "jsonl-list":
        rows = _as_list(rows)
    if kind == "jsonl":
        options = {"train_file": str(write_jsonl(tmp_path / "train.jsonl", rows))}
    elif kind == "json":  # a JSON array of records: not SQuAD's nesting, so read as flat rows
        (tmp_path / "train.json").write_text(json.dumps(rows))
        options = {"train_file": str(tmp_path / "train.json")}
    elif kind == "csv":
        table = datasets.Dataset.from_list([{**r, "answers": json.dumps(r["answers"])} for r in rows])
        table.to_csv(str(tmp_path / "train.csv"), index=False)
        options = {"train_file": str(tmp_path / "train.csv")}
    elif kind == "parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
        options = {"train_file": str(tmp_path / "train.parquet")}
    else:  # a Hub-style dataset folder: split folders of parquet files, squad's columns and features
        (tmp_path / "hub" / "train").mkdir(parents=True)
        datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "hub" / "train" / "data.parquet"))
        options = {"dataset": str(tmp_path / "hub")}
    windows = encoded(make(tiny_bert, cache_dir=str(tmp_path / "c2"), **options))
    for key in ("input_ids", START, END):
        assert list(windows[key]) == list(reference[key]), key


def test_column_options_pick_the_columns(tiny_bert, tmp_path):
    rows = toy_qa_rows(6, 0)
    renamed = [{"qid": r["id"], "q": r["question"], "passage": r["context"], "gold": r["answers"]} for r in rows]
    path = str(write_jsonl(tmp_path / "renamed.jsonl", renamed))
    columns = {"question_column": "q", "context_column": "passage", "answers_column": "gold", "id_column": "qid"}
    default = str(write_jsonl(tmp_path / "default.jsonl", rows))
    expected = encoded(
        make(tiny_bert, train_file=default, validation_file=default, cache_dir=str(tmp_path / "a")), "validation"
    )
    dm = make(
        tiny_bert, train_file=path, validation_file=path, predict_file=path, cache_dir=str(tmp_path / "b"), **columns
    )
    got = encoded(dm, "validation")
    for key in ("input_ids", START, END, OFFSETS, CONTEXT):
        assert list(got[key]) == list(expected[key]), key
    assert list(dm.datasets["predict"]["id"]) == [r["id"] for r in rows]
    # SQuAD JSON files are read into the configured columns.
    squad = make(tiny_bert, train_file=str(V1), **columns)
    assert {"qid", "q", "passage", "gold"} <= set(squad.raw["train"].column_names)
    # Without an id column, predictions are numbered by row.
    bare = str(
        write_jsonl(tmp_path / "bare.jsonl", [{"question": r["question"], "context": r["context"]} for r in rows])
    )
    unnamed = make(tiny_bert, predict_file=bare, cache_dir=str(tmp_path / "c"))
    assert list(encoded(unnamed, "predict")["id"]) == [str(i) for i in range(6)]


# --- windows and labels -------------------------------------------------------------------------------------------

# max_length 20 with the 3-token question and 3 special tokens leaves 14 context tokens a window; doc_stride 4 makes
# windows start every 10 context tokens: [0, 14), [10, 24), [20, 34), [30, 40).
BOUNDARY = {"max_length": 20, "doc_stride": 4}


def boundary_rows() -> list[dict]:
    """One 40-word context (one token a word), asked three questions whose answers sit around window boundaries."""
    words = random.Random(3).choices([w for w in CONTEXT_WORDS if w != "a"], k=40)
    words[12:16] = ["a", "very", "lovely", "plot"]  # tokens 12-15: straddles the end of window 1, whole in window 2
    words[17:19] = ["very", "good"]  # tokens 17-18: window 2 only
    words[20:22] = ["superb", "food"]  # tokens 20-21: in the overlap of windows 2 and 3
    context = " ".join(words)

    def answer(first: int, last: int) -> dict:
        start = len(" ".join(words[:first])) + 1
        return {"text": [" ".join(words[first : last + 1])], "answer_start": [start]}

    question = "the plot ?"
    return [
        {"id": "straddle", "question": question, "context": context, "answers": answer(12, 15)},
        {"id": "second", "question": question, "context": context, "answers": answer(17, 18)},
        {"id": "overlap", "question": question, "context": context, "answers": answer(20, 21)},
    ]


def test_windows_label_the_answer_only_where_it_is_whole(tiny_bert, tmp_path):
    rows = boundary_rows()
    path = str(write_jsonl(tmp_path / "long.jsonl", rows))
    dm = make(tiny_bert, train_file=path, validation_file=path, **BOUNDARY)
    train, validation = encoded(dm), dm.datasets["validation"]
    assert len(validation) == 12 and list(validation[EXAMPLE_IDX]) == [0] * 4 + [1] * 4 + [2] * 4
    labelled = {r["id"]: [w for w in range(4) if validation[4 * i + w][START] != 0] for i, r in enumerate(rows)}
    assert labelled == {"straddle": [1], "second": [1], "overlap": [1, 2]}
    for window in validation:
        if window[START] == 0:
            assert window[END] == 0
            continue
        row = rows[window[EXAMPLE_IDX]]
        offsets = window[OFFSETS]
        # The label's characters are the exact answer text, found through the window's context offsets.
        text = row["context"][offsets[window[START]][0] : offsets[window[END]][1]]
        assert text == row["answers"]["text"][0]
        assert window_text(dm, window) == text
    # Train windows carry the same labels (without the evaluation columns).
    assert list(train[START]) == list(validation[START]) and list(train[END]) == list(validation[END])
    assert OFFSETS not in train.column_names
    # Each example's context is stored once, on its first window.
    assert [c is not None for c in validation[CONTEXT]] == [True, False, False, False] * 3
    contexts, answers = dm.examples("validation")
    assert contexts == [r["context"] for r in rows] and answers == [r["answers"]["text"] for r in rows]


def test_every_labelled_window_decodes_to_its_answer(tiny_bert, tmp_path):
    rows = toy_qa_rows(40, 5, unanswerable=0.2, words=(10, 60))
    path = str(write_jsonl(tmp_path / "long.jsonl", rows))
    dm = make(
        tiny_bert, train_file=path, validation_file=path, max_length=24, doc_stride=6, version_2_with_negative=True
    )
    train, validation = encoded(dm), dm.datasets["validation"]
    counts = {"labelled": 0, "cls": 0}
    for window in validation:
        row = rows[window[EXAMPLE_IDX]]
        context_tokens = [o for o in window[OFFSETS] if o[0] >= 0]
        texts, starts = row["answers"]["text"], row["answers"]["answer_start"]
        holds = bool(texts) and context_tokens[0][0] <= starts[0] and context_tokens[-1][1] >= starts[0] + len(texts[0])
        assert (window[START] != 0) == holds
        counts["labelled" if holds else "cls"] += 1
        if holds:
            offsets = window[OFFSETS]
            assert row["context"][offsets[window[START]][0] : offsets[window[END]][1]] == texts[0]
            assert window_text(dm, window) == texts[0]
    assert counts["labelled"] >= 20 and counts["cls"] >= 20, counts
    assert len(validation) > len(rows) and list(train[START]) == list(validation[START])


def test_doc_stride_sets_the_overlap_of_windows(tiny_bert, tmp_path):
    path = str(write_jsonl(tmp_path / "long.jsonl", boundary_rows()[:1]))
    windows = {}
    for stride in (2, 8):
        dm = make(
            tiny_bert,
            train_file=path,
            validation_file=path,
            max_length=20,
            doc_stride=stride,
            cache_dir=str(tmp_path / f"{stride}"),
        )
        windows[stride] = encoded(dm, "validation")
        spans = [[tuple(o) for o in w[OFFSETS] if o[0] >= 0] for w in windows[stride]]
        for before, after in zip(spans, spans[1:], strict=False):
            assert len(set(before) & set(after)) == stride  # consecutive windows share doc_stride context tokens
    assert (len(windows[2]), len(windows[8])) == (4, 6)  # 14 context tokens a window, advancing by 12 or by 6
    assert make(tiny_bert, train_file=path, doc_stride=2).cache_key() != make(tiny_bert, train_file=path).cache_key()


def test_doc_stride_must_leave_room_beside_the_question(tiny_bert, tmp_path):
    rows = toy_qa_rows(3, 0)
    rows[1]["question"] = "the movie was a very good plot and the acting ?"  # 11 tokens: 20 - 3 - 11 = 6 left
    path = str(write_jsonl(tmp_path / "q.jsonl", rows))
    make(tiny_bert, train_file=path, max_length=20, doc_stride=5).validate()
    with pytest.raises(ConfigError) as err:
        make(tiny_bert, train_file=path, max_length=20, doc_stride=6).validate()
    assert str(err.value) == (
        "data.doc_stride: 6 leaves no room to slide: the longest question, row 1 of the train split (id 'q0-1'), has "
        "11 tokens, so a window of data.max_length=20 holds 6 context tokens; lower doc_stride below that or raise "
        "max_length"
    )
    with pytest.raises(ConfigError, match=r"^data\.doc_stride: must be >= 0"):
        make(tiny_bert, train_file=path, doc_stride=-1)
    with pytest.raises(ConfigError, match=r"^data\.doc_stride: 64 leaves no room to slide"):
        make(tiny_bert, train_file=path, doc_stride=64).validate()


def test_max_length_defaults_to_run_qa_s_384_within_the_tokenizer_limit(tiny_bert):
    dm = QuestionAnsweringDataModule(tokenizer=tiny_bert, train_file=str(V1))
    assert dm.max_length == 384 and dm.doc_stride == 128
    with pytest.raises(ConfigError, match=r"^data\.max_length: 384 exceeds the tokenizer's limit 128"):
        dm.validate()


@pytest.fixture(scope="module")
def left_padded_bert(tiny_bert, tmp_path_factory) -> str:
    """The tiny BERT with a tokenizer that pads on the left."""
    folder = Path(shutil.copytree(tiny_bert, tmp_path_factory.mktemp("left") / "bert"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    return str(folder)


def test_left_padding_tokenizers_get_context_first_and_shifted_positions(left_padded_bert, tmp_path):
    rows = toy_qa_rows(8, 2)
    path = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    dm = make(left_padded_bert, train_file=path, validation_file=path)
    assert dm.tokenizer.padding_side == "left" and not dm.question_first
    validation = encoded(dm, "validation")
    tokens = dm.tokenizer.convert_ids_to_tokens(validation[0]["input_ids"])
    sep = tokens.index("[SEP]")
    assert dm.tokenizer.convert_tokens_to_string(tokens[1:sep]) == rows[0]["context"]
    assert tokens[sep + 1 :] == [*rows[0]["question"].split(), "[SEP]"]  # the question comes last
    batch = dm.collate([validation[i] for i in range(len(rows))])
    mask = batch["attention_mask"]
    assert (mask[:, 0] == 0).any() and (mask[:, -1] == 1).all()  # padded on the left
    for i, row in enumerate(rows):
        s, e = int(batch[START][i]), int(batch[END][i])
        offsets = batch[META][OFFSETS]
        start_char, end_char = int(offsets[i, s, 0]), int(offsets[i, e, 1])
        assert row["context"][start_char:end_char] == row["answers"]["text"][0]
        tokens = dm.tokenizer.convert_ids_to_tokens(batch["input_ids"][i, s : e + 1].tolist())
        assert dm.tokenizer.convert_tokens_to_string(tokens) == row["answers"]["text"][0]
    # Decoding cuts each window to its real tokens: the answer comes back, and the null is read at [CLS].
    model = QuestionAnswering(backbone=left_padded_bert)
    logits = torch.full((*batch["input_ids"].shape, 2), -5.0)
    for i in range(len(rows)):
        logits[i, int(batch[START][i]), 0] = logits[i, int(batch[END][i]), 1] = 4.0
        logits[i, int((mask[i] == 0).sum()), :] = 1.0  # [CLS], the first real token
    for i, (spans, null) in enumerate(model.decode(logits, batch)):
        start, end, score = spans[0]
        assert rows[i]["context"][start:end] == rows[i]["answers"]["text"][0] and score == 8.0
        assert null == 2.0


# --- the model ----------------------------------------------------------------------------------------------------


def test_loss_is_the_hugging_face_qa_loss(tiny_bert, tmp_path):
    path = str(write_jsonl(tmp_path / "long.jsonl", toy_qa_rows(12, 1, words=(10, 40))))
    dm = make(tiny_bert, train_file=path, max_length=24, doc_stride=6)
    train = encoded(dm)
    batch = dm.collate([train[i] for i in range(len(train))])
    model = QuestionAnswering(backbone=tiny_bert).eval()
    with torch.no_grad():
        ours = model.loss(model(batch), batch)
        # start/end positions are its arguments
        theirs = model.model(**model.model_inputs(batch), start_positions=batch[START], end_positions=batch[END]).loss
    torch.testing.assert_close(ours, theirs)
    assert (batch[START] == 0).any() and (batch[START] != 0).any()


def test_model_options_are_checked(tiny_bert):
    for option, message in (
        ({"n_best": 0}, r"^model\.n_best: must be a positive integer, got 0"),
        ({"max_answer_length": 0}, r"^model\.max_answer_length: must be a positive integer, got 0"),
        ({"null_score_diff_threshold": math.nan}, r"^model\.null_score_diff_threshold: must be finite"),
        ({"head_dropout": 0.2}, r"^model\.head_dropout: question-answering heads have no dropout of their own"),
    ):
        with pytest.raises(ConfigError, match=message):
            QuestionAnswering(backbone=tiny_bert, **option)


def test_span_head_has_two_outputs_whatever_the_backbone_config_says(tiny_bert, tmp_path):
    folder = Path(shutil.copytree(tiny_bert, tmp_path / "three"))
    config = json.loads((folder / "config.json").read_text())
    labels = {str(i): f"L{i}" for i in range(3)}
    (folder / "config.json").write_text(json.dumps({**config, "id2label": labels}))
    model = QuestionAnswering(backbone=str(folder))
    assert model.model.qa_outputs.out_features == 2


def test_setup_builds_each_stage_s_metric_from_the_data(tiny_bert):
    dm = make(tiny_bert, train_file=str(V2), validation_file=str(V2), test_file=str(V1), version_2_with_negative=True)
    encoded(dm)
    model = QuestionAnswering(backbone=tiny_bert, null_score_diff_threshold=2.5)
    model._trainer = SimpleNamespace(datamodule=dm)  # what setup() reads: the trainer's data module
    model.setup("fit")
    assert set(model.metrics) == {"val"} and model.version_2
    val = model.metrics["val"]["squad"]
    assert val.version_2 and val.null_threshold == 2.5
    assert val.answers == [["fine"], [], [], ["quite awful"]] and val.contexts == list(dm.raw["validation"]["context"])
    model.setup("test")
    assert model.metrics["test"]["squad"].answers == [["very good", "good"], ["quite awful"], ["lovely"], ["boring"]]


def test_prediction_score_is_a_probability_over_the_n_best():
    context = "good bad , it is fine"
    spans = [(0, 4, 4.0), (5, 8, 3.0), (0, 8, 2.0), (11, 13, 1.0)]

    def row(n_best: int, version_2: bool, choice: tuple[int, int] | None = (0, 4), null: float = 3.5) -> dict:
        return answer_row("q", context, choice, spans, null, n_best, version_2)

    def softmax_first(*scores: float) -> float:
        return math.exp(scores[0]) / sum(math.exp(s) for s in scores)

    assert row(3, False) == {
        "id": "q",
        "answer": "good",
        "score": pytest.approx(softmax_first(4, 3, 2)),
        "start": 0,
        "end": 4,
    }
    assert row(1, False)["score"] == 1.0  # alone in its n-best list
    # SQuAD v2.0: "no answer" (the smallest null score) is a candidate too, and always in the list.
    assert row(3, True)["score"] == pytest.approx(softmax_first(4, 3.5, 3))
    assert row(1, True)["score"] == pytest.approx(softmax_first(4, 3.5))
    empty = row(3, True, choice=None, null=5.0)
    assert empty == {
        "id": "q",
        "answer": "",
        "score": pytest.approx(softmax_first(5, 4, 3)),
        "start": None,
        "end": None,
    }
    # v1.1 with no valid span anywhere: no answer, no confidence.
    assert answer_row("q", context, None, [], 1.0, 20, False)["score"] == 0.0


def peaked_logits(
    batch: dict, starts: dict[int, dict[int, float]], ends: dict[int, dict[int, float]], cls: dict[int, float]
) -> torch.Tensor:
    """Logits of -5 everywhere except, per window ``w``: ``starts[w][char]`` as the start logit of the token that
    starts at ``char``, ``ends[w][char]`` as the end logit of the token that ends there, ``cls[w]`` on [CLS]."""
    logits = torch.full((*batch["input_ids"].shape, 2), -5.0)
    for side, marks in ((0, starts), (1, ends)):
        for w, by_char in marks.items():
            chars = batch[META][OFFSETS][w, :, side].tolist()
            for char, value in by_char.items():
                logits[w, chars.index(char), side] = value
    for w, value in cls.items():
        logits[w, 0, :] = value
    return logits


@pytest.mark.parametrize(
    ("version_2", "threshold", "max_answer_length", "expected"),
    [
        (False, 0.0, 30, ["very good", "fine", "very lovely"]),
        (True, 0.0, 30, ["very good", "", "very lovely"]),
        (True, 7.0, 30, ["very good", "fine", "very lovely"]),  # null 10 - span 4 = 6, not above 7: answer
        (False, 0.0, 1, ["good", "fine", "lovely"]),  # two-token answers are too long
    ],
)
def test_predict_decodes_all_windows_like_the_metric(
    tiny_bert, tmp_path, version_2, threshold, max_answer_length, expected
):
    filler = [w for w in CONTEXT_WORDS if w != "a"] * 3
    # 26 words, windows of 14 from word 0, 10 and 20: "very good" (words 19-20) is whole in the second only.
    long = " ".join([*filler[:19], "very", "good", *filler[19:24]])
    rows = [
        {"id": "long", "context": long, "answers": {"text": ["very good"], "answer_start": [long.index("very")]}},
        {"id": "null", "context": "it was fine food", "answers": {"text": [], "answer_start": []}},
        {"id": "short", "context": "a very lovely plot", "answers": {"text": ["very lovely"], "answer_start": [2]}},
    ]
    rows = [{**r, "question": "the plot ?"} for r in rows]
    path = str(write_jsonl(tmp_path / "p.jsonl", rows))
    dm = make(tiny_bert, predict_file=path, validation_file=path, version_2_with_negative=True, **BOUNDARY)
    predict = encoded(dm, "predict")
    batch = dm.collate([predict[i] for i in range(3)])
    assert batch[META]["window_example"].tolist() == [0, 0, 0, 1, 2]
    very, good = long.index("very"), long.index("good")
    starts = {
        0: {0: 1.0},  # window 1 has only a weak span (its first word, score 2) and a confident null (6)
        1: {very: 4.0, good: 1.0},  # window 2: "very good" scores 8 (null 1), "good" alone 5
        3: {7: 2.0},  # "fine" scores 4, but the null scores 10
        4: {2: 3.0, 7: 2.5},  # "very lovely" scores 6, "lovely" alone 5.5
    }
    ends = {0: {len(filler[0]): 1.0}, 1: {good + 4: 4.0}, 3: {11: 2.0}, 4: {13: 3.0}}
    logits = peaked_logits(batch, starts, ends, {0: 3.0, 1: 0.5, 2: 0.5, 3: 5.0, 4: 0.0})
    model = QuestionAnswering(
        backbone=tiny_bert, null_score_diff_threshold=threshold, max_answer_length=max_answer_length
    )
    model.version_2 = version_2
    chunks = iter(logits.split(3))  # predict_step runs the windows 3 (questions in the batch) at a time
    model.forward = lambda inputs: next(chunks)  # type: ignore[method-assign]
    answers = model.predict_step(batch, 0)
    assert [a["id"] for a in answers] == ["long", "null", "short"]
    assert [a["answer"] for a in answers] == expected
    for a, row in zip(answers, rows, strict=True):
        if a["answer"]:
            assert row["context"][a["start"] : a["end"]] == a["answer"] and 0 < a["score"] <= 1
        else:
            assert a["start"] is None and a["end"] is None
    # Evaluation decodes the same windows to the same answers.
    eval_batch = dm.collate(list(encoded(dm, "validation")))
    contexts, gold = dm.examples("validation")
    # Gold answers do not matter here (only the decoded answers are compared); v1.1 needs one for every question.
    gold = gold if version_2 else [g or ["fine"] for g in gold]
    metric = SquadMetric(contexts, gold, version_2=version_2, null_threshold=threshold)
    model.update_metrics(logits, eval_batch, MetricCollection({"squad": metric}))
    assert metric.predictions() == dict(enumerate(expected))


def test_n_best_limits_the_positions_tried(tiny_bert, tmp_path):
    path = str(write_jsonl(tmp_path / "p.jsonl", [{"question": "the plot ?", "context": "it is bad food"}]))
    dm = make(tiny_bert, predict_file=path)
    batch = dm.collate([encoded(dm, "predict")[0]])
    # The best start ("food") comes after the best end ("is"): with one position each, no valid span is left.
    logits = peaked_logits(batch, {0: {10: 3.0, 6: 1.0}}, {0: {5: 3.0, 9: 1.0}}, {0: -9.0})
    found = {n: QuestionAnswering(backbone=tiny_bert, n_best=n).decode(logits, batch)[0][0] for n in (1, 2)}
    assert found[1] == [] and found[2] == [(6, 9, 2.0)]


# --- bad input through the CLI ------------------------------------------------------------------------------------


def fit_error(tiny_bert: str, tmp_path: Path, capsys, data: dict[str, str], *extra: str) -> str:
    """Run `ftlit fit` on bad input: it must exit 2 before training, with one line naming the field."""
    return cli_error(["fit", *fit_args(tiny_bert, tmp_path / "run", data, *extra)], capsys)


def test_bad_input_is_one_line_naming_the_field(tiny_bert, tmp_path, capsys):
    rows = toy_qa_rows(10, 0)
    query = [{("query" if k == "question" else k): v for k, v in r.items()} for r in rows]
    data = {"train_file": str(write_jsonl(tmp_path / "query.jsonl", query)), "val_fraction": "0"}
    err = fit_error(tiny_bert, tmp_path, capsys, data)
    assert err == (
        "ftlit: error: data.question_column: column 'question' not in the train split "
        "(columns: id, query, context, answers)"
    )

    rows[3]["answers"]["answer_start"][0] += 1
    text, start = rows[3]["answers"]["text"][0], rows[3]["answers"]["answer_start"][0]
    data = {"train_file": str(write_jsonl(tmp_path / "shifted.jsonl", rows)), "val_fraction": "0"}
    found = rows[3]["context"][start : start + len(text)]
    err = fit_error(tiny_bert, tmp_path, capsys, data)
    assert err == (
        f"ftlit: error: data.answers_column: row 3 of the train split (id 'q0-3'): answer {text!r} is not at "
        f"answer_start {start} of the context (found {found!r}): fix answer_start (a character offset into the context)"
    )

    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": str(V2), "val_fraction": "0"})
    assert err == (
        "ftlit: error: data.version_2_with_negative: row 1 of the train split (id 'a2') has no answer: set "
        "data.version_2_with_negative=true for unanswerable questions (SQuAD v2.0), or give it one"
    )

    broken = json.loads(V1.read_text())
    del broken["data"][1]["paragraphs"][0]["context"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": str(tmp_path / "broken.json")})
    assert err == (
        f"ftlit: error: data.train_file: '{tmp_path / 'broken.json'}' is not valid SQuAD JSON: "
        "data[1].paragraphs[0] has no str 'context'"
    )

    rows = toy_qa_rows(10, 0)
    rows[2]["answers"] = {"text": ["good"], "answer_start": []}
    data = {"train_file": str(write_jsonl(tmp_path / "uneven.jsonl", rows)), "val_fraction": "0"}
    err = fit_error(tiny_bert, tmp_path, capsys, data)
    assert err.startswith("ftlit: error: data.answers_column: row 2 of the train split (id 'q0-2'): 'answers' must be")

    rows = toy_qa_rows(10, 0)
    rows[4]["context"] = " "
    data = {"train_file": str(write_jsonl(tmp_path / "blank.jsonl", rows)), "val_fraction": "0"}
    err = fit_error(tiny_bert, tmp_path, capsys, data)
    assert err == "ftlit: error: data.context_column: row 4 of the train split (id 'q0-4') has no text in 'context'"

    rows = toy_qa_rows(10, 0)
    data = {"train_file": str(write_jsonl(tmp_path / "ok.jsonl", rows)), "doc_stride": "30"}
    err = fit_error(tiny_bert, tmp_path, capsys, data)
    assert err.startswith("ftlit: error: data.doc_stride: 30 leaves no room to slide")


def test_a_qa_model_refuses_other_data(tiny_bert, tmp_path, capsys):
    args = cli_args(
        tiny_bert, {"train_file": str(V1)}, tmp_path, task=(TASK[0], "ftlit.tasks.ner.TokenClassificationDataModule")
    )
    err = cli_error(["fit", *args], capsys)
    assert "QuestionAnswering trains on ftlit.tasks.qa.QuestionAnsweringDataModule" in err


# --- fit, validate, test, predict through the CLI -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> dict:
    """One short SQuAD v2.0-style fit (SQuAD JSON train and test, flat JSONL validation), shared by the tests below.

    Some contexts are long enough for 2-3 windows; a fifth of the questions have no answer.
    """
    tmp = tmp_path_factory.mktemp("qa-fit")
    test_rows = toy_qa_rows(30, 2, unanswerable=0.2, words=(3, 40))
    data = {
        "train_file": str(write_squad(tmp / "train.json", toy_qa_rows(96, 0, 0.2, (3, 40)), version="v2.0")),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_qa_rows(40, 1, 0.2, (3, 40)))),
        "test_file": str(write_squad(tmp / "test.json", test_rows, version="v2.0")),
        "predict_file": str(
            write_jsonl(tmp / "predict.jsonl", [{k: r[k] for k in ("id", "question", "context")} for r in test_rows])
        ),
        "version_2_with_negative": "true",
        "cache_dir": str(tmp / "cache"),  # the autouse cache fixture is per test; this fixture is per module
    }
    root = tmp / "run"
    args = fit_args(tiny_bert, root, data, "--checkpoint.monitor=val/f1", "--checkpoint.mode=max")
    # The untrained model's scores, for comparison: `validate` without a checkpoint.
    FtlitCLI(args=["validate", *fit_args(tiny_bert, tmp / "untrained", data)])
    FtlitCLI(args=["fit", *args])
    return {"root": root, "args": args, "test_rows": test_rows, "untrained": tmp / "untrained"}


def test_fit_logs_squad_scores_and_they_improve(trained):
    rows = read_metrics(trained["root"])
    for key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "loss"):
        assert len(column(rows, f"val/{key}")) == 4, key
    f1, before = column(rows, "val/f1"), last_metrics(trained["untrained"], "val/f1")
    assert f1[-1] > 70 and f1[-1] > before + 40 and f1[-1] > f1[0] + 30, (before, f1)
    assert column(rows, "val/loss")[-1] < column(rows, "val/loss")[0]
    assert all(0 <= v <= 100 for key in ("exact", "NoAns_f1") for v in column(rows, f"val/{key}"))


def test_test_and_predict_agree_with_each_other(trained):
    cli = FtlitCLI(args=["test", *trained["args"], "--ckpt_path=best"])
    results = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    expected = {f"test/{p}{s}" for p in ("", "HasAns_", "NoAns_") for s in ("exact", "f1")} | {"test/loss"}
    assert expected <= set(results)

    FtlitCLI(args=["predict", *trained["args"], "--ckpt_path=best"])
    predictions = [json.loads(line) for line in (trained["root"] / "predictions.jsonl").read_text().splitlines()]
    gold = trained["test_rows"]
    assert [p["id"] for p in predictions] == [r["id"] for r in gold]  # one row per question, in input order
    for p, row in zip(predictions, gold, strict=True):
        assert set(p) == {"id", "answer", "score", "start", "end"}
        if p["answer"]:
            assert row["context"][p["start"] : p["end"]] == p["answer"] and 0 < p["score"] <= 1
        else:
            assert p["start"] is None and p["end"] is None
    assert any(not p["answer"] for p in predictions) and any(p["answer"] for p in predictions)
    # The predictions file scores exactly what `ftlit test` reported.
    exact = [exact_match(p["answer"], r["answers"]["text"]) for p, r in zip(predictions, gold, strict=True)]
    assert 100 * sum(exact) / len(exact) == pytest.approx(results["test/exact"], abs=1e-4)

    # test-results.json breaks the same answers down by gold answer length and answerability.
    written = json.loads((trained["root"] / "test-results.json").read_text())
    by_length = written["by_answer_length"]
    answerable = [e for e, r in zip(exact, gold, strict=True) if r["answers"]["text"]]
    assert sum(g["questions"] for g in by_length) == len(answerable)
    mean_exact = sum(g["exact"] * g["questions"] for g in by_length) / len(answerable)
    assert mean_exact == pytest.approx(100 * sum(answerable) / len(answerable), abs=1e-4)
    groups = {g["group"]: g for g in written["by_answerability"]}
    assert groups["has answer"]["f1"] == pytest.approx(results["test/HasAns_f1"], abs=1e-4)
    assert groups["no answer"]["exact"] == pytest.approx(results["test/NoAns_exact"], abs=1e-4)


def test_ddp_scores_and_predictions_equal_a_single_process(tiny_bert, tmp_path):
    # 21 questions (odd), most with 2-3 windows: consecutive windows go to different ranks, so every long example is
    # scored from windows that were evaluated on both processes.
    rows = toy_qa_rows(21, 4, words=(10, 50))
    data = {
        "train_file": str(write_jsonl(tmp_path / "train.jsonl", toy_qa_rows(64, 0, words=(3, 40)))),
        "validation_file": str(write_jsonl(tmp_path / "validation.jsonl", rows)),
        "predict_file": str(
            write_jsonl(tmp_path / "predict.jsonl", [{k: r[k] for k in ("id", "question", "context")} for r in rows])
        ),
        "eval_batch_size": "4",
    }
    dm = make(
        tiny_bert, train_file=data["train_file"], validation_file=data["validation_file"], max_length=32, doc_stride=8
    )
    owners = list(encoded(dm, "validation")[EXAMPLE_IDX])
    assert len(owners) % 2 == 1 and sum(owners.count(i) > 1 for i in range(21)) >= 10, owners

    two, one = tmp_path / "two", tmp_path / "one"
    # Fit with 2 processes; its last validation scores the weights that last.ckpt holds.
    ftlit("fit", *fit_args(tiny_bert, two, data, "--trainer.max_epochs=1", *DDP))
    ckpt = f"--ckpt_path={two / 'checkpoints' / 'last.ckpt'}"
    FtlitCLI(args=["validate", *fit_args(tiny_bert, one, data), ckpt])
    for key in ("val/exact", "val/f1", "val/loss"):
        assert last_metrics(two, key) == pytest.approx(last_metrics(one, key), abs=1e-5), key
    assert 0 < last_metrics(one, "val/f1") < 100  # a score a lost or doubled window would move

    ftlit("predict", *fit_args(tiny_bert, two, data, *DDP), ckpt)
    FtlitCLI(args=["predict", *fit_args(tiny_bert, one, data), ckpt])
    multi = [json.loads(line) for line in (two / "predictions.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (one / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in multi] == [r["id"] for r in rows]
    for a, b in zip(multi, single, strict=True):
        assert (a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_reinit_pooler_on_a_model_without_a_pooler_is_an_error(tiny_bert, tmp_path, capsys):
    # BertForQuestionAnswering builds BERT without its pooler: there is nothing to re-initialise.
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": str(V1)}, "--model.reinit_pooler=true")
    assert err == "ftlit: error: model.reinit_pooler: BertForQuestionAnswering has no pooler: drop the key"
