"""NER on text as people write it: Chinese without spaces, mixed scripts, BIOES/BMES corpora, documents longer than
the window, and checkpoints from before ``data.words`` (tests/fixtures/ner/zh-*, tests/fixtures/checkpoints)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.chinese import make_char_bert
from helpers.ner import DEFAULTS, TASK, toy_ner_rows

from conftest import TEST_FIXTURES, cli_args, cli_error, column, encoded, read_metrics, write_jsonl
from ftlit.checkpoint_io import read_checkpoint
from ftlit.cli import FtlitCLI, main
from ftlit.commands.export import export
from ftlit.core import words
from ftlit.core.datamodule import META
from ftlit.errors import ConfigError
from ftlit.serve import spec
from ftlit.serve.predictor import Predictor
from ftlit.tasks.ner import schemes
from ftlit.tasks.ner.data import TokenClassificationDataModule, first_subtokens, reading_positions
from ftlit.tasks.ner.model import TokenClassifier

FIXTURES = TEST_FIXTURES / "ner"
# The same kind of sentences in the three schemes Chinese corpora ship: BMES to train on, IOB2 to validate, BIOES to
# test (tests/fixtures/ner/README.md).
ZH = {
    "train_file": str(FIXTURES / "zh-train.bmes.conll"),
    "validation_file": str(FIXTURES / "zh-validation.conll"),
    "test_file": str(FIXTURES / "zh-test.bioes.conll"),
}
ZH_DEFAULTS = ("--trainer.max_epochs=10", "--model.scheduler=constant", "--data.batch_size=16", "--data.max_length=32")
ZH_LABELS = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
RAW = "张伟在北京的华为公司工作。李娜昨天去了上海。"
RAW_ENTITIES = [("张伟", "PER", 0, 2), ("北京", "LOC", 3, 5), ("华为公司", "ORG", 6, 10), ("李娜", "PER", 13, 15),
                ("上海", "LOC", 19, 21)]  # fmt: skip
MIXED = [
    "2024年3月，Apple在上海发布了iPhone 15。",
    "「２０２４」年，李娜😀去了深圳！",
    "Zhang Wei 在 北京 工作 ， 👍🏽 华为公司ok",
]
LONG = RAW * 137  # 3,014 characters, each a word: about a hundred windows of 32 tokens


@pytest.fixture(scope="module")
def char_bert(tmp_path_factory) -> str:
    return str(make_char_bert(tmp_path_factory.mktemp("char-bert")))


def predictions(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def zh_run(char_bert, tmp_path_factory, one_torch_thread) -> dict:
    """One short fit of the character BERT on the BMES corpus (validated on IOB2), then `ftlit predict` of raw text."""
    tmp = tmp_path_factory.mktemp("zh")
    texts = [RAW, *MIXED, LONG, ""]
    data = {
        **ZH,
        "predict_file": str(write_jsonl(tmp / "predict.jsonl", [{"text": t} for t in texts])),
        "cache_dir": str(tmp / "cache"),  # the autouse cache fixture is per test; this fixture is per module
    }
    root = tmp / "run"
    args = cli_args(char_bert, data, root, "--checkpoint.monitor=val/f1", "--checkpoint.mode=max", task=TASK,
                    defaults=ZH_DEFAULTS)  # fmt: skip
    FtlitCLI(args=["fit", *args])
    FtlitCLI(args=["predict", *args, "--ckpt_path=best"])
    return {"root": root, "args": args, "texts": texts, "rows": predictions(root)}


def found(row: dict) -> list[tuple]:
    return [(e["text"], e["type"], e["start"], e["end"]) for e in row["entities"]]


def assert_same(rows: list[dict], expected: list[dict]) -> None:
    """The same tags and entities, and scores equal to float precision."""
    assert [r["tags"] for r in rows] == [r["tags"] for r in expected]
    assert [found(r) for r in rows] == [found(r) for r in expected]
    scores = [[e["score"] for e in r["entities"]] for r in rows]
    assert scores == [pytest.approx([e["score"] for e in r["entities"]], abs=1e-5) for r in expected]


def test_fit_on_bmes_reaches_a_real_entity_f1_and_records_the_splitter(zh_run):
    f1 = column(read_metrics(zh_run["root"]), "val/f1")
    assert f1[-1] > 0.8 and f1[-1] > f1[0], f1
    ckpt = read_checkpoint(zh_run["root"] / "checkpoints" / "last.ckpt")
    assert ckpt["hyper_parameters"]["label_names"] == ZH_LABELS  # BMES's M-/E-/S- read into IOB2
    data = ckpt["datamodule_hyper_parameters"]
    assert (data["words"], data["tag_scheme"], data["stride"]) == ("bert", "auto", None)


def test_test_on_a_bioes_file_scores_whole_entities(zh_run):
    cli = FtlitCLI(args=["test", *zh_run["args"], "--ckpt_path=best"])
    assert float(cli.trainer.callback_metrics["test/f1"]) > 0.8


def test_predict_on_raw_chinese_gives_a_tag_per_character_and_the_entities_offsets(zh_run):
    row = zh_run["rows"][0]
    assert len(row["tags"]) == len(RAW)  # 22 characters, 22 words: every ideograph and the two 。
    assert found(row) == RAW_ENTITIES
    assert all(RAW[e["start"] : e["end"]] == e["text"] for e in row["entities"])


def test_entities_of_mixed_scripts_index_the_original_string(zh_run):
    for text, row in zip(MIXED, zh_run["rows"][1:4], strict=True):
        assert len(row["tags"]) == len(words.bert(text)) and None not in row["tags"], text
        assert all(text[e["start"] : e["end"]] == e["text"] for e in row["entities"]), (text, row)
    # Entities among Latin words, full-width digits, emoji and spaces are tagged where they are written (what the
    # tiny model makes of its [UNK] words around them is its own business).
    for i, (entity, type_) in enumerate([("上海", "LOC"), ("深圳", "LOC"), ("华为公司", "ORG")]):
        start = MIXED[i].index(entity)
        at = [a for a, _ in words.bert(MIXED[i])].index(start)
        tags = zh_run["rows"][1 + i]["tags"][at : at + len(entity)]
        assert tags == [f"B-{type_}"] + [f"I-{type_}"] * (len(entity) - 1), (MIXED[i], zh_run["rows"][1 + i])


def test_a_document_longer_than_the_window_gets_a_tag_for_every_word(zh_run):
    row = zh_run["rows"][4]
    assert len(LONG) > 3000 and len(row["tags"]) == len(LONG) and None not in row["tags"]
    # Read in overlapping windows: every repetition of the sentence is tagged as the sentence alone, at its offsets.
    expected = [(t, k, a + i * len(RAW), b + i * len(RAW)) for i in range(137) for t, k, a, b in RAW_ENTITIES]
    assert found(row) == expected
    assert zh_run["rows"][5] == {"entities": [], "tags": []}


def test_serve_and_the_export_split_and_predict_as_predict_does(zh_run, tmp_path):
    ckpt = zh_run["root"] / "checkpoints" / "last.ckpt"
    FtlitCLI(args=["predict", *zh_run["args"], f"--ckpt_path={ckpt}", "--predictions.overwrite=true"])
    expected = predictions(zh_run["root"])
    inputs = [{"text": t} for t in zh_run["texts"]]
    served = Predictor.load(str(ckpt))
    assert served.datamodule.words == "bert" and served.truncated(inputs) == []
    assert_same(served.predict(inputs), expected)
    folder = export(str(ckpt), str(tmp_path / "export"))
    settings = json.loads((folder / spec.SPEC_FILE).read_text())["data"]["init_args"]
    assert (settings["words"], settings["stride"], settings["max_length"]) == ("bert", None, 32)
    assert_same(Predictor.load(str(folder)).predict(inputs[:2]), expected[:2])


# --- checkpoints from before data.words -------------------------------------------------------------------------


def old_ner_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder holding the old NER checkpoint (tests/fixtures/checkpoints, ftlit 12d4bf2) as its last.ckpt."""
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    ckpt = shutil.copy(TEST_FIXTURES / "checkpoints" / "ner-12d4bf2.ckpt", root / "checkpoints" / "last.ckpt")
    return root, Path(ckpt)


