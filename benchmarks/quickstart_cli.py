"""What the quickstart benchmarks (DANN, distillation, pruning) share: ``ftlit fit`` then ``ftlit test
--ckpt_path best`` of ``configs/quickstart.yaml`` through the real CLI, each in its own process."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def quickstart_args(root: Path, seed: int, work: Path, max_steps: int | None, *extra: str) -> list[str]:
    """The command line of one run: the quickstart config, a seed, its own folder, a shared tokenization cache."""
    return [
        "--config=configs/quickstart.yaml",
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        f"--data.cache_dir={work / 'cache'}",
        "--overwrite=true",
        *(["--trainer.max_steps", str(max_steps)] if max_steps else []),
        *extra,
    ]


def fit_and_test(root: Path, args: list[str], name: str) -> dict[str, Any]:
    """Fit, then test the best checkpoint; the run's test results and timing, the wall time and the command."""
    start = time.perf_counter()
    for command in (["fit", *args], ["test", *args, "--ckpt_path=best"]):
        done = subprocess.run([sys.executable, "-m", "ftlit", *command], cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return {
        "results": json.loads((root / "test-results.json").read_text()),
        "timing": json.loads((root / "timing.json").read_text()),
        "seconds": time.perf_counter() - start,
        "command": "ftlit fit " + shlex.join(args),
    }
