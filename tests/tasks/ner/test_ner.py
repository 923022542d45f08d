"""Token classification (NER): CoNLL/JSONL/Hub sources, label alignment, bad input, fit, test and predict."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import datasets
import pytest
import torch
from helpers.ner import fit_args, toy_ner_rows, write_conll

from conftest import TEST_FIXTURES, cli_error, column, encoded, read_metrics, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.core.datamodule import META
from ftlit.errors import ConfigError
from ftlit.tasks.ner.data import TokenClassificationDataModule
from ftlit.tasks.ner.model import TokenClassifier

FIXTURES = TEST_FIXTURES / "ner"
SAMPLE = FIXTURES / "sample.conll"


def make(tiny_bert: str, **kwargs) -> TokenClassificationDataModule:
    kwargs.setdefault("val_fraction", 0)
    return TokenClassificationDataModule(tokenizer=tiny_bert, **kwargs)


# --- sources ----------------------------------------------------------------------------------------------------


def test_conll_file_skips_docstart_and_blank_lines(tiny_bert):
    dm = make(tiny_bert, train_file=str(SAMPLE))
    train = dm.raw["train"]
    assert train["tokens"] == [
        ["the", "goods", "is", "great", "."],
        ["food", "service", "was", "badly"],
        ["it", "is", "awful"],  # after a second -DOCSTART-, tab-separated, no newline at the end of the file
    ]
    assert train["tags"] == [["O", "B-POS", "O", "B-POS", "O"], ["B-ORG", "I-ORG", "O", "B-NEG"], ["O", "O", "B-NEG"]]
    dm.validate()
    assert dm.label_names == ["B-NEG", "B-ORG", "B-POS", "I-ORG", "O"]


def test_tag_column_chooses_the_column_and_txt_files_are_conll(tiny_bert, tmp_path):
    txt = tmp_path / "train.txt"
    txt.write_text(SAMPLE.read_text())
    dm = make(tiny_bert, train_file=str(txt), tag_column=2)
    assert dm.raw["train"]["tags"][1] == ["B-NP", "I-NP", "B-VP", "B-ADVP"]


def test_conll_line_without_the_tag_column(tiny_bert, tmp_path):
    bad = tmp_path / "train.conll"
    bad.write_text("the O\ngoods\n")
    with pytest.raises(ConfigError, match=r"data\.tag_column: line 2 of .* has 1 column\(s\), no tag column -1"):
        make(tiny_bert, train_file=str(bad)).raw  # noqa: B018


def test_jsonl_with_configured_columns_and_given_labels(tiny_bert, tmp_path):
    rows = [{"words": r["tokens"], "ner": r["tags"]} for r in toy_ner_rows(12, 0)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = make(tiny_bert, train_file=str(path), tokens_column="words", tags_column="ner")
    dm.validate()
    assert dm.label_names == ["B-NEG", "B-ORG", "B-POS", "I-ORG", "O"]
    labels = ["O", "B-POS", "B-NEG", "B-ORG", "I-ORG", "B-LOC"]
    given = make(tiny_bert, train_file=str(path), tokens_column="words", tags_column="ner", labels=labels)
    first = encoded(given)[0]
    words, tags = rows[0]["words"], rows[0]["ner"]
    # Every word of the toy vocabulary is one token, except the -s/-ly forms: compare on first sub-tokens.
    kept = [label for label in first["labels"] if label != -100]
    assert [labels[i] for i in kept] == tags and len(kept) == len(words)


def test_hub_dataset_with_classlabel_tags_keeps_the_classlabel_order(tiny_bert, tmp_path):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features(
        {"tokens": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(datasets.ClassLabel(names=names))}
    )
    folder = tmp_path / "hub-like"
    for split in ("train", "validation"):
        ds = datasets.Dataset.from_dict({"tokens": [["good", "movie"]], "ner_tags": [[1, 0]]}, features=features)
        (folder / split).mkdir(parents=True)
        ds.to_parquet(str(folder / split / "data.parquet"))
    dm = TokenClassificationDataModule(tokenizer=tiny_bert, dataset=str(folder), tags_column="ner_tags")
    assert encoded(dm, "validation")[0]["labels"] == [[-100, 1, 0, -100]]  # a sentence holds its windows: one here
    assert dm.label_names == names
    # Raw text to tag beside the Hub dataset, as `ftlit predict --config configs/ner.yaml` needs.
    predict = write_jsonl(tmp_path / "p.jsonl", [{"text": "good movie"}])
    with_text = TokenClassificationDataModule(
        tokenizer=tiny_bert, dataset=str(folder), tags_column="ner_tags", predict_file=str(predict)
    )
    assert with_text.cache_key() != dm.cache_key()
    assert encoded(with_text, "predict")[0]["text"] == "good movie"


# --- alignment and truncation -------------------------------------------------------------------------------------


ALIGN_ROW = {"tokens": ["the", "goods", "badly", "food", "service"], "tags": ["O", "B-POS", "B-NEG", "B-ORG", "I-ORG"]}
ALIGN_LABELS = ["O", "B-POS", "I-POS", "B-NEG", "B-ORG", "I-ORG"]  # no I-NEG: run_ner keeps B-NEG then


@pytest.mark.parametrize(
    ("label_all_subtokens", "expected"),
    [
        (False, [None, "O", "B-POS", None, "B-NEG", None, "B-ORG", "I-ORG", None]),
        (True, [None, "O", "B-POS", "I-POS", "B-NEG", "B-NEG", "B-ORG", "I-ORG", None]),
    ],
)
def test_labels_align_with_sub_tokens(tiny_bert, tmp_path, label_all_subtokens, expected):
    path = write_jsonl(tmp_path / "train.jsonl", [ALIGN_ROW])
    dm = make(tiny_bert, train_file=str(path), labels=ALIGN_LABELS, label_all_subtokens=label_all_subtokens)
    row = encoded(dm)[0]
    tokens = dm.tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens == ["[CLS]", "the", "good", "##s", "bad", "##ly", "food", "service", "[SEP]"]
    assert [None if i == -100 else ALIGN_LABELS[i] for i in row["labels"]] == expected


def test_options_that_change_the_encoding_change_the_cache_key(tiny_bert):
    base = make(tiny_bert, train_file=str(SAMPLE))
    assert base.cache_key() == make(tiny_bert, train_file=str(SAMPLE)).cache_key()
    for option in ({"label_all_subtokens": True}, {"tag_column": 2}, {"labels": ["O", "B-POS"]}):
        assert make(tiny_bert, train_file=str(SAMPLE), **option).cache_key() != base.cache_key(), option


def test_truncation_warns_once_with_the_count(tiny_bert, tmp_path):
    rows = toy_ner_rows(10, 0)
    for row in rows[:3]:
        row["tokens"], row["tags"] = row["tokens"] + ["the"] * 10, row["tags"] + ["O"] * 10
    dm = make(tiny_bert, train_file=str(write_jsonl(tmp_path / "t.jsonl", rows)), max_length=12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = encoded(dm)
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert messages == [
        "3 of 10 sentences in the train split are longer than data.max_length=12 tokens and were truncated: "
        "their last words are not trained on (data.train_windows: true trains on them in windows)"
    ]
    assert max(len(ids) for ids in train["input_ids"]) == 12


# --- bad input ------------------------------------------------------------------------------------------------


def fit_error(tiny_bert: str, tmp_path: Path, capsys, data: dict[str, str], *extra: str) -> str:
    """Run `ftlit fit` on bad input: it must exit 2 before training, with one line naming the field."""
    return cli_error(["fit", *fit_args(tiny_bert, tmp_path / "run", data, *extra)], capsys)


def test_missing_columns_list_the_columns(tiny_bert, tmp_path, capsys):
    train = str(write_jsonl(tmp_path / "t.jsonl", toy_ner_rows(10, 0)))
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": train, "tokens_column": "words"})
    assert err == "ftlit: error: data.tokens_column: column 'words' not in the train split (columns: tokens, tags)"
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": train, "tags_column": "ner_tags"})
    assert err == "ftlit: error: data.tags_column: column 'ner_tags' not in the train split (columns: tokens, tags)"


def test_tag_not_seen_in_train(tiny_bert, tmp_path, capsys):
    train = str(write_jsonl(tmp_path / "t.jsonl", toy_ner_rows(10, 0)))
    val = str(write_jsonl(tmp_path / "v.jsonl", [{"tokens": ["good"], "tags": ["B-LOC"]}]))
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": train, "validation_file": val})
    assert err.startswith("ftlit: error: data.labels: validation split has tags not seen in train: ['B-LOC'] (known: ")


def test_tokens_and_tags_of_different_lengths(tiny_bert, tmp_path, capsys):
    rows = toy_ner_rows(10, 0)
    rows[7]["tags"] = rows[7]["tags"][:-1]
    n = len(rows[7]["tokens"])
    train = str(write_jsonl(tmp_path / "t.jsonl", rows))
    # No validation carved out of train: row numbers are those of the file.
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": train, "val_fraction": "0"})
    assert err == (
        f"ftlit: error: data.tags_column: row 7 of the train split has {n} tokens but {n - 1} tags: give one per token"
    )


def test_empty_conll_file_and_empty_split(tiny_bert, tmp_path, capsys):
    empty = tmp_path / "train.conll"
    empty.write_text("-DOCSTART- -X- -X- O\n\n\n")
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": str(empty)})
    assert err == f"ftlit: error: data.train_file: file '{empty}' has no sentences: give a file with data rows"
    train = str(write_jsonl(tmp_path / "t.jsonl", toy_ner_rows(10, 0)))
    nothing = tmp_path / "v.jsonl"
    nothing.write_text("\n")
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": train, "validation_file": str(nothing)})
    assert err.startswith("ftlit: error: data.validation_file: ")


def test_tags_that_are_not_iob_tags(tiny_bert, tmp_path, capsys):
    rows = [{"tokens": ["good", "movie"], "tags": ["POSITIVE", "O"]}] * 10
    train = str(write_jsonl(tmp_path / "t.jsonl", rows))
    err = fit_error(tiny_bert, tmp_path, capsys, {"train_file": train})
    assert err == (
        "ftlit: error: data.tags_column: tag 'POSITIVE' at word 0 of row 0 of the train split fits no tag scheme: "
        "use O and B-/I- (IOB2), B-/I-/E-/S- (BIOES, IOBES) or B-/M-/E-/S- (BMES), each with the entity type (B-PER)"
    )


def test_predict_split_without_text(tiny_bert, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"sentence": "good movie"}])
    dm = make(tiny_bert, train_file=str(SAMPLE), predict_file=str(path))
    with pytest.raises(ConfigError, match=r"^data\.text_column: column 'text' not in the predict split \(columns: "):
        dm.validate()


def test_tag_column_zero_is_the_token(tiny_bert):
    with pytest.raises(ConfigError, match=r"^data\.tag_column: column 0 is the token"):
        make(tiny_bert, train_file=str(SAMPLE), tag_column=0)


# --- predictions: entity decoding ---------------------------------------------------------------------------------


def test_predict_step_maps_entities_back_to_characters(tiny_bert, tmp_path):
    labels = ["O", "B-POS", "I-POS", "B-NEG"]
    text = "  the goods\tgreat  badly movie"
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": text}, {"text": "badly " * 20}])
    # max_length 10: the second row (40 tokens: bad ##ly 20 times) is read in windows of 8 sharing 2 tokens.
    dm = make(
        tiny_bert,
        train_file=str(SAMPLE),
        labels=[*labels, "B-ORG", "I-ORG"],
        predict_file=str(path),
        max_length=10,
        stride=2,
    )
    batch = dm.collate([encoded(dm, "predict")[i] for i in range(2)])
    assert batch[META]["window_row"] == [0] + [1] * 7  # windows start at tokens 0, 6, 12, ..., 36 of row 1
    model = TokenClassifier(backbone=tiny_bert, label_names=[*labels, "B-ORG", "I-ORG"])
    # Word tags for row 0: the O, goods B-POS, great I-POS, badly B-NEG, movie O; row 1: every word B-NEG. Every other
    # token (continuation sub-tokens ##s, ##ly, and a word's first sub-token in the window where it is not read) gets
    # another tag, which must be ignored.
    word_tag = {0: [0, 1, 2, 3, 0], 1: [3] * 20}
    logits = torch.zeros(*batch["input_ids"].shape, 6)
    for w, (row, reads) in enumerate(zip(batch[META]["window_row"], batch[META]["word_ids"].tolist(), strict=True)):
        for t, word in enumerate(reads):
            if word >= 0:
                logits[w, t, word_tag[row][word]] = 2.0 + word  # a different confidence per word
            elif batch["attention_mask"][w, t]:
                logits[w, t, 5] = 9.0
    model.forward = lambda batch: logits  # type: ignore[method-assign]
    rows = model.predict_step(batch, 0)

    def p(word: int) -> float:  # softmax probability of the chosen tag when its logit is 2 + word, others 0
        e = torch.tensor(2.0 + word).exp()
        return float(e / (e + 5))

    pos, neg = rows[0]["entities"]
    assert pos == {
        "text": "goods\tgreat",
        "type": "POS",
        "start": 6,
        "end": 17,
        "score": pytest.approx((p(1) + p(2)) / 2),
    }
    assert neg == {"text": "badly", "type": "NEG", "start": 19, "end": 24, "score": pytest.approx(p(3))}
    assert text[pos["start"] : pos["end"]] == pos["text"]
    assert rows[0]["tags"] == ["O", "B-POS", "I-POS", "B-NEG", "O"]
    # Longer than a window: every word is read once, none is left without a tag.
    assert [e["start"] for e in rows[1]["entities"]] == [6 * i for i in range(20)]
    assert [e["score"] for e in rows[1]["entities"]] == pytest.approx([p(i) for i in range(20)])
    assert rows[1]["tags"] == ["B-NEG"] * 20


# --- fit, test, predict through the CLI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> dict:
    """One short fit on the toy NER set (CoNLL train, JSONL validation and test), shared by the CLI tests."""
    tmp = tmp_path_factory.mktemp("ner-fit")
    predict_text = "The movie is GOODS and  the food service\tis badly ."
    data = {
        "train_file": str(write_conll(tmp / "train.conll", toy_ner_rows(96, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_ner_rows(40, 1))),
        "test_file": str(write_jsonl(tmp / "test.jsonl", toy_ner_rows(30, 2))),
        "predict_file": str(write_jsonl(tmp / "predict.jsonl", [{"text": predict_text}, {"text": ""}])),
        "cache_dir": str(tmp / "cache"),  # the autouse cache fixture is per test; this fixture is per module
    }
    root = tmp / "run"
    # A shuffle under which 4 epochs of the tiny model tag the predict sentence right (under some, it tags the
    # final "." too): what the predict test checks is the offsets of the entities.
    args = fit_args(tiny_bert, root, data, "--checkpoint.monitor=val/f1", "--checkpoint.mode=max", "--data.seed=2")
    FtlitCLI(args=["fit", *args])
    return {"root": root, "args": args, "text": predict_text}


def test_fit_logs_entity_f1_and_it_improves(trained):
    rows = read_metrics(trained["root"])
    f1 = column(rows, "val/f1")
    assert len(f1) == 4
    assert f1[-1] > 0.9 and f1[-1] > f1[0] + 0.3, f1
    for key in ("val/precision", "val/recall", "val/loss"):
        assert len(column(rows, key)) == 4, key
    assert not any(k.startswith("val/f1_") for k in rows[0]), "per-type scores are for test only"


def test_test_reports_micro_and_per_type_scores(trained):
    cli = FtlitCLI(args=["test", *trained["args"], "--ckpt_path=best"])
    results = cli.trainer.callback_metrics
    expected = {f"test/{s}{t}" for s in ("precision", "recall", "f1") for t in ("", "_POS", "_NEG", "_ORG")}
    assert expected | {"test/loss"} <= set(results)
    assert float(results["test/f1"]) > 0.9
    assert float(results["test/f1_ORG"]) > 0.9  # the two-word entity
    # test-results.json: the per-type table (with support) equals the logged SpanF1 scores, and the entity-type
    # confusion counts every gold entity once (a row) and every predicted one once (a column).
    written = json.loads((trained["root"] / "test-results.json").read_text())
    types = written["entity_confusion"]["types"]
    counts = torch.tensor(written["entity_confusion"]["counts"])
    assert types == ["NEG", "ORG", "POS"] and counts.shape == (4, 4) and counts[-1, -1] == 0
    for row in written["per_type"]:
        for score in ("precision", "recall", "f1"):
            assert row[score] == pytest.approx(float(results[f"test/{score}_{row['type']}"]), abs=1e-6)
    gold = counts[:-1].sum(1).tolist()
    assert [row["support"] for row in written["per_type"]] == gold and sum(gold) > 0


def test_predict_writes_entities_with_character_offsets(trained):
    FtlitCLI(args=["predict", *trained["args"], "--ckpt_path=best"])
    rows = [json.loads(line) for line in (trained["root"] / "predictions.jsonl").read_text().splitlines()]
    text = trained["text"]
    found = [(e["text"], e["type"], e["start"], e["end"]) for e in rows[0]["entities"]]
    assert found == [
        ("GOODS", "POS", text.index("GOODS"), text.index("GOODS") + 5),
        ("food service", "ORG", text.index("food"), text.index("service") + 7),
        ("badly", "NEG", text.index("badly"), text.index("badly") + 5),
    ]
    # A probability of the predicted (argmax) tag: at least 1/5 with 5 tags; its exact value is tested above.
    assert all(0.2 <= e["score"] <= 1.0 for e in rows[0]["entities"])
    assert rows[0]["tags"] == ["O", "O", "O", "B-POS", "O", "O", "B-ORG", "I-ORG", "O", "B-NEG", "O"]
    assert rows[1] == {"entities": [], "tags": []}
