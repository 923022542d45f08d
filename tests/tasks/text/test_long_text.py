"""Documents longer than the window (``data.long_text``): a passage that decides the label past the first window is
read by ``windows`` (and by ``head_tail`` when it ends the text) and missed by ``truncate``; windows are pooled per
row in test, predict and serve, each row counted once; fit and predict say how many rows were long; bad settings are
one line before any work."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer

import ftlit.tasks.text.data as text_data
import ftlit.tasks.text.long_text as long_text
from conftest import (
    FILLER,
    NEGATIVE,
    POSITIVE,
    cli_args,
    cli_error,
    column,
    encoded,
    read_metrics,
    toy_rows,
    write_jsonl,
)
from ftlit.cli import main
from ftlit.core.datamodule import META
from ftlit.errors import ConfigError
from ftlit.serve.predictor import Predictor
from ftlit.tasks.text import (
    ClassificationDataModule,
    MultiLabelClassifier,
    RegressionDataModule,
    SequenceClassifier,
    SequenceRegressor,
)
from ftlit.tasks.text.long_text import POOL, WINDOW_ROW, WINDOWS, pool

LABELS = ["neg", "pos"]
# A window of 8 tokens holds 6 of the text (every toy word is one token); neighbours share 2.
WINDOW = {"max_length": 8, "stride": 2}
FIT = ("--trainer.max_epochs=5", "--model.scheduler=constant", "--model.learning_rate=1e-2", "--data.batch_size=16")


def long_rows(n: int, seed: int, after: int) -> list[dict]:
    """Texts of 8 filler words, then a passage deciding the label (4 sentiment words between filler), then
    ``after`` more filler words: the first window (6 tokens) holds filler only."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(LABELS)
        sentiment = POSITIVE if label == "pos" else NEGATIVE
        passage = [rng.choice(sentiment) if i % 2 == 0 else rng.choice(FILLER) for i in range(7)]
        words = [rng.choice(FILLER) for _ in range(8)] + passage + [rng.choice(FILLER) for _ in range(after)]
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory, one_torch_thread) -> dict:
    """Fit on short rows (each within one window), validated on long ones pooled over windows; then predict long
    rows whose passage lies mid-text. Records what the data module logged."""
    tmp = tmp_path_factory.mktemp("long-text")
    files = {
        "train": write_jsonl(tmp / "train.jsonl", toy_rows(96, 0)),
        "end": write_jsonl(tmp / "end.jsonl", long_rows(32, 1, after=0)),
        "middle": write_jsonl(tmp / "middle.jsonl", long_rows(32, 2, after=6)),
    }
    predict = [{"text": r["text"]} for r in long_rows(24, 3, after=6)]
    files["predict"] = write_jsonl(tmp / "predict.jsonl", predict)
    data = {"train_file": files["train"], "validation_file": files["end"], "predict_file": files["predict"]}
    windows = ("--data.long_text=windows", "--data.max_length=8", "--data.stride=2")
    args = cli_args(tiny_bert, data, tmp / "run", *FIT, *windows)
    logged: dict[str, list[str]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLIT_CACHE", str(tmp / "cache"))
        for command in ("fit", "predict"):
            lines = logged.setdefault(command, [])
            mp.setattr(text_data, "rank_zero_info", lines.append)
            main([command, *args, *(["--ckpt_path=last"] if command == "predict" else [])])
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    return {"tmp": tmp, "files": files, "args": args, "ckpt": ckpt, "logged": logged, "tokenizer": tiny_bert}


def accuracy_of(trained: dict, file: str, **reading) -> float:
    """Test accuracy of the trained checkpoint on ``file``'s rows read with ``reading`` (the window's size kept)."""
    files = trained["files"]
    dm = ClassificationDataModule(
        tokenizer=trained["tokenizer"],
        train_file=str(files["train"]),
        test_file=str(files[file]),
        val_fraction=0,
        labels=LABELS,
        **{**WINDOW, **reading},
    )
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(trained["tmp"] / "tests"),
    )
    model = SequenceClassifier.load_from_checkpoint(trained["ckpt"])
    return trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]


# --- the deciding passage past the first window ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "reading", "right"),
    [
        ("end", {"long_text": "truncate"}, False),
        ("middle", {"long_text": "truncate"}, False),
        ("end", {"long_text": "head_tail"}, True),
        ("middle", {"long_text": "head_tail"}, False),  # its head and tail are filler
        ("end", {"long_text": "windows"}, True),
        ("middle", {"long_text": "windows"}, True),
        ("middle", {"long_text": "windows", "window_pool": "max"}, True),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v.values()) if isinstance(v, dict) else None,
)
def test_what_each_reading_sees_of_a_long_text(trained, file, reading, right):
    accuracy = accuracy_of(trained, file, **reading)
    # Right: the passage was read. Wrong: only filler was, and the tiny model's answer to filler is a coin toss.
    assert accuracy >= 0.9 if right else accuracy <= 0.75, accuracy


