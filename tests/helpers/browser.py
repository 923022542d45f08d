"""A real headless browser for page tests: the system's Chromium driven by Playwright (its own download cannot reach
its host here)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path


def chromium() -> str | None:
    """The Chromium binary, if there is one."""
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")


def browser_missing() -> str | None:
    """Why no browser test can run here, or ``None``."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed"
    if chromium() is None:
        return "no chromium binary (/usr/bin/chromium or chromium on PATH)"
    return None
