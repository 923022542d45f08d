"""Smoke test of the ftlit-vs-Trainer benchmark harness (benchmarks/run.py) on the tiny profile, for a few steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_runs_both_systems_and_reports_ratios(quickstart_data, tmp_path):
    cmd = [sys.executable, "benchmarks/run.py", "--profile=cpu-tiny", "--max-steps=3", f"--out={tmp_path}"]
    # One torch thread: a busy 2-core machine otherwise spends most of a tiny step with threads waiting for cores.
    done = subprocess.run(cmd + ["--threads=1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| train samples/s" in done.stdout  # the markdown table is printed

    report = json.loads((tmp_path / "cpu-tiny.json").read_text())
    assert (tmp_path / "cpu-tiny.md").read_text().startswith("### `cpu-tiny`")
    assert set(report["systems"]) == {"ftlit", "trainer"}
    for system in report["systems"].values():
        assert system["steps"] == 3
        assert system["train_samples_per_s"] > 0
        assert system["train_tokens_per_s"] > 0
        assert system["loader_batches_per_s"] > 0
        assert system["peak_rss_mib"] > 0
        assert 0.0 <= system["val_accuracy"] <= 1.0
    # Same data, batch size and steps: both trained on the same number of rows.
    assert report["systems"]["ftlit"]["samples"] == report["systems"]["trainer"]["samples"] == 3 * 32
    for key in ("train_samples_per_s", "train_tokens_per_s", "peak_rss_mib", "val_accuracy", "loader_batches_per_s"):
        assert report["ratios"][key] > 0
