"""A checkpoint is data: it cannot grant itself the right to run code, and its packed file names cannot write
outside the folder they are unpacked into."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import CONFIGURATION, MODELING, cli_args, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI, main
from ftlit.errors import ConfigError
from ftlit.tasks.text import SequenceClassifier

# Importing this module (it is packed as the model's own code) leaves a marker: proof that the code ran.
HOSTILE = 'import os, pathlib\npathlib.Path(os.environ["FTLIT_MARKER"]).write_text("ran")\n' + MODELING


@pytest.fixture
def hostile_checkpoint(custom_code_bert, toy_data, tmp_path, monkeypatch) -> str:
    """A checkpoint trained with trust_remote_code=true whose packed model code writes a marker when imported."""
    monkeypatch.setenv("FTLIT_MARKER", str(tmp_path / "marker"))
    root = tmp_path / "run"
    args = cli_args(custom_code_bert, toy_data, root, "--model.trust_remote_code=true", "--trainer.max_steps=1")
    FtlitCLI(args=["fit", *args])
    path = root / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["trust_remote_code"] is True and "auto_map" in ckpt["ftlit"]["config"]
    ckpt["ftlit"]["code"] = {"configuration_custom.py": CONFIGURATION, "modeling_custom.py": HOSTILE}
    torch.save(ckpt, path)
    (tmp_path / "marker").unlink(missing_ok=True)
    return str(path)


def test_a_checkpoint_cannot_trust_its_own_code(hostile_checkpoint, tmp_path, capsys):
    with pytest.raises(ConfigError, match="trust_remote_code"):
        SequenceClassifier.load_from_checkpoint(hostile_checkpoint)
    with pytest.raises(SystemExit) as exc:
        main(["export", "--ckpt_path", hostile_checkpoint, "--out", str(tmp_path / "hf")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftlit: error: trust_remote_code: ") and "--trust_remote_code" in err[0]
    assert not (tmp_path / "marker").exists(), "the checkpoint's code ran"
    assert not (tmp_path / "hf").exists()
    # The user's own consent, given at load time, is what runs it.
    SequenceClassifier.load_from_checkpoint(hostile_checkpoint, trust_remote_code=True)
    assert (tmp_path / "marker").read_text() == "ran"


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> Path:
    """A plain checkpoint of the tiny model, trained once for this module's tests."""
    folder = tmp_path_factory.mktemp("trained")
    data = {"train_file": str(write_jsonl(folder / "train.jsonl", toy_rows(16, 0)))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLIT_CACHE", str(folder / "cache"))
        FtlitCLI(args=["fit", *cli_args(tiny_bert, data, folder / "run", "--trainer.max_steps=1")])
    return folder / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("kind", ["tokenizer", "code"])
@pytest.mark.parametrize("name", ["../../escaped.txt", "ABSOLUTE", "sub/escaped.txt", "..", ""])
def test_packed_file_names_stay_inside_the_folder(trained, tmp_path, capsys, kind, name):
    ckpt = torch.load(trained, weights_only=True)
    target = tmp_path / "absolute-escape.txt"
    name = str(target) if name == "ABSOLUTE" else name
    ckpt["ftlit"].setdefault(kind, {})[name] = "written from a checkpoint"
    path = tmp_path / "ckpts" / "hostile.ckpt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    before = set(tmp_path.rglob("*"))

    out = tmp_path / "deep" / "er" / "hf"
    with pytest.raises(SystemExit) as exc:
        main(["export", "--ckpt_path", str(path), "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a plain file name" in err[0], err
    assert set(tmp_path.rglob("*")) == before, "export wrote files"
    assert not target.exists() and not (tmp_path / "escaped.txt").exists()
    with pytest.raises(ConfigError, match="not a plain file name"):
        SequenceClassifier.load_from_checkpoint(path)


def test_a_checkpoint_s_class_path_never_imports_a_module(tiny_bert, toy_data, tmp_path, monkeypatch, capsys):
    # A module on the path whose import leaves a marker: a checkpoint naming a class in it must not import it.
    monkeypatch.setenv("FTLIT_MARKER", str(tmp_path / "marker"))
    (tmp_path / "lure.py").write_text(
        HOSTILE.split("\n", 2)[0] + "\n" + HOSTILE.split("\n", 2)[1] + "\nclass Task: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    root = tmp_path / "run"
    FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, root, "--trainer.max_steps=1")])
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = "lure.Task"
    lured = tmp_path / "lured.ckpt"
    torch.save(ckpt, lured)
    from ftlit.core.module import FineTuneModule

    with pytest.raises(ConfigError, match="names no ftlit task model"):
        FineTuneModule.load_from_checkpoint(lured)
    with pytest.raises(SystemExit):
        main(["export", "--ckpt_path", str(lured), "--out", str(tmp_path / "hf")])
    assert "holds a lure.Task, which cannot be imported here" in capsys.readouterr().err
    assert not (tmp_path / "marker").exists(), "the checkpoint's class path imported a module"
    # The CLI compares the checkpoint's class with the config's without importing it either.
    with pytest.raises(SystemExit):
        main(["test", *cli_args(tiny_bert, toy_data, root), f"--ckpt_path={lured}"])
    assert not (tmp_path / "marker").exists()
    # The checkpoint's own class, named by ftlit's path, still loads through the base class.
    assert type(FineTuneModule.load_from_checkpoint(root / "checkpoints" / "last.ckpt")) is SequenceClassifier
