"""``ftlit heads``: Michel et al.'s head importance on a fine-tuned model, and the config that removes the least
important heads from it and trains on."""

from __future__ import annotations

import copy
import json
import math
from importlib.util import find_spec

import pytest
import torch
import yaml
from helpers.ner import fit_args as ner_args
from helpers.ner import toy_ner_rows, write_conll
from helpers.qa import fit_args as qa_args
from helpers.qa import toy_qa_rows, write_squad

from conftest import cli_args, command_error, make_tiny_bert, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.commands.heads import FIT, PNG, SCORES, data_module, draw_importance, main, relocated
from ftlit.commands.tune import base_config
from ftlit.core import strategies
from ftlit.core.anatomy import anatomy
from ftlit.core.head_importance import attention_outputs, gated, head_importance, least_important
from ftlit.core.module import FineTuneModule

QUERY = "model.bert.encoder.layer.{}.attention.self.query.weight"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A classifier with 2 layers of 4 heads, fine-tuned briefly: its checkpoint, saved config and data."""
    tmp = tmp_path_factory.mktemp("heads")
    wide = make_tiny_bert(tmp / "bert-4-heads", heads=4)
    data = {
        "train_file": str(write_jsonl(tmp / "train.jsonl", toy_rows(96, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_rows(40, 1))),
        "cache_dir": str(tmp / "cache"),  # the autouse cache fixture is per test; this fixture is per module
    }
    fast = ["--model.scheduler=constant", "--model.learning_rate=1e-2"]
    FtlitCLI(args=["fit", *cli_args(str(wide), data, tmp / "run", *fast)])
    return {
        "backbone": str(wide),
        "ckpt": tmp / "run" / "checkpoints" / "last.ckpt",
        "config": tmp / "run" / "csv" / "version_0" / "config.yaml",
        "tmp": tmp,
    }


def validation_batches(run: dict) -> list[dict]:
    data = data_module(base_config([str(run["config"])])["data"], run["backbone"], False)
    data.setup("validate")
    return list(data.val_dataloader())


def test_a_gate_of_zero_is_the_head_removed_and_the_score_is_the_loss_gradient(run):
    module = FineTuneModule.load_from_checkpoint(run["ckpt"]).double().eval()
    batch = validation_batches(run)[0]
    outputs = attention_outputs(module)
    with torch.no_grad():
        plain = module(batch)
        ones = [torch.ones(4, dtype=torch.float64) for _ in outputs]
        with gated(outputs, ones):
            assert torch.equal(module(batch), plain)
        # A gate of 0 on head 2 of layer 1 is that head removed by model.prune_heads.
        gates = copy.deepcopy(ones)
        gates[1][2] = 0
        with gated(outputs, gates):
            closed = module(batch)
        pruned = copy.deepcopy(module)
        strategies.prune_heads(pruned.model, anatomy(pruned.model), {1: [2]})
        torch.testing.assert_close(closed, pruned(batch), rtol=0, atol=1e-10)
        assert not torch.allclose(closed, plain)

    # The score is |dL/dg| at g = 1: a central difference of the loss agrees.
    state = {k: v.clone() for k, v in module.state_dict().items()}
    importance, n = head_importance(module, [batch], normalize=False)
    assert n == 1 and [len(layer) for layer in importance] == [4, 4]

    def loss_at(layer: int, head: int, value: float) -> float:
        gates = [torch.ones(4, dtype=torch.float64) for _ in outputs]
        gates[layer][head] = value
        with torch.no_grad(), gated(outputs, gates):
            return module.training_loss(batch)[0].item()

    eps = 1e-2  # the task's loss is computed in float32: a wider step keeps its rounding out of the slope
    for layer in (0, 1):
        for head in range(4):
            slope = (loss_at(layer, head, 1 + eps) - loss_at(layer, head, 1 - eps)) / (2 * eps)
            assert importance[layer][head] == pytest.approx(abs(slope), rel=1e-2), (layer, head)
    # The weights, their trainability and their gradients are as they were.
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in state.items())
    assert all(p.requires_grad and p.grad is None for p in module.parameters())


def test_least_important_takes_the_lowest_scores_and_leaves_every_layer_a_head():
    scores = [[0.1, 0.9, 0.05, 0.8], [0.01, 0.02, 0.03, 0.04]]
    # Layer 1's fourth head would be its last: the next lowest, layer 0's 0.05, goes instead.
    assert least_important(scores, 0.5) == {0: [2], 1: [0, 1, 2]}
    assert least_important(scores, 0.25) == {1: [0, 1]}
    assert least_important(scores, 0.99) == {0: [0, 2, 3], 1: [0, 1, 2]}  # 8 - 2 at most


def test_heads_writes_scores_and_a_fit_config_that_prunes_the_fine_tuned_model(run, tmp_path, capsys):
    out = tmp_path / "heads"
    main(["--config", str(run["config"]), "--ckpt_path", str(run["ckpt"]), "--remove", "0.25", "--out", str(out)])
    assert f"ftlit fit --config {out / FIT}" in capsys.readouterr().out
    report = json.loads((out / SCORES).read_text())
    assert report["heads"] == 8 and report["removed"] == 2 and report["batches"] == math.ceil(40 / 8)
    assert report["split"] == "validation" and report["normalized"] is True
    chosen = least_important(report["importance"], 0.25)
    assert report["prune_heads"] == {str(k): v for k, v in chosen.items()}
    assert all(sum(s * s for s in layer) == pytest.approx(1) for layer in report["importance"])

    if find_spec("matplotlib") is not None:  # the plots extra: the scores as a heat map
        assert (out / PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert draw_importance(report["importance"], chosen) != draw_importance(report["importance"], {0: [0]})
    config = yaml.safe_load((out / FIT).read_text())
    assert config["model"]["init_args"]["prune_heads"] == chosen
    assert config["model"]["init_args"]["init_from"] == str(run["ckpt"].resolve())
    assert config["trainer"]["default_root_dir"] == str(out.resolve() / "run")
    assert config["checkpoint"]["dirpath"] is None and config["ckpt_path"] is None
    assert config["trainer"]["logger"] is None  # as the run gave it: the default loggers, in the new folder

    # The config runs as written: the fine-tuned model loses exactly those heads, and trains on in its own folder.
    FtlitCLI(args=["fit", "--config", str(out / FIT), "--trainer.max_epochs=1"])
    pruned = torch.load(out / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for layer in (0, 1):
        assert pruned[QUERY.format(layer)].shape == ((4 - len(chosen.get(layer, []))) * 8, 32)
    assert (out / "run" / "csv").is_dir() and not (run["ckpt"].parent / "epoch=0-step=12.ckpt").exists()

    # A second scoring into the same folder needs --overwrite, and never deletes the pruned run inside it.
    capsys.readouterr()
    args = ["--config", str(run["config"]), "--ckpt_path", str(run["ckpt"]), "--out", str(out)]
    assert "pass --overwrite" in command_error(main, args, capsys)
    assert "holds the run its fit.yaml trained" in command_error(main, [*args, "--overwrite"], capsys)


def test_a_config_saved_by_an_older_ftlit_moves_to_the_new_folder_whole(tmp_path):
    """Before config.yaml kept them as given, it held the checkpoint folder and the loggers' folder of its run."""
    old = tmp_path / "old"
    config = {
        "trainer": {
            "default_root_dir": str(old),
            "logger": [
                {"class_path": "CSVLogger", "init_args": {"save_dir": str(old)}},
                {"class_path": "MLFlowLogger", "init_args": {"save_dir": "/elsewhere"}},
            ],
        },
        "checkpoint": {"dirpath": str(old / "checkpoints")},
        "ckpt_path": "last",
        "overwrite": True,
    }
    moved = relocated(config, tmp_path / "new")
    assert moved["trainer"]["default_root_dir"] == str(tmp_path / "new") and moved["checkpoint"]["dirpath"] is None
    assert [logger["init_args"]["save_dir"] for logger in moved["trainer"]["logger"]] == [
        str(tmp_path / "new"),
        "/elsewhere",
    ]
    assert (
        moved["ckpt_path"] is None
        and moved["overwrite"] is False
        and config["checkpoint"]["dirpath"] == str(old / "checkpoints")
    )  # a copy