OLD_TEXT = "the food service was good. it is badly"


def test_an_old_checkpoint_still_splits_at_whitespace(tiny_bert, tmp_path, capsys):
    root, ckpt = old_ner_run(tmp_path)
    train = str(write_jsonl(tmp_path / "t.jsonl", toy_ner_rows(16, 0)))
    predict = str(write_jsonl(tmp_path / "p.jsonl", [{"text": OLD_TEXT}]))
    args = cli_args(tiny_bert, {"train_file": train, "predict_file": predict}, root, task=TASK, defaults=DEFAULTS)
    main(["predict", *args, "--ckpt_path=last"])
    # "good." is one word, as before data.words (bert would make it two).
    assert len(predictions(root)[0]["tags"]) == len(OLD_TEXT.split()) == 8
    assert spec.from_checkpoint(read_checkpoint(ckpt))["data"]["init_args"]["words"] == "whitespace"
    served = Predictor.load(str(ckpt))
    assert served.datamodule.words == "whitespace"
    assert_same(served.predict([{"text": OLD_TEXT}]), predictions(root))
    assert TokenClassifier.load_from_checkpoint(ckpt).words == "whitespace"
    # Another splitter than the checkpoint's: one line, before any work.
    err = cli_error(["predict", *args, "--ckpt_path=last", "--data.words=bert"], capsys)
    assert err == (
        "ftlit: error: data.words: the checkpoint was trained on words split by whitespace, this data splits them by "
        "bert: set data.words: whitespace"
    )


