"""The word splitter (ftlit.core.words): spans into the original string, BERT's basic words, characters."""

from __future__ import annotations

import pytest
from transformers import BertTokenizer

from ftlit.core import words
from ftlit.errors import ConfigError

MIXED = "2024年3月，Apple在上海发布了iPhone 15。"
# Full-width digits and letters, a full-width space, CJK punctuation, an emoji with a skin tone, a joined family,
# Thai (combining vowels), a CJK extension-B ideograph, tabs and a control character inside a word.
ODD = "「２０２４ｘ」！\u3000李娜😀👍🏽吃了🍎；👨\u200d👩\u200d👧 กินข้าว 𠀀字\tab\x01cd？"


def texts(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[a:b] for a, b in spans]


def test_bert_words_of_a_mixed_string():
    assert texts(MIXED, words.bert(MIXED)) == [
        "2024", "年", "3", "月", "，", "Apple", "在", "上", "海", "发", "布", "了", "iPhone", "15", "。",
    ]  # fmt: skip


def test_bert_words_of_full_width_text_emoji_and_other_scripts():
    assert texts(ODD, words.bert(ODD)) == [
        "「", "２０２４ｘ", "」", "！", "李", "娜", "😀👍🏽", "吃", "了", "🍎", "；", "👨\u200d👩\u200d👧",
        "กินข้าว", "𠀀", "字", "ab\x01cd", "？",
    ]  # fmt: skip


@pytest.mark.parametrize("text", [MIXED, ODD, "", "   ", "a  b\t\nc", "張偉，你好！"])
@pytest.mark.parametrize("name", list(words.SPLITTERS))
def test_spans_index_the_original_string_in_order(text, name):
    spans = words.split(text, name)
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert all(b <= a2 for (_, b), (a2, _) in zip(spans, spans[1:], strict=False))
    # Every non-space character is in exactly one word; no word holds a space.
    covered = [i for a, b in spans for i in range(a, b)]
    assert covered == [i for i, c in enumerate(text) if not c.isspace()]


def test_whitespace_words_are_todays_split():
    assert texts(MIXED, words.whitespace(MIXED)) == ["2024年3月，Apple在上海发布了iPhone", "15。"]


def test_characters_keep_marks_and_joined_emoji_together():
    text = "กินข้าว 👍🏽👨\u200d👩\u200d👧李a"
    assert texts(text, words.characters(text)) == ["กิ", "น", "ข้", "า", "ว", "👍🏽", "👨\u200d👩\u200d👧", "李", "a"]


def test_bert_words_are_what_berts_basic_tokenizer_splits():
    """Each word tokenizes alone into the tokens BERT's own tokenizer gives the whole string: no token crosses two."""
    chars = sorted(set(MIXED + "張偉你好") - {" "})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, "apple", "iphone", "2024", "15"]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, tokenize_chinese_chars=True)
    assert tokenizer.convert_tokens_to_ids("海") != tokenizer.unk_token_id
    for text in (MIXED, "張偉，你好！Apple 2024。"):
        pieces = [tokenizer.tokenize(text[a:b]) for a, b in words.bert(text)]
        assert all(len(p) == 1 for p in pieces), pieces
        assert [t for p in pieces for t in p] == tokenizer.tokenize(text)


def test_an_unknown_splitter_is_one_line():
    with pytest.raises(ConfigError, match=r"^data\.words: 'spaces' is not a word splitter: use whitespace, bert, "):
        words.split("a b", "spaces")