def test_every_option_changes_what_is_scored(run, tmp_path, capsys):
    base = ["--config", str(run["config"]), "--ckpt_path", str(run["ckpt"])]

    def scored(name: str, *extra: str) -> dict:
        main([*base, "--out", str(tmp_path / name), *extra])
        return json.loads((tmp_path / name / SCORES).read_text())

    full = scored("full")
    two = scored("two", "--max_batches", "2")
    train = scored("train", "--split", "train")
    raw = scored("raw", "--normalize", "false")
    half = scored("half", "--remove", "0.5")
    assert two["batches"] == 2 and two["importance"] != full["importance"]
    assert train["batches"] == math.ceil(96 / 8) and train["importance"] != full["importance"]
    assert raw["normalized"] is False
    norms = [math.sqrt(sum(s * s for s in layer)) for layer in raw["importance"]]
    normalized = [s / n for layer, n in zip(raw["importance"], norms, strict=True) for s in layer]
    assert normalized == pytest.approx([s for layer in full["importance"] for s in layer])
    assert norms != pytest.approx([1.0, 1.0])
    assert half["removed"] == 4 and full["removed"] == 2


def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys):
    base = ["--config", str(run["config"]), "--ckpt_path", str(run["ckpt"]), "--out", str(tmp_path / "h")]
    cases = {
        "--remove=1.5": "ftlit: error: remove: must be a share of the heads between 0 and 1 (e.g. 0.25), got 1.5",
        "--remove=0": "ftlit: error: remove: must be a share of the heads between 0 and 1 (e.g. 0.25), got 0.0",
        "--remove=0.01": "ftlit: error: remove: 0.01 of 8 heads is none: raise it",
        "--split=dev": "ftlit: error: split: 'dev' is not a split: use validation, train or test",
        "--max_batches=0": "ftlit: error: max_batches: must be at least 1 (or unset for the whole split), got 0",
        "--split=test": "ftlit: error: data.test_file: no test split: give one to run this stage",
    }
    for flag, expected in cases.items():
        assert command_error(main, [*base, flag], capsys) == expected
    other = yaml.safe_load(run["config"].read_text())
    other["data"]["init_args"]["labels"] = ["pos", "neg"]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    line = command_error(main, [*base[2:], "--config", str(tmp_path / "other.yaml")], capsys)
    assert line == (
        "ftlit: error: config: the data's labels ['pos', 'neg'] are not the checkpoint's ['neg', 'pos']: give the "
        "config of the run that wrote it"
    )
    # Labels found in another train file: refused before it is tokenized.
    for split, rows in (("train", toy_rows(96, 0)), ("validation", toy_rows(40, 1))):
        renamed = [{**row, "label": {"pos": "good", "neg": "bad"}[row["label"]]} for row in rows]
        other["data"]["init_args"][f"{split}_file"] = str(write_jsonl(tmp_path / f"{split}.jsonl", renamed))
    other["data"]["init_args"]["labels"] = None
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(SystemExit) as exc:
        main([*base[2:], "--config", str(tmp_path / "other.yaml")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.strip().splitlines()[-1] == (
        "ftlit: error: config: the data's labels ['bad', 'good'] are not the checkpoint's ['neg', 'pos']: give the "
        "config of the run that wrote it"
    )
    assert "Tokenizing" not in err  # refused before the data is tokenized
    missing = ["--config", str(run["config"]), "--ckpt_path", str(tmp_path / "nope.ckpt")]
    assert "ckpt_path: " in command_error(main, missing, capsys)
    assert not (tmp_path / "h").exists()


def test_a_model_with_heads_removed_already_is_refused(run, tmp_path, capsys):
    root = tmp_path / "pruned"
    data = {"train_file": str(run["tmp"] / "train.jsonl"), "validation_file": str(run["tmp"] / "validation.jsonl")}
    FtlitCLI(
        args=["fit", *cli_args(run["backbone"], data, root, "--trainer.max_epochs=1", "--model.prune_heads={0: [1]}")]
    )
    capsys.readouterr()
    line = command_error(
        main,
        [
            "--config",
            str(root / "csv" / "version_0" / "config.yaml"),
            "--ckpt_path",
            str(root / "checkpoints" / "last.ckpt"),
            "--out",
            str(tmp_path / "h"),
        ],
        capsys,
    )
    assert line == (
        "ftlit: error: ckpt_path: this model has attention heads removed already (model.prune_heads): score the "
        "checkpoint it was pruned from"
    )


def test_a_lora_run_is_scored_merged_and_its_fit_config_trains_new_adapters_on_the_pruned_model(run, tmp_path, capsys):
    root = tmp_path / "lora"
    data = {"train_file": str(run["tmp"] / "train.jsonl"), "validation_file": str(run["tmp"] / "validation.jsonl")}
    FtlitCLI(args=["fit", *cli_args(run["backbone"], data, root, "--trainer.max_epochs=1", "--model.lora_rank=4")])
    out = tmp_path / "heads"
    config = str(root / "csv" / "version_0" / "config.yaml")
    main(["--config", config, "--ckpt_path", str(root / "checkpoints" / "last.ckpt"), "--out", str(out)])
    chosen = json.loads((out / SCORES).read_text())["prune_heads"]
    FtlitCLI(args=["fit", "--config", str(out / FIT), "--trainer.max_epochs=1"])
    state = torch.load(out / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    query = [k for k in state if ".layer.0.attention.self.query." in k]
    assert any("lora_A" in k for k in query)
    base = next(
        v for k, v in state.items() if ".layer.0.attention.self.query." in k and k.endswith("base_layer.weight")
    )
    assert base.shape == ((4 - len(chosen.get("0", []))) * 8, 32)


@pytest.mark.parametrize("task", ["ner", "qa"])
def test_token_and_span_tasks_are_scored_by_their_own_loss(run, task, tmp_path):
    """NER's token loss and QA's span loss reach every head's gate (non-zero scores); the config trains."""
    if task == "ner":
        rows = {"train": toy_ner_rows(48, 0), "validation": toy_ner_rows(16, 1)}
        data = {f"{s}_file": str(write_conll(tmp_path / f"{s}.conll", r)) for s, r in rows.items()}
        args = ner_args(run["backbone"], tmp_path / "run", data, "--trainer.max_epochs=1")
    else:
        rows = {"train": toy_qa_rows(48, 0), "validation": toy_qa_rows(16, 1)}
        data = {f"{s}_file": str(write_squad(tmp_path / f"{s}.json", r)) for s, r in rows.items()}
        args = qa_args(run["backbone"], tmp_path / "run", data, "--trainer.max_epochs=1")
    FtlitCLI(args=["fit", *args])
    out = tmp_path / "heads"
    config = str(tmp_path / "run" / "csv" / "version_0" / "config.yaml")
    main(["--config", config, "--ckpt_path", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--out", str(out)])
    report = json.loads((out / SCORES).read_text())
    assert report["removed"] == 2 and all(score > 0 for layer in report["importance"] for score in layer)


def test_help_documents_every_argument(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--config",
        "--ckpt_path",
        "--remove",
        "--split",
        "--max_batches",
        "--normalize",
        "--out",
        "--overwrite",
    ):
        assert flag in text, flag
    assert "Michel et al." in text