# --- tag schemes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "tags"),
    [
        ("bioes", ["S-PER", "O", "B-ORG", "I-ORG", "E-ORG", "B-LOC", "E-LOC", "S-LOC"]),
        ("iobes", ["S-PER", "O", "B-ORG", "I-ORG", "E-ORG", "B-LOC", "E-LOC", "S-LOC"]),
        ("bmes", ["S-PER", "O", "B-ORG", "M-ORG", "E-ORG", "B-LOC", "E-LOC", "S-LOC"]),
        ("iob2", ["B-PER", "O", "B-ORG", "I-ORG", "I-ORG", "B-LOC", "I-LOC", "B-LOC"]),
    ],
)
def test_schemes_read_into_iob2(scheme, tags):
    assert schemes.problem(tags, scheme) is None
    assert [schemes.to_iob2(t, scheme) for t in tags] == ["B-PER", "O", "B-ORG", "I-ORG", "I-ORG", "B-LOC", "I-LOC",
                                                         "B-LOC"]  # fmt: skip
    assert schemes.detect([tags]) == schemes.canonical(scheme)


def test_the_bmes_file_reads_as_its_iob2_twin(char_bert):
    dm = TokenClassificationDataModule(tokenizer=char_bert, train_file=ZH["train_file"], val_fraction=0)
    dm.validate()
    first = dm.raw["train"][0]
    assert "".join(first["tokens"]) == "我们听说北京是陈静的家乡。"
    assert first["tags"][4:9] == ["B-LOC", "E-LOC", "O", "B-PER", "E-PER"]
    labels = [ZH_LABELS[i] for i in encoded(dm)[0]["labels"][1:-1]]
    assert labels == ["O"] * 4 + ["B-LOC", "I-LOC", "O", "B-PER", "I-PER"] + ["O"] * 4
    assert dm.label_names == ZH_LABELS


def conll(path: Path, sentences: list[list[tuple[str, str]]]) -> str:
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n", encoding="utf-8")
    return str(path)


def fit_error(char_bert: str, tmp_path: Path, capsys, data: dict[str, str], *extra: str) -> str:
    args = cli_args(char_bert, {"val_fraction": "0", **data}, tmp_path / "run", *extra, task=TASK, defaults=ZH_DEFAULTS)
    return cli_error(["fit", *args], capsys)


