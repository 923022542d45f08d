"""The shipped configs: every YAML under configs/ parses with ftlit's parser without building anything, pairs a model
with its task's data module, keeps every key it sets, and monitors metrics that its model really logs."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import pytest
import yaml
from helpers.ner import toy_ner_rows
from helpers.qa import toy_qa_rows
from helpers.text import scored_rows, tagged_rows

from conftest import REPO, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI, check_task_pair, main
from ftlit.core.datamodule import TaskDataModule
from ftlit.core.module import FineTuneModule
from ftlit.tasks.mlm import MaskedLMDataModule
from ftlit.tasks.ner import TokenClassificationDataModule
from ftlit.tasks.qa import QuestionAnsweringDataModule
from ftlit.tasks.text import ClassificationDataModule, MultiLabelDataModule, RegressionDataModule

CONFIGS = REPO / "configs"
# The full configs, each also with the DDP overlay ("layered over any config"); the strategies are written for the
# quickstart and layered over it.
BASES = ("adapt/mlm.yaml", "bert.yaml", "multilabel.yaml", "ner.yaml", "qa.yaml", "quickstart.yaml", "stsb.yaml")
BASES += ("chinese/classification.yaml", "chinese/ner.yaml")
STRATEGIES = tuple(sorted(f"strategies/{p.name}" for p in (CONFIGS / "strategies").glob("*.yaml")))
OVERLAYS = (*STRATEGIES, "adapt/finetune.yaml")
# Search files of `ftlit tune`, each written for the quickstart.
SEARCHES = tuple(sorted(f"search/{p.name}" for p in (CONFIGS / "search").glob("*.yaml")))
COMBOS = [(b,) for b in BASES] + [(b, "ddp.yaml") for b in BASES] + [("quickstart.yaml", s) for s in OVERLAYS]
ERRORS = ("loss", "mse", "perplexity")  # metrics where lower is better; every other monitored score is maximised


def load(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def refused(init: Callable) -> Callable:
    """``init`` that fails when called; with its signature, docstring and source, which the parser reads."""

    @functools.wraps(init)
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} built while only parsing a config")

    return refuse


def print_config(*names: str) -> dict[str, Any]:
    """`ftlit fit --config A --config B --print_config`: the complete config, parsed, with nothing instantiated."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        # No model, data module or Trainer may be built (the model would fetch bert-base-uncased from the Hub).
        for cls in (FineTuneModule, TaskDataModule, pl.Trainer):
            mp.setattr(cls, "__init__", refused(cls.__init__))
        with pytest.raises(SystemExit) as exc:
            main(["fit", *(f"--config={CONFIGS / name}" for name in names), "--print_config"])
    assert exc.value.code == 0, f"{names} does not parse: {err.getvalue().strip()}"
    return yaml.safe_load(out.getvalue())


@pytest.fixture(scope="module")
def parsed() -> dict[tuple[str, ...], dict[str, Any]]:
    return {combo: print_config(*combo) for combo in COMBOS}


def contains(full: Any, part: Any, where: str = "") -> list[str]:
    """Where ``part`` (a YAML file's content) differs from ``full`` (the printed config, defaults filled in)."""
    if isinstance(part, dict) and isinstance(full, dict):
        return [d for k, v in part.items() for d in contains(full.get(k, "<missing>"), v, f"{where}.{k}")]
    if isinstance(part, list) and isinstance(full, list) and len(part) == len(full):
        return [d for i, (f, p) in enumerate(zip(full, part, strict=True)) for d in contains(f, p, f"{where}[{i}]")]
    return [] if full == part else [f"{where.lstrip('.')}: {part!r} in the file, {full!r} parsed"]


