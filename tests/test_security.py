"""A checkpoint is data: it cannot grant itself the right to run code, its packed file names cannot write
outside the folder they are unpacked into, its packed tokenizer holds only tokenizer files, and a damaged one is
one line naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import pytest
import torch

from conftest import CONFIGURATION, MODELING, cli_args, toy_rows, write_jsonl
from ftlit import backbone
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


# --- the packed tokenizer ---------------------------------------------------------------------------------------

MARK = 'import os, pathlib\npathlib.Path(os.environ["FTLIT_MARKER"]).write_text("ran")\n'


def tampered(trained: Path, folder: Path, tokenizer: dict | None = None, config: dict | None = None) -> Path:
    """``trained`` with files added to its packed tokenizer and keys to its packed config, saved under ``folder``."""
    ckpt = torch.load(trained, weights_only=True)
    ckpt["ftlit"]["tokenizer"].update(tokenizer or {})
    ckpt["ftlit"]["config"].update(config or {})
    path = folder / "ckpts" / "tampered.ckpt"
    path.parent.mkdir(exist_ok=True)
    torch.save(ckpt, path)
    return path


def a_model_in_the_tokenizer(trained: Path) -> dict[str, str]:
    """Tokenizer files that make a model with its own code: a config.json whose auto_map names the two Python
    files beside it, each of which leaves a marker when imported."""
    config = torch.load(trained, weights_only=True)["ftlit"]["config"]
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.CustomBertConfig",
        "AutoModelForSequenceClassification": "modeling_evil.CustomBertForSequenceClassification",
    }
    return {
        "config.json": json.dumps(config),
        "configuration_evil.py": MARK + CONFIGURATION,
        "modeling_evil.py": MARK + MODELING.replace(".configuration_custom", ".configuration_evil"),
    }


def route(name: str, path: Path, trained: Path, tiny_bert: str, out: Path) -> list[str]:
    """The command line of each command that reads a checkpoint's packed backbone, on ``path``."""
    train = {"train_file": str(trained.parents[2] / "train.jsonl")}
    if name == "export":
        return ["export", "--ckpt_path", str(path), "--out", str(out)]
    if name == "predict":
        rows = write_jsonl(path.parent / "predict.jsonl", [{"text": "a good movie"}])
        return ["predict", *cli_args(tiny_bert, {**train, "predict_file": str(rows)}, out), f"--ckpt_path={path}"]
    if name == "serve":
        return ["serve", "--model", str(path), "--port", "0"]
    if name == "explain":
        return ["explain", "--ckpt_path", str(path), "--text", "a good movie", "--n_steps=2", "--out", str(out)]
    if name == "heads":
        fit = trained.parents[1] / "csv" / "version_0" / "config.yaml"
        return ["heads", "--config", str(fit), "--ckpt_path", str(path), "--out", str(out)]
    assert name == "init_from"  # a pruned or distilled model's next fit starts from the checkpoint
    return ["fit", *cli_args(tiny_bert, train, out, "--trainer.max_steps=1", f"--model.init_from={path}")]


ROUTES = ["export", "predict", "serve", "explain", "heads", "init_from"]
FIELDS = {"serve": "model", "init_from": "model.init_from"}


