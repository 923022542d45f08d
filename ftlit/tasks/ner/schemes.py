"""Tag schemes of NER training files, read into IOB2: Chinese corpora (MSRA, People's Daily, Weibo, Resume) ship
character-per-line files tagged BIOES (IOBES) or BMES, and ftlit trains, scores and predicts IOB2.

``B`` begins an entity, ``I`` (BMES: ``M``) continues it, ``E`` ends one of several words and ``S`` is an entity of
one word: ``E-X`` becomes ``I-X``, ``S-X`` becomes ``B-X`` and ``M-X`` becomes ``I-X``, so an entity covers the same
words before and after. IOB2 files are read as they are (an ``I-X`` after ``O`` still starts an entity, as
seqeval's default mode reads IOB1). BIOES and BMES spell every entity's start and end, so a tag that breaks that
(``B-X`` then ``O``: an IOB2 entity in a BIOES file) is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

TagScheme = Literal["auto", "iob2", "bioes", "iobes", "bmes", "none"]

# What each prefix becomes in IOB2, per scheme (``none``: the tags as written, which the model then learns).
_TO_IOB2 = {
    "iob2": {"B": "B", "I": "I"},
    "bioes": {"B": "B", "I": "I", "E": "I", "S": "B"},
    "bmes": {"B": "B", "M": "I", "E": "I", "S": "B"},
    "none": {"B": "B", "I": "I", "E": "E", "S": "S"},
}
NAMES = {"iob2": "IOB2", "bioes": "BIOES", "bmes": "BMES", "none": "the tags read as written (O, B-, I-, E-, S-)"}
# The prefix that continues an entity, in the schemes that also mark its end.
_INSIDE = {"bioes": "I", "bmes": "M"}
NO_SCHEME = (
    "fits no tag scheme: use O and B-/I- (IOB2), B-/I-/E-/S- (BIOES, IOBES) or B-/M-/E-/S- (BMES), each with the "
    "entity type (B-PER)"
)


def canonical(scheme: str) -> str:
    """``iobes`` is BIOES by another name."""
    return "bioes" if scheme == "iobes" else scheme


def parse(tag: str) -> tuple[str, str] | None:
    """``(prefix, type)`` of a tag (``("O", "")`` for ``O``; the type may be empty, as in a bare ``B``), or ``None``
    for a tag of no scheme."""
    if tag == "O":
        return "O", ""
    prefix, sep, type_ = tag.partition("-")
    if prefix in ("B", "I", "M", "E", "S") and (type_ or not sep):
        return prefix, type_
    return None


def detect(rows: Iterable[list[str]]) -> str:
    """The scheme of a split's tags: BMES if any tag is ``M-``, else BIOES if any is ``E-`` or ``S-``, else IOB2."""
    prefixes = {tag.partition("-")[0] for row in rows for tag in row}
    if "M" in prefixes:
        return "bmes"
    return "bioes" if prefixes & {"E", "S"} else "iob2"


def to_iob2(tag: str, scheme: str) -> str:
    """One tag in IOB2 (a tag of no scheme, or not of ``scheme``, is returned as it is: :func:`problem` names it)."""
    parsed = parse(tag)
    if parsed is None or parsed[0] == "O":
        return tag
    prefix, type_ = parsed
    new = _TO_IOB2[canonical(scheme)].get(prefix, prefix)
    return f"{new}-{type_}" if type_ else new


def problem(tags: list[str], scheme: str) -> tuple[int, str, bool] | None:
    """The first tag of one sentence that ``scheme`` cannot read: its index, what is wrong (to follow "tag 'X' at
    word N ..."), and whether the fault is the scheme's (``False``: the tag is of no scheme at all). ``None`` when
    every tag reads.

    Args:
        tags: The sentence's tags, one per word.
        scheme: ``iob2``, ``bioes`` (``iobes``), ``bmes`` or ``none`` (an ``auto`` already resolved).
    """
    scheme = canonical(scheme)
    allowed = _TO_IOB2[scheme]
    parsed = []
    for i, tag in enumerate(tags):
        p = parse(tag)
        if p is None:
            return i, NO_SCHEME, False
        if p[0] != "O" and p[0] not in allowed:
            return i, f"is not {NAMES[scheme]}", True
        parsed.append(p)
    inside = _INSIDE.get(scheme)
    if inside is None:
        return None
    open_type: str | None = None  # the type of the entity a B or inside tag left open
    for i, (prefix, type_) in enumerate([*parsed, ("O", "")]):
        continues = prefix in (inside, "E")
        if open_type is not None and not (continues and type_ == open_type):
            go_on, end, single = _tag(inside, open_type), _tag("E", open_type), _tag("S", open_type)
            why = f"is followed by no {go_on} or {end}: {NAMES[scheme]} ends an entity with {end}, one word is {single}"
            return i - 1, why, True
        if open_type is None and continues:
            return i, f"continues no entity: {NAMES[scheme]} starts one with {_tag('B', type_)}", True
        open_type = type_ if prefix in ("B", inside) else None
    return None


def _tag(prefix: str, type_: str) -> str:
    return f"{prefix}-{type_}" if type_ else prefix
