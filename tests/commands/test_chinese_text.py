"""Chinese text in `ftlit explain`, `ftlit report` and their figures: attributions per character (the checkpoint's
word splitter for NER, BERT's basic words for sequence tasks), pages that declare UTF-8 and a CJK font stack, and
figures drawn in an installed CJK font or noted when there is none.

The models are tiny BERTs with a character vocabulary (tests/helpers/chinese.py), trained by ftlit's own CLI for a
few steps: what is tested is the granularity of the attributions and that explain splits as predict does, not what
the attributions mean.
"""

from __future__ import annotations

import json
import random
import re
import warnings
from html.parser import HTMLParser

import pytest
from helpers.chinese import FIXTURES, make_char_bert
from helpers.ner import TASK

from conftest import cli_args, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.commands import fonts
from ftlit.commands.explain import HTML_FILE, JSON_FILE, Input, attribute, explain, main
from ftlit.core import words

pytest.importorskip("captum")  # the `explain` extra
pytest.importorskip("matplotlib")  # the `plots` extra

RAW = "张伟在北京的华为公司工作。李娜昨天去了上海。"
# Spaced, mixed and punctuated: the bert splitter's words, which the checkpoint recorded, not the whitespace ones.
TEXTS = [RAW, "昨天，王芳去了杭州。", "张伟 在 北京"]
NAMES = ["张伟", "李娜", "王芳", "陈静", "赵磊", "周杰", "刘洋"]
CITIES = ["北京", "上海", "深圳", "杭州", "成都", "武汉", "广州"]
COMPANIES = ["华为公司", "小米集团", "网易公司"]
# Chinese label names too: they are drawn on the confusion matrix's axes and written in the report's tables.
TEMPLATES = {"工作": "{name}在{city}的{company}工作。", "出行": "{name}昨天去了{city}。"}


def classification_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(TEMPLATES))
        text = TEMPLATES[label].format(name=rng.choice(NAMES), city=rng.choice(CITIES), company=rng.choice(COMPANIES))
        rows.append({"text": text, "label": label})
    return rows


@pytest.fixture(scope="module")
def char_bert(tmp_path_factory) -> str:
    return str(make_char_bert(tmp_path_factory.mktemp("char-bert")))


def run_cli(*commands: list[str]) -> None:
    for args in commands:
        FtlitCLI(args=args)


@pytest.fixture(scope="module")
def zh_tagger(char_bert, tmp_path_factory, one_torch_thread) -> dict:
    """A short fit of the character BERT on the Chinese NER fixtures (BMES train, IOB2 validation), and `ftlit
    predict`'s rows for TEXTS."""
    tmp = tmp_path_factory.mktemp("zh-ner")
    data = {
        "train_file": str(FIXTURES / "zh-train.bmes.conll"),
        "validation_file": str(FIXTURES / "zh-validation.conll"),
        "predict_file": str(write_jsonl(tmp / "predict.jsonl", [{"text": t} for t in TEXTS])),
        "cache_dir": str(tmp / "cache"),
    }
    root = tmp / "run"
    fast = (
        "--trainer.max_epochs=4",
        "--model.scheduler=constant",
        "--model.learning_rate=1e-2",
        "--data.batch_size=16",
    )
    args = cli_args(char_bert, data, root, *fast, "--data.max_length=32", task=TASK)
    run_cli(["fit", *args], ["predict", *args, "--ckpt_path=last"])
    rows = [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]
    return {"ckpt": str(root / "checkpoints" / "last.ckpt"), "rows": rows}