def test_fit_validates_on_pooled_windows_and_logs_the_long_rows_once(trained):
    rows = read_metrics(trained["tmp"] / "run")
    # The validation rows are long: their passage lies past the first window, so this is the pooled windows' score.
    assert column(rows, "val/acc")[-1] >= 0.9, column(rows, "val/acc")
    assert trained["logged"]["fit"] == [
        "ftlit: 32 of 32 validation rows are longer than data.max_length=8 tokens; data.long_text=windows reads them "
        "whole in windows sharing data.stride=2 tokens, their logits pooled by mean"
    ]
    assert trained["logged"]["predict"] == [
        "ftlit: 24 of 24 predict rows are longer than data.max_length=8 tokens; data.long_text=windows reads them "
        "whole in windows sharing data.stride=2 tokens, their logits pooled by mean"
    ]


def test_predict_and_serve_pool_windows_as_the_checkpoint_says(trained):
    gold = [r["label"] for r in long_rows(24, 3, after=6)]
    written = [json.loads(line) for line in (trained["tmp"] / "run" / "predictions.jsonl").read_text().splitlines()]
    # One prediction per input row, however many windows it took.
    assert len(written) == len(gold)
    assert sum(p["label"] == g for p, g in zip(written, gold, strict=True)) >= 0.9 * len(gold)
    saved = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    assert (saved["long_text"], saved["stride"], saved["window_pool"]) == ("windows", 2, "mean")
    # Serving reads the checkpoint's data settings: the same windows, pooled the same way, and nothing is cut.
    predictor = Predictor.load(str(trained["ckpt"]))
    rows = [json.loads(line) for line in Path(trained["files"]["predict"]).read_text().splitlines()]
    served = predictor.predict(rows, batch_size=5)
    assert [s["label"] for s in served] == [p["label"] for p in written]
    assert torch.allclose(torch.tensor([s["probs"] for s in served]), torch.tensor([p["probs"] for p in written]))
    assert predictor.truncated(rows) == []


def test_a_test_reading_long_rows_unlike_the_checkpoint_says_so(trained, monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(long_text, "rank_zero_info", lines.append)
    files = trained["files"]
    dm = ClassificationDataModule(
        tokenizer=trained["tokenizer"], train_file=str(files["train"]), test_file=str(files["end"]), **WINDOW
    )
    model = SequenceClassifier(backbone=trained["tokenizer"], label_names=LABELS)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(trained["tmp"]))
    trainer.test(model, datamodule=dm, ckpt_path=str(trained["ckpt"]), verbose=False)
    assert lines == [
        "ftlit: long rows are read with data.long_text=truncate here; the checkpoint's run read them with "
        "long_text=windows"
    ]


# --- how each reading tokenizes ------------------------------------------------------------------------------------

# Thirteen distinct words, one token each: a text whose every token can be told apart (3 windows of 6 sharing 2).
WORDS = " ".join(FILLER)


def texts_of(dm: ClassificationDataModule, ids: list[int]) -> list[str]:
    return [t for t in dm.tokenizer.convert_ids_to_tokens(ids) if t not in ("[CLS]", "[SEP]", "[PAD]")]


def rows_file(tmp_path: Path, texts: list[str], name: str = "rows.jsonl") -> str:
    return str(write_jsonl(tmp_path / name, [{"text": t, "label": LABELS[i % 2]} for i, t in enumerate(texts)]))


def data(tiny_bert: str, train: str, **settings) -> ClassificationDataModule:
    return ClassificationDataModule(tokenizer=tiny_bert, train_file=train, test_file=train, val_fraction=0, **settings)


def test_head_tail_keeps_the_first_and_the_last_tokens(tiny_bert, tmp_path):
    rows = rows_file(tmp_path, [WORDS, "good movie"])
    words = FILLER
    for head, kept in ((None, words[:2] + words[-4:]), (0, words[-6:]), (5, words[:5] + words[-1:])):
        dm = data(tiny_bert, rows, max_length=8, long_text="head_tail", head_tokens=head)
        test = encoded(dm, "test")
        assert texts_of(dm, test[0]["input_ids"]) == kept, head
        assert test[0]["token_type_ids"] == [0] * 8 and test[0]["attention_mask"] == [1] * 8
        assert texts_of(dm, test[1]["input_ids"]) == ["good", "movie"]  # a short row is read whole
        assert test["long"] == [True, False]
    truncated = encoded(data(tiny_bert, rows, max_length=8), "test")
    assert texts_of(dm, truncated[0]["input_ids"]) == words[:6]


