"""The command line both row scripts share: ``--spec SPEC.json --result RESULT.json``, one row run in its own
process (``trainer_row.py``, ``ftlit_row.py``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def main(run: Callable[[dict[str, Any]], dict[str, Any]], doc: str | None) -> None:
    """Run the row ``--spec`` describes with ``run`` and write its result to ``--result``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    ns = parser.parse_args()
    result = run(json.loads(ns.spec.read_text()))
    ns.result.write_text(json.dumps(result, indent=1))