def test_a_file_mixing_bioes_and_iob2_is_one_line(char_bert, tmp_path, capsys):
    mixed = conll(tmp_path / "mixed.conll", [
        [("张", "B-PER"), ("伟", "E-PER"), ("在", "O"), ("沪", "S-LOC")],
        [("李", "B-PER"), ("娜", "I-PER"), ("在", "O"), ("北", "B-LOC"), ("京", "I-LOC")],
    ])  # fmt: skip
    err = fit_error(char_bert, tmp_path, capsys, {"train_file": mixed})
    assert err == (
        "ftlit: error: data.tag_scheme: tag 'I-PER' at word 1 of row 1 of the train split is followed by no I-PER or "
        "E-PER: BIOES ends an entity with E-PER, one word is S-PER (the split has E-/S- tags, so auto reads it as "
        "BIOES: a file that mixes BIOES with IOB2 must be written in one scheme)"
    )
    err = fit_error(char_bert, tmp_path, capsys, {"train_file": mixed, "tag_scheme": "iob2"})
    assert err == (
        "ftlit: error: data.tag_scheme: tag 'E-PER' at word 1 of row 0 of the train split is not IOB2 "
        "(data.tag_scheme is iob2: set the scheme the file is written in)"
    )


def test_a_tag_of_no_scheme_is_one_line(char_bert, tmp_path, capsys):
    bad = conll(tmp_path / "bad.conll", [[("张", "B-PER"), ("伟", "E-PER")], [("在", "O"), ("北", "X-LOC")]])
    err = fit_error(char_bert, tmp_path, capsys, {"train_file": bad})
    assert err == (
        "ftlit: error: data.tags_column: tag 'X-LOC' at word 1 of row 1 of the train split fits no tag scheme: use O "
        "and B-/I- (IOB2), B-/I-/E-/S- (BIOES, IOBES) or B-/M-/E-/S- (BMES), each with the entity type (B-PER)"
    )


# --- bad values ---------------------------------------------------------------------------------------------------

OUTSIDE = "must be >= 0 and below data.max_length=32 (consecutive windows share that many tokens)"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "--data.words=spaces",
            "data.words: expected one of 'auto', 'whitespace', 'bert', 'characters', got spaces: fix the value "
            "(see --help)",
        ),
        ("--data.stride=32", f"data.stride: {OUTSIDE}, got 32"),
        ("--data.stride=-1", f"data.stride: {OUTSIDE}, got -1"),
        (
            "--data.stride=30",
            "data.stride: 30 leaves no room to slide: a window of data.max_length=32 tokens holds 30 of text beside "
            "the tokenizer's special tokens; lower data.stride below 30",
        ),
    ],
)
def test_bad_words_and_strides_are_one_line(char_bert, tmp_path, capsys, extra, expected):
    err = fit_error(char_bert, tmp_path, capsys, {"train_file": ZH["train_file"]}, extra)
    assert err == f"ftlit: error: {expected}"


def test_bad_values_from_python_are_config_errors(char_bert):
    for kwargs, field in (({"words": "spaces"}, "data.words"), ({"tag_scheme": "bio"}, "data.tag_scheme")):
        with pytest.raises(ConfigError, match=rf"^{field}: "):
            TokenClassificationDataModule(tokenizer=char_bert, train_file=ZH["train_file"], **kwargs)


# --- windows ------------------------------------------------------------------------------------------------------


def test_every_word_is_read_once_where_it_is_furthest_from_a_cut():
    # Ten words of one token each, in windows of 4 text tokens sharing 2: 0-3, 2-5, 4-7, 6-9.
    windows = [[None, *range(a, a + 4), None] for a in (0, 2, 4, 6)]
    reads = reading_positions(windows, first_subtokens(windows, 2))
    read = sorted((word, w) for w, row in enumerate(reads) for word in row if word >= 0)
    assert [word for word, _ in read] == list(range(10))
    # Word 2 is the last-but-one of window 0 (1 from its cut) and the first of window 1 (0 from its cut): window 0.
    assert dict(read) == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2, 7: 3, 8: 3, 9: 3}
    # A window that starts inside a word: word 1's second sub-token opens window 1, which must not read it there.
    split = [[None, 0, 1, 1, None], [None, 1, 2, 3, None]]
    assert first_subtokens(split, 1) == [[False, True, True, False, False], [False, False, True, True, False]]


