"""The words of a text, as ``(start, end)`` character spans into it: the one word splitter that NER's training,
predict, test and serve (and explain and the report) share, so a word is the same thing everywhere.

* ``whitespace``: runs of non-space characters (what ftlit did before ``data.words``; right for text written with
  spaces between words and punctuation already split off, like CoNLL files).
* ``bert``: BERT's basic tokenization (transformers' ``BasicTokenizer``, the fast tokenizer's ``BertPreTokenizer``
  with ``tokenize_chinese_chars``): split at whitespace, every punctuation character (ASCII and Unicode ``P*``:
  ``，。！？；：「」`` too) a word of its own, every CJK ideograph a word of its own. Other scripts (Latin, full-width
  letters and digits, kana, Hangul, emoji) stay together between those. A BERT tokenizer never puts one token
  across two of these words.
* ``characters``: every character a word (Thai, Japanese, character-tagged corpora), keeping combining marks,
  variation selectors, emoji modifiers and zero-width-joined sequences with the character they belong to.

Unlike BERT, nothing is removed: control characters stay inside their word, so offsets always index the original
string and ``text[start:end]`` is the word as written.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from ftlit.errors import ConfigError

Span = tuple[int, int]

_WORD = re.compile(r"\S+")
# transformers' BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks and their extensions and
# compatibility blocks (not kana or Hangul, which are written with spaces or handled like other scripts).
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_ZWJ = "\u200d"


def is_cjk(char: str) -> bool:
    """Whether ``char`` is a CJK ideograph as BERT counts them (each is a word of its own)."""
    cp = ord(char)
    return any(low <= cp <= high for low, high in _CJK)


def is_punctuation(char: str) -> bool:
    """BERT's punctuation: every non-letter, non-digit ASCII symbol (``$``, ``^`` and ``` ` ``` too) and every Unicode
    punctuation character (``P*``: full-width ``，。！？；：「」`` among them)."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def whitespace(text: str) -> list[Span]:
    """Runs of non-whitespace characters."""
    return [m.span() for m in _WORD.finditer(text)]


def bert(text: str) -> list[Span]:
    """BERT's basic words: whitespace-separated runs, with each punctuation character and each CJK ideograph cut out
    as a word of its own."""
    spans: list[Span] = []
    start = None  # where the current run of other characters began
    for i, char in enumerate(text):
        if char.isspace():
            alone = False
        elif is_punctuation(char) or is_cjk(char):
            alone = True
        else:
            if start is None:
                start = i
            continue
        if start is not None:
            spans.append((start, i))
            start = None
        if alone:
            spans.append((i, i + 1))
    if start is not None:
        spans.append((start, len(text)))
    return spans


def _attaches(char: str, previous: str) -> bool:
    """Whether ``char`` belongs to the character before it: a combining mark (Thai vowels, accents), a variation
    selector or emoji modifier, a zero-width joiner or what it joins."""
    return (
        unicodedata.category(char).startswith("M")
        or char == _ZWJ
        or previous == _ZWJ
        or 0x1F3FB <= ord(char) <= 0x1F3FF  # skin-tone modifiers
    )


def characters(text: str) -> list[Span]:
    """Every non-whitespace character a word, with the marks and joined characters that belong to it."""
    spans: list[Span] = []
    for i, char in enumerate(text):
        if char.isspace():
            continue
        if spans and spans[-1][1] == i and _attaches(char, text[i - 1]):
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


SPLITTERS: dict[str, Callable[[str], list[Span]]] = {
    "whitespace": whitespace,
    "bert": bert,
    "characters": characters,
}


def splitter(name: str, field: str = "data.words") -> Callable[[str], list[Span]]:
    """The splitter called ``name``, refused in one line naming ``field`` when there is none."""
    try:
        return SPLITTERS[name]
    except (KeyError, TypeError):
        raise ConfigError(field, f"{name!r} is not a word splitter: use {', '.join(SPLITTERS)}") from None


def split(text: str, name: str) -> list[Span]:
    """The ``(start, end)`` spans of ``text``'s words as the splitter called ``name`` finds them."""
    return splitter(name)(text)
