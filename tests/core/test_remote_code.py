"""``trust_remote_code``: a backbone that ships its own Python code runs it only when the config says so."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import CONFIGURATION, cli_args
from ftlit.backbone import unpack
from ftlit.cli import FtlitCLI, main
from ftlit.commands.export import export
from ftlit.tasks.text import SequenceClassifier


def test_custom_code_is_refused_by_default(custom_code_bert, toy_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", *cli_args(custom_code_bert, toy_data, tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"ftlit: error: model.backbone: '{custom_code_bert}' ships its own Python code: "
        "set model.trust_remote_code=true if you trust its source"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_trust_remote_code_runs_the_model_s_own_classes(custom_code_bert, toy_data, tmp_path):
    args = cli_args(custom_code_bert, toy_data, tmp_path / "run", "--model.trust_remote_code=true")
    cli = FtlitCLI(args=args, run=False)
    assert type(cli.model.model).__name__ == "CustomBertForSequenceClassification"
    assert cli.model.model.ran_custom_code
    assert cli.datamodule.trust_remote_code  # linked, so the tokenizer may run the repo's code too


def test_a_checkpoint_carries_the_model_s_own_code(custom_code_bert, toy_data, tmp_path):
    # The repo's Python files travel inside the checkpoint: with the folder gone, the model rebuilds from its own
    # classes, and the export is a folder that transformers loads with trust_remote_code.
    root = tmp_path / "run"
    args = cli_args(custom_code_bert, toy_data, root, "--model.trust_remote_code=true", "--trainer.max_epochs=1")
    cli = FtlitCLI(args=["fit", *args])
    batch = next(iter(cli.datamodule.val_dataloader()))
    cli.model.eval()
    with torch.no_grad():
        expected = cli.model(batch)
    ckpt = root / "checkpoints" / "last.ckpt"
    code = torch.load(ckpt, weights_only=True)["ftlit"]["code"]
    assert sorted(code) == ["configuration_custom.py", "modeling_custom.py"]
    shutil.rmtree(custom_code_bert)

    restored = SequenceClassifier.load_from_checkpoint(ckpt, trust_remote_code=True)
    assert type(restored.model).__name__ == "CustomBertForSequenceClassification"
    restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(batch), expected)

    out = export(str(ckpt), str(tmp_path / "hf"), trust_remote_code=True)
    assert {"configuration_custom.py", "modeling_custom.py"} <= {p.name for p in out.iterdir()}
    hf = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    assert type(hf).__name__ == "CustomBertForSequenceClassification" and hf.ran_custom_code


def test_a_checkpoint_of_a_library_model_carries_no_code(tiny_bert, toy_data, tmp_path):
    FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, tmp_path, "--trainer.max_epochs=1")])
    assert "code" not in torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["ftlit"]


def test_unpacked_code_is_found_beside_the_config_not_in_its_hub_repo(tmp_path):
    # transformers records code loaded from the Hub as ``repo--module.Class``: unpacked, it must point beside.
    auto_map = {"AutoConfig": "org/r--configuration_custom.CustomBertConfig", "AutoTokenizer": ["org/r--t.T", None]}
    unpack(tmp_path, {"model_type": "bert", "auto_map": auto_map}, {}, {"configuration_custom.py": CONFIGURATION})
    written = json.loads((tmp_path / "config.json").read_text())
    local = {"AutoConfig": "configuration_custom.CustomBertConfig", "AutoTokenizer": ["t.T", None]}
    assert written["auto_map"] == local
    assert (tmp_path / "configuration_custom.py").read_text() == CONFIGURATION