def test_windows_cover_the_whole_text_sharing_stride_tokens(tiny_bert, tmp_path):
    rows = rows_file(tmp_path, [WORDS, "good movie"])
    for stride in (0, 2, 5):
        dm = data(tiny_bert, rows, max_length=8, long_text="windows", stride=stride)
        windows = [texts_of(dm, w) for w in encoded(dm, "test")[0]["input_ids"]]
        assert all(len(w) <= 6 for w in windows) and windows[0] == FILLER[:6]
        for before, after in zip(windows, windows[1:], strict=False):
            assert before[len(before) - stride :] == after[:stride], stride  # neighbours share `stride` tokens
        whole = windows[0] + [t for w in windows[1:] for t in w[stride:]]
        assert whole == FILLER, stride
        # Training reads each row's first window, as truncate does, unless train_windows.
        train = dm.datasets["train"]
        assert texts_of(dm, train[0]["input_ids"]) == FILLER[:6] and train["long"] == [True, False]
    dm = data(tiny_bert, rows, max_length=8, long_text="windows", stride=2, train_windows=True)
    assert len(encoded(dm, "train")[0]["input_ids"]) == len(encoded(dm, "test")[0]["input_ids"]) == 3


def test_train_windows_trains_on_the_rows_pooled_logits(tiny_bert, tmp_path):
    rows = rows_file(tmp_path, [WORDS, "good movie", WORDS + " bad", "awful"])
    model = SequenceClassifier(backbone=tiny_bert, label_names=LABELS).eval()
    for train_windows, windows in ((False, 4), (True, 3 + 1 + 3 + 1)):
        dm = data(tiny_bert, rows, train_windows=train_windows, long_text="windows", **WINDOW)
        encoded(dm)
        batch = next(iter(dm.train_dataloader()))
        assert batch["input_ids"].shape[0] == windows and batch["labels"].shape == (4,)
        loss, _, logits = model.training_loss(batch)
        assert logits.shape == (4, 2)
        backbone = model.model(**model.model_inputs(batch)).logits
        if train_windows:
            backbone = pool(backbone, batch[META][WINDOW_ROW], batch[META][WINDOWS], "mean")
        assert torch.allclose(loss, F.cross_entropy(backbone, batch["labels"]))


def test_pooling_is_per_row_mean_or_max():
    logits = torch.tensor([[1.0, -1.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    row, windows = torch.tensor([0, 0, 0, 1]), torch.tensor([3, 1])
    assert torch.allclose(pool(logits, row, windows, "mean"), torch.tensor([[4 / 3, 1 / 3], [5.0, 5.0]]))
    assert pool(logits, row, windows, "max").tolist() == [[3.0, 2.0], [5.0, 5.0]]


@pytest.mark.parametrize("task", ["classification", "multi-label", "regression"])
@pytest.mark.parametrize("how", ["mean", "max"])
def test_every_text_model_pools_windowed_rows(tiny_bert, tmp_path, task, how):
    rows = rows_file(tmp_path, [WORDS, "good movie", WORDS])
    dm = data(tiny_bert, rows, long_text="windows", window_pool=how, **WINDOW)
    test = encoded(dm, "test")
    batch = dm.collate([test[i] for i in range(3)])
    assert batch[META][POOL] == how and batch[META][WINDOWS].tolist() == [3, 1, 3]
    model = {
        "classification": lambda: SequenceClassifier(backbone=tiny_bert, label_names=LABELS),
        "multi-label": lambda: MultiLabelClassifier(backbone=tiny_bert, label_names=["a", "b", "c"]),
        "regression": lambda: SequenceRegressor(backbone=tiny_bert),
    }[task]().eval()
    with torch.no_grad():
        windows = model.model(**model.model_inputs(batch)).logits
        rows_out = model(batch)
    assert rows_out.shape == (3, windows.shape[1])
    reduce = (lambda x: x.mean(0)) if how == "mean" else (lambda x: x.max(0).values)
    for row, (a, b) in enumerate(((0, 3), (3, 4), (4, 7))):
        assert torch.allclose(rows_out[row], reduce(windows[a:b]), atol=1e-6), row
    assert len(model.predict_step(batch, 0)) == 3


def test_regression_reads_long_rows_the_same_way(tiny_bert, tmp_path):
    path = write_jsonl(tmp_path / "scores.jsonl", [{"text": WORDS, "score": 1.0}, {"text": "good", "score": 0.5}])
    dm = RegressionDataModule(
        tokenizer=tiny_bert, train_file=str(path), val_fraction=0, label_column="score", long_text="head_tail", **WINDOW
    )
    train = encoded(dm)
    assert texts_of(dm, train[0]["input_ids"]) == FILLER[:2] + FILLER[-4:] and train["labels"] == [1.0, 0.5]


def test_pairs_slide_over_the_second_text_and_repeat_the_first(tiny_bert, tmp_path):
    first = ["good", "movie", "the", "plot"]
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"a": " ".join(first), "b": WORDS, "label": "pos"}])
    pairs = {"text_column": "a", "text_pair_column": "b", "max_length": 10, "stride": 1, "labels": LABELS}
    dm = ClassificationDataModule(
        tokenizer=tiny_bert, train_file=str(path), test_file=str(path), val_fraction=0, long_text="windows", **pairs
    )
    windows = encoded(dm, "test")[0]["input_ids"]
    # [CLS] a [SEP] b [SEP]: the first text whole in every window (longest-first cutting would shorten it), 3 tokens
    # of the second, 1 shared with the next window.
    assert all(texts_of(dm, ids)[:4] == first and len(ids) <= 10 for ids in windows)
    seen = [texts_of(dm, ids)[4:] for ids in windows]
    assert seen[0] == FILLER[:3] and all(a[-1:] == b[:1] for a, b in zip(seen, seen[1:], strict=False))
    assert seen[0] + [t for w in seen[1:] for t in w[1:]] == FILLER
    # Training's first window cuts the same way: the first text whole.
    assert texts_of(dm, dm.datasets["train"][0]["input_ids"]) == [*first, *FILLER[:3]]
    # A first text that leaves the second no room to slide is refused before any encoding.
    long_first = write_jsonl(tmp_path / "long.jsonl", [{"a": "good movie the plot was", "b": WORDS, "label": "pos"}])
    with pytest.raises(ConfigError, match=r"^data\.stride: 2 leaves no room to slide: row 0 of the train split has 5"):
        ClassificationDataModule(
            tokenizer=tiny_bert,
            train_file=str(long_first),
            val_fraction=0,
            long_text="windows",
            **{**pairs, "stride": 2},
        ).validate()
    with pytest.raises(ConfigError, match=r"^data\.long_text: head_tail keeps one text's first and last tokens"):
        ClassificationDataModule(tokenizer=tiny_bert, train_file=str(path), long_text="head_tail", **pairs)


