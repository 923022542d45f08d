"""Smoke test of the ftlit-vs-Trainer benchmark harness (benchmarks/run.py) on the tiny profile, for a few steps."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from bench_profiles import PROFILES, VARIANTS, make_random_bert_base, variant  # noqa: E402


def test_variants_combine_with_plus_and_reject_unknown_names():
    both = variant("group_by_length+pad_to_multiple_of")
    assert both.ftlit_overrides() == ["--data.group_by_length=true", "--data.pad_to_multiple_of=8"]
    assert both.trainer_args == {"train_sampling_strategy": "group_by_length"}
    assert both.collator_args == {"pad_to_multiple_of": 8}
    assert variant("compile") == VARIANTS["compile"]
    for bad in ("fast", "compile+compile", "compile+"):
        with pytest.raises(ValueError, match="unknown or repeated variant"):
            variant(bad)


def test_offline_gpu_profile_builds_bert_base_exactly(tmp_path):
    # The lent GPU machines have no network: bert-base's shape and vocabulary must come from packaged files.
    from transformers import AutoConfig, AutoTokenizer

    from ftlit.backbone import resolve

    folder = make_random_bert_base(tmp_path / "bert", resolve(PROFILES["cpu-minilm"].backbone))
    config = AutoConfig.from_pretrained(folder)
    shape = (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size)
    assert shape == (12, 768, 12, 3072) and config.vocab_size == 30522
    assert AutoTokenizer.from_pretrained(folder)("Hello world")["input_ids"] == [101, 7592, 2088, 102]
    assert not any(p.needs_hub for name, p in PROFILES.items() if name != "gpu-bert")


@pytest.mark.slow
def test_benchmark_runs_both_systems_and_reports_ratios(quickstart_data, tmp_path):
    cmd = [sys.executable, "benchmarks/run.py", "--profile=cpu-tiny", "--max-steps=3", f"--out={tmp_path}"]
    # One torch thread: a busy 2-core machine otherwise spends most of a tiny step with threads waiting for cores.
    cmd += ["--threads=1", "--variant=pad_to_multiple_of"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| train samples/s" in done.stdout  # the markdown table is printed

    report = json.loads((tmp_path / "cpu-tiny.json").read_text())
    table = (tmp_path / "cpu-tiny.md").read_text()
    assert table.startswith("### `cpu-tiny`")
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

    # The variant: both systems ran again with the option on, through ftlit's config key and the Trainer's collator.
    assert list(report["variants"]) == ["pad_to_multiple_of"]
    padded = report["variants"]["pad_to_multiple_of"]
    assert "--data.pad_to_multiple_of=8" in padded["runs"]["ftlit"][0]["command"]
    assert padded["ratios"]["train_samples_per_s"] > 0
    assert set(padded["speedup_vs_default"]) == {"ftlit", "trainer"}
    default_systems = report["systems"]
    for name, system in padded["systems"].items():
        assert system["variant"] == "pad_to_multiple_of"
        assert system["steps"] == 3 and system["loader_batches_per_s"] > 0
        # Same batches as the default run, each padded up to a multiple of 8 tokens.
        assert system["tokens"] == default_systems[name]["tokens"]
        assert system["padded_tokens"] % (8 * 32) == 0
        assert system["padded_tokens"] >= default_systems[name]["padded_tokens"]
    assert "| `pad_to_multiple_of` |" in table