@pytest.fixture(scope="module")
def zh_classifier(char_bert, tmp_path_factory, one_torch_thread) -> dict:
    """A few steps of fit of the character BERT on Chinese rows with Chinese labels, then `ftlit test` on rows that
    hold each text twice, once with each label: one of the two is always a mistake."""
    tmp = tmp_path_factory.mktemp("zh-cls")
    test = [{"text": r["text"], "label": label} for r in classification_rows(4, 2) for label in sorted(TEMPLATES)]
    data = {
        "train_file": str(write_jsonl(tmp / "train.jsonl", classification_rows(32, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", classification_rows(8, 1))),
        "test_file": str(write_jsonl(tmp / "test.jsonl", test)),
        "cache_dir": str(tmp / "cache"),
    }
    root = tmp / "run"
    args = cli_args(char_bert, data, root, "--trainer.max_epochs=2", "--data.max_length=32")
    run_cli(["fit", *args], ["test", *args, "--ckpt_path=last"])
    return {"ckpt": str(root / "checkpoints" / "last.ckpt"), "root": root}


def texts_of(entry: dict, segment: int = 0) -> list[str]:
    return [w["word"] for w in entry["words"] if w.get("segment", 0) == segment]


class Text(HTMLParser):
    """The text a browser shows of each ``<p class="words">`` (the coloured words and what lies between them)."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._depth = 0
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "p" and ("class", "words") in attrs:
            self.paragraphs.append("")
            self._depth = 1
        elif self._depth and tag == "span" and ("class", "pair") in attrs:
            self._depth = -1  # the "pair" marker: not the text's

    def handle_endtag(self, tag):
        if tag == "p":
            self._depth = 0
        elif tag == "span" and self._depth == -1:
            self._depth = 1

    def handle_data(self, data):
        if self._depth == 1:
            self.paragraphs[-1] += data


# --- explain --------------------------------------------------------------------------------------------------


def test_ner_explains_chinese_one_character_at_a_time_as_predict_tags_it(zh_tagger):
    rows = zh_tagger["rows"]
    assert len(rows[0]["tags"]) == len(RAW) and rows[0]["entities"], rows[0]  # the model learnt some entities
    entries = explain(zh_tagger["ckpt"], TEXTS, n_steps=8)
    expected = [(text, e) for text, row in zip(TEXTS, rows, strict=True) for e in row["entities"]]
    assert [(e["text"], e["entity"]) for e in entries] == [
        (text, {k: e[k] for k in ("text", "type", "start", "end")}) for text, e in expected
    ]
    for entry in entries:
        text = entry["text"]
        row = rows[TEXTS.index(text)]
        # One score per word of the checkpoint's splitter (bert): each character of Chinese text, the comma too.
        assert texts_of(entry) == [text[a:b] for a, b in words.bert(text)]
        assert len(entry["words"]) == len(row["tags"])
        assert all(text[w["start"] : w["end"]] == w["word"] for w in entry["words"])
    raw = next(e for e in entries if e["text"] == RAW)
    assert texts_of(raw) == list(RAW)


def test_serve_explains_an_exported_chinese_tagger_as_the_checkpoint(zh_tagger, tmp_path):
    from ftlit.commands.export import export
    from ftlit.serve.predictor import Predictor

    served = Predictor.load(str(export(zh_tagger["ckpt"], str(tmp_path / "export"))))
    entries = attribute(served.module, served.datamodule.tokenizer, [Input(RAW, None, "text", "")], n_steps=8)
    assert served.module.words == "bert"
    expected = explain(zh_tagger["ckpt"], RAW, n_steps=8)
    assert [e["entity"] for e in entries] == [e["entity"] for e in expected]
    assert [texts_of(e) for e in entries] == [list(RAW)] * len(expected)


def test_a_chinese_classifier_scores_each_character(zh_classifier):
    text, pair = "李娜昨天去了上海。", "张伟在北京的小米集团工作。"
    (entry,) = explain(zh_classifier["ckpt"], text, n_steps=8)
    assert entry["predicted"] in TEMPLATES
    assert texts_of(entry) == list(text)  # not one blob for the whole sentence
    assert [(w["start"], w["end"]) for w in entry["words"]] == [(i, i + 1) for i in range(len(text))]
    # Text pairs: the second text's characters too, as segment 1.
    (entry,) = explain(zh_classifier["ckpt"], [text], [pair], n_steps=8)
    assert texts_of(entry) == list(text) and texts_of(entry, 1) == list(pair)


def test_the_page_shows_chinese_as_written_and_english_with_its_spaces(zh_classifier, tmp_path):
    text = "李娜昨天去了上海。"
    main([f"--ckpt_path={zh_classifier['ckpt']}", f"--text={text}", f"--text_pair={text}", "--n_steps=4",
          f"--out={tmp_path / 'out'}"])  # fmt: skip
    (entry,) = json.loads((tmp_path / "out" / JSON_FILE).read_text(encoding="utf-8"))
    assert texts_of(entry) == list(text)
    page = (tmp_path / "out" / HTML_FILE).read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page and fonts.FONT_FAMILY in page
    assert page.count('class="w"') == 2 * len(text)
    # Between the coloured characters nothing is added: the sentence reads as written.
    assert Text(page).paragraphs == [text, text]


def test_a_whitespace_checkpoint_explains_words_as_before(zh_tagger, tmp_path):
    # The same model, its checkpoint marked as from before data.words: explain splits at whitespace, as its predict.
    import torch

    ckpt = torch.load(zh_tagger["ckpt"], map_location="cpu", weights_only=True)
    del ckpt["datamodule_hyper_parameters"]["words"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    for entry in explain(str(tmp_path / "old.ckpt"), TEXTS, n_steps=2):
        assert texts_of(entry) == entry["text"].split()


# --- the report -------------------------------------------------------------------------------------------------


def test_the_report_of_a_chinese_run_renders_its_text_and_explains_it_per_character(zh_classifier, monkeypatch):
    from ftlit.commands.report import report

    # No CJK font, whatever this machine has: the figures with Chinese labels get the note, the others do not.
    monkeypatch.setattr(fonts, "installed_fonts", lambda: {"DejaVu Sans"})
    noted: list[list[str]] = []
    add_note = fonts.add_note

    def spy(fig, *args):
        note = add_note(fig, *args)
        noted.append([t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))])
        return note

    monkeypatch.setattr(fonts, "add_note", spy)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph")  # no "Glyph ... missing from font" per character
        page = report([str(zh_classifier["root"])], explain=2).read_text(encoding="utf-8")

    results = json.loads((zh_classifier["root"] / "test-results.json").read_text(encoding="utf-8"))
    assert results["labels"] == sorted(TEMPLATES) and results["mistakes"]
    assert '<meta charset="utf-8">' in page
    assert re.search(r"body \{ font-family: [^}]*\"Noto Sans CJK SC\", \"Source Han Sans\", \"PingFang SC\", "
                     r"\"Microsoft YaHei\", sans-serif;", page)  # fmt: skip
    for label in TEMPLATES:
        assert f"<td>{label}</td>" in page  # the per-class table and the mistakes, as text
    explained = results["mistakes"][:2]
    for mistake in explained:
        assert f"<td>{mistake['text']}</td>" in page
    section = page[page.index("most confident mistakes</h4>") :]
    assert Text(section).paragraphs == [m["text"] for m in explained]
    assert section.count('class="w"') == sum(len(m["text"]) for m in explained)  # a score per character
    # The confusion matrix (label names on its axes) and the ROC and PR legends hold Chinese: each got the note.
    assert len(noted) == 3, noted
    assert all(fonts.NO_FONT_NOTE in texts and any("工作" in t for t in texts) for texts in noted)


# --- figure fonts -----------------------------------------------------------------------------------------------


def confusion(labels: list[str]):
    from ftlit.commands.report import draw_confusion

    return draw_confusion([[3, 1], [2, 4]], labels)


def texts(fig) -> list[str]:
    """The figure's own texts (its suptitle, and a note)."""
    return [t.get_text() for t in fig.texts]


def tick_families(fig) -> dict[str, list[str]]:
    return {t.get_text(): t.get_fontfamily() for ax in fig.axes for t in ax.get_yticklabels() if t.get_text()}


def test_the_first_installed_cjk_font_is_chosen():
    assert fonts.cjk_font({"DejaVu Sans", "WenQuanYi Zen Hei", "Noto Sans CJK JP"}) == "Noto Sans CJK JP"
    assert fonts.cjk_font({"DejaVu Sans", "Droid Sans Fallback"}) == "Droid Sans Fallback"
    assert fonts.cjk_font({"DejaVu Sans", "Some CJK Font"}) == "Some CJK Font"
    assert fonts.cjk_font({"DejaVu Sans", "STIXGeneral"}) is None
    assert fonts.needs_cjk_font("工作") and fonts.needs_cjk_font("ＡＢ，") and fonts.needs_cjk_font("カナ")
    assert not fonts.needs_cjk_font("PER (micro F1 0.9)") and not fonts.needs_cjk_font("café ☺")


def test_a_figure_with_chinese_uses_an_installed_cjk_font(monkeypatch):
    monkeypatch.setattr(fonts, "installed_fonts", lambda: {"DejaVu Sans", "Noto Sans CJK SC", "WenQuanYi Zen Hei"})
    fig = confusion(["工作", "出行"])
    with fonts.cjk_figure(fig) as font:
        assert font == "Noto Sans CJK SC"
        families = tick_families(fig)
        assert families["工作"][0] == families["出行"][0] == "Noto Sans CJK SC"
        assert families["工作"][1:] == ["sans-serif"]  # the figure's own font after it, for other glyphs
        assert fonts.NO_FONT_NOTE not in texts(fig)
        assert fig.axes[0].get_title() == "Counts" and fig.axes[0].title.get_fontfamily() == ["sans-serif"]
    # With a font that is really installed in its place, the figure draws (a list of families, each glyph from the
    # first that has it).
    from ftlit.commands.plot import png_bytes

    monkeypatch.setattr(fonts, "CJK_FONTS", ("DejaVu Serif",))
    monkeypatch.setattr(fonts, "installed_fonts", lambda: {"DejaVu Sans", "DejaVu Serif"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # DejaVu Serif has no ideographs
        assert png_bytes(confusion(["工作", "出行"])).startswith(b"\x89PNG")


def test_a_figure_with_chinese_and_no_cjk_font_says_so(monkeypatch):
    from ftlit.commands.plot import png_bytes

    monkeypatch.setattr(fonts, "installed_fonts", lambda: {"DejaVu Sans"})
    fig = confusion(["工作", "出行"])
    with fonts.cjk_figure(fig) as font:
        assert font is None
        assert texts(fig).count(fonts.NO_FONT_NOTE) == 1
        assert fig.get_layout_engine().get()["rect"][1] > 0  # room kept at the foot for it
        assert tick_families(fig)["工作"] == ["sans-serif"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph")  # the note replaces matplotlib's warning per missing glyph
        assert png_bytes(confusion(["工作", "出行"])).startswith(b"\x89PNG")
    # A figure without CJK text is left alone, note or font.
    fig = confusion(["PER", "LOC"])
    with fonts.cjk_figure(fig) as font:
        assert font is None and fonts.NO_FONT_NOTE not in texts(fig)


def test_a_token_across_several_words_shares_its_score_among_them():
    from ftlit.commands.explain import _covered

    spans = words.bert("北京 欢迎你")  # 北 京 欢 迎 你
    starts = [a for a, _ in spans]
    assert _covered(spans, starts, 0, 2) == [(0, 0.5), (1, 0.5)]  # a SentencePiece piece "北京"
    assert _covered(spans, starts, 3, 6) == [(2, 1 / 3), (3, 1 / 3), (4, 1 / 3)]
    assert _covered(spans, starts, 1, 2) == [(1, 1.0)]
    assert _covered(spans, starts, 2, 3) == [(1, 1.0)]  # the space: the word before it
    assert _covered(spans, starts, 0, 0) == [(0, 1.0)]  # an empty span
