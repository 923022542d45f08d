"""The command itself: entry points, the printed config, Hub-style sources, model options."""

from __future__ import annotations

import subprocess
import sys

import datasets
import pytest
import yaml

from conftest import cli_args, toy_rows
from ftlit.cli import FtlitCLI, main


def test_python_dash_m_and_help_document_every_key(tiny_bert):
    out = subprocess.run(
        [sys.executable, "-m", "ftlit", "fit", "--help"], check=True, capture_output=True, text=True
    ).stdout
    for key in ("--model CONFIG", "--data CONFIG", "--checkpoint.monitor", "--predictions.output", "--ckpt_path"):
        assert key in out
    model_help = subprocess.run(
        [sys.executable, "-m", "ftlit", "fit", "--model.help", "ftlit.tasks.text.SequenceClassifier"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "--model.warmup_ratio" in model_help and "Share of all training steps" in model_help


def test_print_config_is_complete_and_runs_as_is(tiny_bert, toy_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", *cli_args(tiny_bert, toy_data, tmp_path / "run", "--trainer.max_epochs=1"), "--print_config"])
    assert exc.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["learning_rate"] == 3e-3
    assert config["model"]["init_args"]["scheduler"] == "linear"  # defaults are written out too
    assert config["data"]["init_args"]["max_length"] == 128
    assert config["checkpoint"]["save_last"] is True
    path = tmp_path / "printed.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = FtlitCLI(args=["fit", f"--config={path}"])
    assert cli.trainer.global_step == 12


def test_a_datasets_source_name_with_class_labels(tiny_bert, tmp_path):
    # `data.dataset` goes through datasets.load_dataset, as a Hub name does; a local folder needs no network.
    folder = tmp_path / "hub-like"
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    for split, seed in (("train", 0), ("validation", 1)):
        rows = toy_rows(30, seed)
        ds = datasets.Dataset.from_dict(
            {"sentence": [r["text"] for r in rows], "label": [int(r["label"] == "pos") for r in rows]},
            features=features,
        )
        (folder / split).mkdir(parents=True)
        ds.to_parquet(str(folder / split / "data.parquet"))
    args = cli_args(tiny_bert, {"dataset": str(folder), "text_column": "sentence"}, tmp_path / "run")
    cli = FtlitCLI(args=args, run=False)
    assert cli.datamodule.label_names == ["neg", "pos"]  # ClassLabel names, not 0/1
    assert len(cli.datamodule.raw["validation"]) == 30
    assert "test" not in cli.datamodule.raw


def test_sdpa_attention_and_head_dropout(tiny_bert, toy_data, tmp_path):
    cli = FtlitCLI(args=cli_args(tiny_bert, toy_data, tmp_path, "--model.head_dropout=0.37"), run=False)
    hf = cli.model.model
    assert hf.config._attn_implementation == "sdpa"
    assert hf.dropout.p == pytest.approx(0.37)
    assert hf.bert.encoder.layer[0].attention.self.dropout.p == pytest.approx(0.1)  # backbone dropout untouched