def monitors(config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, metric, mode) of the checkpoint and of every callback that monitors a metric (EarlyStopping)."""
    found = [("checkpoint", config["checkpoint"]["monitor"], config["checkpoint"]["mode"])]
    for i, callback in enumerate(config["trainer"]["callbacks"] or []):
        args = callback.get("init_args") or {}
        if "monitor" in args:
            found.append((f"trainer.callbacks[{i}] ({callback['class_path']})", args["monitor"], args["mode"]))
    return found


def test_every_config_file_is_tested():
    on_disk = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")}
    assert on_disk == {name for combo in COMBOS for name in combo} | set(SEARCHES)


@pytest.mark.parametrize("name", SEARCHES)
def test_search_file_names_keys_of_the_quickstart_config(name):
    from ftlit.commands.tune import base_config
    from ftlit.search.space import config_keys, load_search

    config = base_config([str(CONFIGS / "quickstart.yaml")])
    search = load_search(CONFIGS / name, set(config_keys(config)))
    assert search.params and all(p.key.startswith(("model.", "data.", "trainer.")) for p in search.params)
    assert search.metric in (None, config["checkpoint"]["monitor"])


@pytest.mark.parametrize("combo", COMBOS, ids="+".join)
def test_config_parses_to_a_matching_task_pair_and_keeps_its_keys(parsed, combo):
    config = parsed[combo]
    model, data = config["model"]["class_path"], config["data"]["class_path"]
    model_class, data_class = load(model), load(data)
    assert issubclass(model_class, FineTuneModule) and issubclass(data_class, TaskDataModule)
    assert issubclass(data_class, model_class.data_class), f"{model} trains on {model_class.data_class}"
    check_task_pair(model, data)  # what `ftlit` checks before it builds anything
    # Every key the (last) file sets arrives as written: none dropped, renamed or overridden by a link.
    assert not contains(config, yaml.safe_load((CONFIGS / combo[-1]).read_text()))


# --- monitored metrics ------------------------------------------------------------------------------------------
# Each config's own model and data module (and every model option it sets) validate a tiny model on a few toy rows
# written with the config's column names: only the backbone, the data source and the hardware are replaced. What
# that run logs is what ModelCheckpoint and EarlyStopping would look up.

# The same rows for both splits (every label is in train); no test or predict split.
TOY = {"train_file": "train.jsonl", "validation_file": "train.jsonl", "test_file": None, "predict_file": None}


def toy_data(data_class: type, args: dict[str, Any]) -> tuple[list[dict], list[str]]:
    """Toy rows in the config's columns, and the data options a tiny model needs, for the config's data module."""
    # A window stride the config sets for its long texts is below its max_length, not the toy run's 64.
    stride = ["--data.stride=16"] if args.get("stride") is not None else []
    if issubclass(data_class, TokenClassificationDataModule):
        rows = [{args["tokens_column"]: r["tokens"], args["tags_column"]: r["tags"]} for r in toy_ner_rows(12, 0)]
        return rows, stride
    if issubclass(data_class, QuestionAnsweringDataModule):
        keys = {k: args[f"{k}_column"] for k in ("id", "question", "context", "answers")}
        unanswerable = 0.3 if args["version_2_with_negative"] else 0.0
        rows = [{keys[k]: v for k, v in r.items()} for r in toy_qa_rows(12, 0, unanswerable=unanswerable)]
        return rows, ["--data.max_length=48", "--data.doc_stride=16"]
    if issubclass(data_class, MaskedLMDataModule):
        return [{args["text_column"]: r["text"]} for r in toy_rows(12, 0)], []
    texts: list[dict]
    if issubclass(data_class, RegressionDataModule):
        texts = [{"text": r["text"], "label": r["score"]} for r in scored_rows(12, 0)]
    elif issubclass(data_class, MultiLabelDataModule):
        assert not args["label_columns"], "only a list column of labels is written here"
        texts = [{"text": r["text"], "label": r["topics"]} for r in tagged_rows(12, 0)]
    else:
        assert issubclass(data_class, ClassificationDataModule), data_class
        texts = toy_rows(12, 0)
    pair = args["text_pair_column"]
    rows = [
        {args["text_column"]: r["text"], **({pair: r["text"]} if pair else {}), args["label_column"]: r["label"]}
        for r in texts
    ]
    return rows, stride


@pytest.fixture(scope="module")
def logged_metrics(parsed, tiny_bert, tmp_path_factory) -> dict[str, set[str]]:
    """Per base config: every metric that `ftlit validate` of its (tiny) model logs."""
    logged = {}
    for base in BASES:
        config = parsed[(base,)]
        folder = tmp_path_factory.mktemp(base.removesuffix(".yaml").replace("/", "-"))
        rows, extra = toy_data(load(config["data"]["class_path"]), config["data"]["init_args"])
        write_jsonl(folder / "train.jsonl", rows)
        cli = FtlitCLI(
            args=[
                "validate",
                f"--config={CONFIGS / base}",
                f"--model.backbone={tiny_bert}",
                "--data.dataset=null",
                "--data.dataset_config=null",
                "--data.hub_splits=null",
                *(f"--data.{key}={folder / name if name else 'null'}" for key, name in TOY.items()),
                f"--data.cache_dir={folder / 'cache'}",
                "--data.num_workers=0",
                "--data.pin_memory=false",
                "--data.max_length=64",
                *extra,
                "--trainer.accelerator=cpu",
                "--trainer.devices=1",
                "--trainer.precision=32-true",
                f"--trainer.default_root_dir={folder}",
                "--trainer.logger=false",
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
            ]
        )
        logged[base] = set(cli.trainer.callback_metrics)
    return logged


@pytest.mark.parametrize("combo", COMBOS, ids="+".join)
def test_monitored_metrics_are_logged_by_the_model(parsed, logged_metrics, combo):
    config = parsed[combo]
    assert config["checkpoint"]["monitor"], "no checkpoint.monitor: `--ckpt_path best` would have nothing to read"
    base = parsed[combo[:1]]
    assert [config[k]["class_path"] for k in ("model", "data")] == [base[k]["class_path"] for k in ("model", "data")]
    logged = logged_metrics[combo[0]]  # the overlay keeps the base config's model and data module (just checked)
    assert {"val/loss"} < logged, logged
    for where, metric, mode in monitors(config):
        assert metric in logged, f"{where} monitors {metric!r}; {config['model']['class_path']} logs {sorted(logged)}"
        expected = "min" if metric.rpartition("/")[2] in ERRORS else "max"
        assert mode == expected, f"{where} monitors {metric} with mode {mode!r}"
