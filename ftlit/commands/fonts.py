"""Chinese, Japanese and Korean text in the pages and figures of ``ftlit explain``, ``plot`` and ``report``.

Pages: the CSS font stack ``FONT_FAMILY`` (the system's Latin font, then the common CJK fonts of Linux, macOS and
Windows; a browser takes each character from the first font in the list that has it), beside ``<meta
charset="utf-8">``. Figures (matplotlib, which draws only with fonts it finds installed): :func:`cjk_figure` gives
every text of a figure that holds CJK characters the first installed CJK font of ``CJK_FONTS`` (looked up among
matplotlib's installed fonts, ``matplotlib.font_manager``), and, when none is installed, draws ``NO_FONT_NOTE`` at
the foot of the figure instead of leaving unexplained boxes (matplotlib's warning for each missing glyph is then
not repeated: the note says it once).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from ftlit.core.words import is_cjk

FONT_FAMILY = (
    'system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "Source Han Sans", "PingFang SC", "Microsoft YaHei", '
    "sans-serif"
)
# Installed-font family names matplotlib can draw Chinese (and Japanese, Korean) with, best first: Noto Sans CJK /
# Source Han Sans (fonts-noto-cjk), WenQuanYi (fonts-wqy-*), Droid Sans Fallback (fonts-droid-fallback), AR PL
# (fonts-arphic-*), then those of macOS and Windows.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK JP",
    "Noto Sans CJK KR",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "Source Han Sans",
    "Noto Serif CJK SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "AR PL UKai CN",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "Microsoft YaHei",
    "SimHei",
    "SimSun",
    "Arial Unicode MS",
)
NO_FONT_NOTE = "no CJK font installed: Chinese labels may show as boxes; install fonts-noto-cjk"
# Besides the ideographs (ftlit.core.words.is_cjk), the blocks a Latin font such as DejaVu Sans lacks: CJK symbols
# and punctuation (、。「」), kana, bopomofo, Hangul and the full-width forms (，！？２０).
_CJK_BLOCKS = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x33FF),  # CJK symbols and punctuation, kana, bopomofo, Hangul compatibility, enclosed CJK
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # half-width and full-width forms
)
_NOTE_POINTS = 7  # the note's font size


def needs_cjk_font(text: str) -> bool:
    """Whether ``text`` holds a character that needs a CJK font (an ideograph, kana, Hangul, full-width forms)."""
    return any(is_cjk(c) or any(low <= ord(c) <= high for low, high in _CJK_BLOCKS) for c in str(text))


def installed_fonts() -> set[str]:
    """The family names of the fonts matplotlib finds installed."""
    from matplotlib import font_manager

    return {font.name for font in font_manager.fontManager.ttflist}


def cjk_font(installed: Iterable[str] | None = None) -> str | None:
    """The installed family to draw CJK text with: the first of ``CJK_FONTS``, else any family named ``... CJK ...``;
    None when there is none. ``installed``: the family names (default: :func:`installed_fonts`)."""
    names = set(installed_fonts() if installed is None else installed)
    found = next((name for name in CJK_FONTS if name in names), None)
    return found or next((name for name in sorted(names) if "CJK" in name), None)


@contextlib.contextmanager
def cjk_figure(fig: Any) -> Iterator[str | None]:
    """Around drawing ``fig`` (``savefig``): its texts with CJK characters in an installed CJK font, or, with none
    installed, :data:`NO_FONT_NOTE` at its foot. Yields the font used (None: no CJK text, or no font)."""
    from matplotlib.text import Text

    texts = [t for t in fig.findobj(Text) if needs_cjk_font(t.get_text())]
    font = cjk_font() if texts else None
    if not texts:
        yield None
    elif font is not None:
        for text in texts:
            # A list of families: a glyph the CJK font lacks is drawn from the text's own font.
            text.set_fontfamily([font, *text.get_fontfamily()])
        yield font
    else:
        add_note(fig)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
            yield None


def add_note(fig: Any, note: str = NO_FONT_NOTE) -> Any:
    """``note`` in small print at the bottom left of ``fig``, below room kept for it; returns its Text."""
    height = fig.get_figheight() * 72  # points
    share = min(2.2 * _NOTE_POINTS / height, 0.2)
    engine = fig.get_layout_engine()
    if engine is not None and hasattr(engine, "set") and "rect" in engine.get():
        engine.set(rect=(0, share, 1, 1 - share))
    else:
        fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, share + 0.05))
    return fig.text(0.005, share / 2, note, fontsize=_NOTE_POINTS, color="#b00020", ha="left", va="center")