def refused(argv: list[str], tmp_path: Path, monkeypatch, capsys, run: str | None = None) -> str:
    """Run ``ftlit <argv>``, which must refuse its checkpoint: exit 2, one line, no traceback file, nothing written
    anywhere under ``tmp_path`` (the system temp folder included).

    A fit (``run``: its folder) reads its data before the model, whose init_from is refused: its progress lines
    come first, and it writes only its run folder and the data cache.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    before = set(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    # (Lightning warns that LightningCLI got args while pytest has its own sys.argv: not a line a user sees.)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "LightningCLI's args" not in line]
    errors = [line for line in err if line.startswith("ftlit: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and (run or len(err) == 1), err[-20:]
    assert "internal error" not in errors[0] and not any("Traceback" in line for line in err)
    written = set(tmp_path.rglob("*")) - before
    if run is not None:
        written = {p for p in written if not any(p.is_relative_to(tmp_path / f) for f in (run, "cache"))}
    assert not written, f"the command wrote {sorted(written)}"
    return errors[0]


@pytest.mark.parametrize("name", ROUTES)
def test_a_packed_tokenizer_cannot_carry_a_model_or_its_code(
    trained, tiny_bert, tmp_path, monkeypatch, capsys, one_torch_thread, name
):
    monkeypatch.setenv("FTLIT_MARKER", str(tmp_path / "marker"))
    path = tampered(trained, tmp_path, tokenizer=a_model_in_the_tokenizer(trained))
    fit = "out" if name == "init_from" else None
    line = refused(route(name, path, trained, tiny_bert, tmp_path / "out"), tmp_path, monkeypatch, capsys, fit)
    assert line.startswith(f"ftlit: error: {FIELDS.get(name, 'ckpt_path')}: ")
    assert f"the packed tokenizer file 'config.json' in '{path}' is not a tokenizer file" in line, line
    assert not (tmp_path / "marker").exists(), "the tokenizer's code ran"
    assert fit or not (tmp_path / "out").exists()


def test_trust_remote_code_does_not_let_a_tokenizer_carry_code(trained, tmp_path, monkeypatch, capsys):
    # The user's consent is for the checkpoint's model code, not for code dressed up as tokenizer files.
    monkeypatch.setenv("FTLIT_MARKER", str(tmp_path / "marker"))
    path = tampered(trained, tmp_path, tokenizer=a_model_in_the_tokenizer(trained))
    argv = ["export", "--ckpt_path", str(path), "--out", str(tmp_path / "hf"), "--trust_remote_code"]
    assert "'config.json'" in refused(argv, tmp_path, monkeypatch, capsys)
    assert not (tmp_path / "marker").exists(), "the tokenizer's code ran"


@pytest.mark.parametrize(
    "name", ["modeling_evil.py", "model.safetensors", "adapter_config.json", "generation_config.json", "ftlit.json"]
)
def test_a_packed_tokenizer_holds_only_tokenizer_files(trained, tmp_path, monkeypatch, capsys, name):
    path = tampered(trained, tmp_path, tokenizer={name: "{}"})
    argv = ["export", "--ckpt_path", str(path), "--out", str(tmp_path / "hf")]
    assert f"the packed tokenizer file {name!r} in '{path}' is not a tokenizer file" in refused(
        argv, tmp_path, monkeypatch, capsys
    )
    with pytest.raises(ConfigError, match="is not a tokenizer file"):
        SequenceClassifier.load_from_checkpoint(path)


def test_what_tokenizers_save_is_a_tokenizer_file(tiny_bert):
    saved = backbone.pack_tokenizer(backbone.load_tokenizer(tiny_bert))
    kept = ["vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja"]
    assert all(backbone.is_tokenizer_file(n) for n in [*saved, *kept, "special_tokens_map.json", "source.spm"])
    other = ["config.json", "tokenization_x.py", "x.py", "model.safetensors", ".model", "../x.model", "a b.model"]
    assert not any(backbone.is_tokenizer_file(n) for n in other)


def test_a_tokenizer_that_writes_code_is_not_packed(tmp_path):
    class Custom:  # a tokenizer with its own Python code saves that code beside its files
        def save_pretrained(self, folder: str) -> None:
            Path(folder, "tokenizer.json").write_text("{}")
            Path(folder, "tokenization_custom.py").write_text("class CustomTokenizer: ...\n")

    with pytest.raises(ConfigError, match=r"^model\.backbone: its tokenizer writes tokenization_custom\.py, which"):
        backbone.pack_tokenizer(Custom())


def test_a_tokenizer_config_naming_code_needs_trust(trained, tmp_path, monkeypatch, capsys):
    # auto_map in tokenizer_config.json is how transformers finds a tokenizer's own code (on the Hub, if not beside).
    tokenizer = torch.load(trained, weights_only=True)["ftlit"]["tokenizer"]
    config = json.loads(tokenizer["tokenizer_config.json"])
    config["auto_map"] = {"AutoTokenizer": ["someone/repo--tokenization_evil.EvilTokenizer", None]}
    path = tampered(trained, tmp_path, tokenizer={"tokenizer_config.json": json.dumps(config)})
    argv = ["export", "--ckpt_path", str(path), "--out", str(tmp_path / "hf")]
    assert refused(argv, tmp_path, monkeypatch, capsys).startswith("ftlit: error: trust_remote_code: ")


def test_unpacked_files_never_overwrite_one_another(trained, tmp_path):
    saved = torch.load(trained, weights_only=True)["ftlit"]
    folder = tmp_path / "hf"
    backbone.unpack(folder, saved["config"], saved["tokenizer"])
    assert json.loads((folder / "config.json").read_text()) == json.loads(json.dumps(saved["config"]))
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", *saved["tokenizer"]])
    with pytest.raises(FileExistsError):  # each file is created, never replaced
        backbone.unpack(folder, saved["config"], saved["tokenizer"])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"tokenizer": {"tokenizer.json": '{"version": "1.0", "model": 3'}}, "the packed tokenizer file "
         "'tokenizer.json' in '{path}' is not valid JSON (Expecting ',' delimiter: line 1 column 30 (char 29))"),
        ({"tokenizer": {"tokenizer.json": '{"version": "1.0"}'}}, "the packed tokenizer in '{path}' does not load"),
        ({"tokenizer": {"tokenizer_config.json": "[1, 2]"}}, "the packed tokenizer file 'tokenizer_config.json' "
         "in '{path}' is not a JSON object"),
        ({"config": {"model_type": "no-such-model"}}, "the packed model config in '{path}' has model_type "
         "'no-such-model', which transformers"),
        ({"config": {"hidden_size": 33}}, "the packed model config in '{path}' does not load (ValueError: "),
    ],
)  # fmt: skip
def test_a_damaged_backbone_is_one_line_naming_the_checkpoint(trained, tmp_path, monkeypatch, capsys, change, problem):
    path = tampered(trained, tmp_path, **change)
    line = refused(["export", "--ckpt_path", str(path), "--out", str(tmp_path / "hf")], tmp_path, monkeypatch, capsys)
    assert line.startswith("ftlit: error: ckpt_path: " + problem.format(path=path)), line
    assert not list(Path(tempfile.gettempdir()).glob("ftlit-error-*"))


# --- caches -----------------------------------------------------------------------------------------------------


def predict_args(trained: Path, tiny_bert: str, folder: Path) -> list[str]:
    rows = write_jsonl(folder / "predict.jsonl", [{"text": "a good movie"}, {"text": "an awful plot"}])
    data = {"train_file": str(trained.parents[2] / "train.jsonl"), "predict_file": str(rows)}
    return ["predict", *cli_args(tiny_bert, data, folder / "run"), f"--ckpt_path={trained}"]


def test_predict_keeps_datasets_cache_under_ftlit_cache(trained, tiny_bert, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    main(predict_args(trained, tiny_bert, tmp_path))
    assert (tmp_path / "run" / "predictions.jsonl").is_file()
    assert not (tmp_path / "hf-datasets").exists(), "datasets wrote its cache outside FTLIT_CACHE"
    assert list((tmp_path / "cache" / "datasets").iterdir())  # the conftest's FTLIT_CACHE


def test_a_run_writes_no_cache_in_the_home_folder(trained, tiny_bert, tmp_path):
    # A fresh process, as a user runs it: with data.cache_dir set, nothing lands in HOME or HF_HOME.
    home, hf_home = tmp_path / "home", tmp_path / "hf-home"
    home.mkdir(), hf_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTLIT_", "HF_DATASETS_", "XDG_"))}
    # matplotlib (imported by torchmetrics, with Lightning) keeps its font list in its own MPLCONFIGDIR.
    env.update(HOME=str(home), HF_HOME=str(hf_home), MPLCONFIGDIR=str(tmp_path / "mpl"), OMP_NUM_THREADS="1")
    argv = [*predict_args(trained, tiny_bert, tmp_path), f"--data.cache_dir={tmp_path / 'cache-here'}"]
    done = subprocess.run([sys.executable, "-m", "ftlit", *argv], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "predictions.jsonl").is_file()
    assert list((tmp_path / "cache-here" / "datasets").iterdir())
    assert not list(home.rglob("*")) and not list(hf_home.rglob("*")), [*home.rglob("*"), *hf_home.rglob("*")]