def test_ranks_share_out_rows_with_all_their_windows(tiny_bert, tmp_path):
    # Evaluation shards rows, never windows, and pads no rank with repeated rows: each row is scored once, whole.
    rows = rows_file(tmp_path, [WORDS if i % 3 else "good movie" for i in range(7)])
    dm = data(tiny_bert, rows, long_text="windows", eval_batch_size=2, **WINDOW)
    test = encoded(dm, "test")
    seen: list[int] = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        for batch in dm.test_dataloader():
            seen += batch[META]["row"].tolist()
            expected = [len(test[r]["input_ids"]) for r in batch[META]["row"].tolist()]
            assert batch[META][WINDOWS].tolist() == expected and batch["input_ids"].shape[0] == sum(expected)
            assert batch["labels"].shape[0] == len(expected)
    assert sorted(seen) == list(range(7))


# --- bad settings --------------------------------------------------------------------------------------------------

BAD = [
    ("--data.long_text=middle", "data.long_text: expected one of 'truncate', 'head_tail', 'windows', got middle"),
    ("--data.window_pool=median", "data.window_pool: expected one of 'mean', 'max', got median"),
    ("--data.stride=-1", "data.stride: must be >= 0 and below data.max_length=8 (tokens two windows share), got -1"),
    ("--data.stride=8", "data.stride: must be >= 0 and below data.max_length=8 (tokens two windows share), got 8"),
    (
        "--data.stride=6",
        "data.stride: 6 leaves no room to slide: a window of data.max_length=8 holds 6 text tokens beside 2 special "
        "ones; give a stride below 6",
    ),
    ("--data.head_tokens=-2", "data.head_tokens: must be >= 0 and below data.max_length=8, got -2"),
    (
        "--data.head_tokens=7",
        "data.head_tokens: 7 is more than the 6 text tokens a window of data.max_length=8 holds beside 2 special ones",
    ),
]


@pytest.mark.parametrize(("arg", "expected"), BAD, ids=[arg for arg, _ in BAD])
def test_bad_long_text_settings_are_one_line_before_any_work(tiny_bert, toy_data, tmp_path, capsys, arg, expected):
    reading = "--data.long_text=head_tail" if "head_tokens" in arg else "--data.long_text=windows"
    args = cli_args(tiny_bert, toy_data, tmp_path / "run", "--data.max_length=8", reading, arg)
    err = cli_error(["fit", *args], capsys)
    assert err.startswith(f"ftlit: error: {expected}"), err


def test_train_windows_refuses_what_reads_one_window_per_row(tiny_bert, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "good", "label": "pos", "domain": "a"}])
    with pytest.raises(ConfigError, match=r"^data\.train_windows: domain-adversarial training reads one window"):
        ClassificationDataModule(
            tokenizer=tiny_bert,
            train_file=str(path),
            domain_column="domain",
            target_domain="a",
            long_text="windows",
            train_windows=True,
        )