def test_windows_score_an_entity_across_a_window_edge_once(tiny_bert, tmp_path):
    rows = [{"tokens": ["the", "food", "service"] * 6, "tags": ["O", "B-ORG", "I-ORG"] * 6}]
    path = write_jsonl(tmp_path / "v.jsonl", rows)
    dm = TokenClassificationDataModule(tokenizer=tiny_bert, train_file=str(path), validation_file=str(path),
                                       max_length=8, stride=2)  # fmt: skip
    batch = dm.collate([encoded(dm, "validation")[0]])
    assert len(batch[META]["window_row"]) == 4  # 18 tokens in windows of 6 sharing 2
    labels = batch["labels"]
    assert int((labels != -100).sum()) == 18  # every word labelled once, in one window
    model = TokenClassifier(backbone=tiny_bert, label_names=dm.label_names)
    logits = torch.nn.functional.one_hot(labels.clamp(min=0), len(dm.label_names)).float()
    model.update_metrics(logits, batch, model.val_metrics)
    metric = model.val_metrics["f1"]
    assert (int(metric.tp.sum()), int(metric.fp.sum()), int(metric.fn.sum())) == (6, 0, 0)


def test_train_windows_train_on_the_words_past_the_window(tiny_bert, tmp_path):
    rows = [{"tokens": ["goods", "badly"] * 10, "tags": ["B-POS", "B-NEG"] * 10}]  # good ##s bad ##ly: 40 tokens
    path = str(write_jsonl(tmp_path / "t.jsonl", rows))
    cut = encoded(TokenClassificationDataModule(tokenizer=tiny_bert, train_file=path, val_fraction=0, max_length=12))
    assert len(cut) == 1 and sum(label != -100 for label in cut[0]["labels"]) == 5
    dm = TokenClassificationDataModule(
        tokenizer=tiny_bert, train_file=path, val_fraction=0, max_length=12, stride=3, train_windows=True
    )
    windowed = encoded(dm)
    # Windows of 10 text tokens sharing 3 start at tokens 0, 7, 14, 21, 28 and 35: those at odd tokens open inside a
    # word, on its ##s or ##ly, which is not labelled as if it were the word's first sub-token.
    assert len(windowed) == 6 and max(len(ids) for ids in windowed["input_ids"]) == 12
    labelled = 0
    for ids, labels in zip(windowed["input_ids"], windowed["labels"], strict=True):
        tokens = dm.tokenizer.convert_ids_to_tokens(ids)
        for token, label in zip(tokens[1:-1], labels[1:-1], strict=True):
            assert (label == -100) == token.startswith("##"), (tokens, labels)
            labelled += label != -100
    assert labelled == 20 + 7  # every word, and the 7 whose first sub-token two windows share


def test_labelled_rows_of_raw_text_are_split_by_data_words(char_bert, tmp_path):
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "张伟在北京。", "tags": tags}] * 4)
    dm = TokenClassificationDataModule(tokenizer=char_bert, train_file=str(path), val_fraction=0)
    dm.validate()
    assert dm.raw["train"][0]["tokens"] == list("张伟在北京。")
    ws = TokenClassificationDataModule(tokenizer=char_bert, train_file=str(path), val_fraction=0, words="whitespace")
    with pytest.raises(ConfigError, match=r"^data\.tags_column: row 0 of the train split has 1 tokens but 6 tags"):
        ws.validate()


def test_the_options_change_the_cache_key(char_bert):
    base = TokenClassificationDataModule(tokenizer=char_bert, train_file=ZH["train_file"])
    for option in ({"words": "characters"}, {"stride": 5}, {"tag_scheme": "bmes"}, {"train_windows": True}):
        other = TokenClassificationDataModule(tokenizer=char_bert, train_file=ZH["train_file"], **option)
        assert other.cache_key() != base.cache_key(), option
