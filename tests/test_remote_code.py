"""``trust_remote_code``: a backbone that ships its own Python code runs it only when the config says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import cli_args
from ftlit.cli import FtlitCLI, main

CONFIGURATION = """
from transformers import BertConfig


class CustomBertConfig(BertConfig):
    model_type = "ftlit-custom-bert"
"""

MODELING = """
from transformers import BertForSequenceClassification

from .configuration_custom import CustomBertConfig


class CustomBertForSequenceClassification(BertForSequenceClassification):
    config_class = CustomBertConfig
    ran_custom_code = True
"""


@pytest.fixture
def custom_code_bert(tiny_bert, tmp_path) -> str:
    """The tiny BERT as a Hub-style repo with custom code: ``auto_map`` points at Python files in the folder."""
    folder = Path(shutil.copytree(tiny_bert, tmp_path / "custom-bert"))
    (folder / "configuration_custom.py").write_text(CONFIGURATION)
    (folder / "modeling_custom.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "ftlit-custom-bert"
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomBertConfig",
        "AutoModelForSequenceClassification": "modeling_custom.CustomBertForSequenceClassification",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


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
