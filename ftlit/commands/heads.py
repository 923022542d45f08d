"""``ftlit heads``: score a fine-tuned model's attention heads on labelled data, and write the ones to remove.

    ftlit heads --config runs/x/csv/version_0/config.yaml --ckpt_path runs/x/checkpoints/best.ckpt --remove 0.25
    ftlit fit --config heads/fit.yaml

The scores are Michel et al.'s gradient importance (``ftlit.core.head_importance``) over a split of the run's own
data, read by the run's own data module (its config); the model and its tokenizer come from the checkpoint.
``fit.yaml`` is the run's config with ``model.prune_heads`` the least important heads, ``model.init_from`` the
checkpoint and its run folder ``<out>/run``: the fit it starts removes those heads from the fine-tuned model and
trains on (a short fit recovers most of what the removal cost). ``head-importance.json`` holds every head's score.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import tempfile
from importlib.util import find_spec
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import yaml

from ftlit import backbone
from ftlit.checkpoint_io import read_checkpoint, saved_backbone
from ftlit.classes import find_class
from ftlit.commands.folders import arg_docs, check_target, command_parser, replace_folder, sibling
from ftlit.commands.plot import new_figure, png_bytes
from ftlit.commands.tune import base_config
from ftlit.core.datamodule import TaskDataModule
from ftlit.core.head_importance import attention_outputs, check_share, head_importance, least_important
from ftlit.core.module import FineTuneModule
from ftlit.core.warm_start import plain_model
from ftlit.errors import ConfigError, report_errors

FIT, SCORES, PNG = "fit.yaml", "head-importance.json", "head-importance.png"
SPLITS = ("train", "validation", "test")


def heads(
    config: list[str],
    ckpt_path: str,
    remove: float = 0.25,
    split: str = "validation",
    max_batches: int | None = None,
    normalize: bool = True,
    out: str = "heads",
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Score a fine-tuned model's attention heads and list the least important ones for ``model.prune_heads``.

    Writes ``fit.yaml`` (the run's config with the heads to remove in ``model.prune_heads``, ``model.init_from``
    the checkpoint and the run folder ``<out>/run``: ``ftlit fit --config <out>/fit.yaml`` prunes and trains on) and
    ``head-importance.json`` (every head's score, the heads chosen, the split and the batches read).

    Args:
        config: The run's ``ftlit fit`` config (its ``config.yaml``, or the files it was started with): the data to
            score on is read as that fit read it.
        ckpt_path: Checkpoint written by ``ftlit fit`` (BERT, RoBERTa, XLM-R, ELECTRA or DistilBERT attention).
        remove: Share of all heads to list for removal, lowest scores first (0 < remove < 1); each layer keeps at
            least one head.
        split: Labelled split to score on: ``validation``, ``train`` or ``test``.
        max_batches: Score on at most this many batches of the split (default: all of it).
        normalize: Divide each layer's scores by their L2 norm, so that layers compare (Michel et al.).
        out: Folder to write. An existing non-empty folder is an error unless ``overwrite`` is set.
        overwrite: Replace an existing ``out`` folder (atomically).
        trust_remote_code: Let a model that ships its own Python code (packed in the checkpoint) run it.

    Returns:
        The folder written and the contents of its ``head-importance.json``.
    """
    check_share(remove)
    if split not in SPLITS:
        raise ConfigError("split", f"{split!r} is not a split: use validation, train or test")
    if max_batches is not None and max_batches < 1:
        raise ConfigError("max_batches", f"must be at least 1 (or unset for the whole split), got {max_batches}")
    ckpt = Path(ckpt_path).expanduser()
    if not ckpt.is_file():
        raise ConfigError("ckpt_path", f"'{ckpt_path}' is not a file: give a checkpoint written by ftlit fit")
    target = Path(out).expanduser()
    protected = {"the checkpoint": ckpt, "the run its fit.yaml trained": target / "run"}
    check_target(target, overwrite, {what: path for what, path in protected.items() if path.exists()})
    fit = base_config(config)

    with backbone.quiet():
        module = FineTuneModule.load_from_checkpoint(ckpt, map_location="cpu", trust_remote_code=trust_remote_code)
    # LoRA adapters merged: the heads scored are the ones init_from starts the pruned run from.
    module.model = plain_model(module.model, module.label_names)
    module.to("cuda" if torch.cuda.is_available() else "cpu")  # one forward and backward per batch
    attention_outputs(module)  # a model whose heads cannot be scored is refused before its data is read
    with tempfile.TemporaryDirectory() as tokenizer:
        saved = saved_backbone(read_checkpoint(ckpt))
        backbone.unpack(tokenizer, saved["config"], saved["tokenizer"], saved.get("code"))
        data = data_module(fit["data"], tokenizer, trust_remote_code)
        check_labels(data.label_names, module)  # given, or found in the train split: before it is tokenized
        data.setup("fit" if split == "train" else split)
    loader = {"train": data.train_dataloader, "validation": data.val_dataloader, "test": data.test_dataloader}[split]()
    batches = islice(loader, max_batches) if max_batches is not None else loader
    scores, n = head_importance(module, batches, normalize=normalize)
    chosen = least_important(scores, remove)

    removed = sum(len(h) for h in chosen.values())
    report = {
        "checkpoint": str(ckpt),
        "split": split,
        "batches": n,
        "normalized": normalize,
        "heads": sum(len(layer) for layer in scores),
        "removed": removed,
        "prune_heads": {str(layer): h for layer, h in chosen.items()},
        "importance": scores,
    }
    config = relocated(fit, target.resolve() / "run")
    config["model"]["init_args"].update(init_from=str(ckpt.resolve()), prune_heads=chosen)
    header = (
        f"# ftlit heads: the {removed} least important of {report['heads']} attention heads of {ckpt} removed\n"
        f"# (gradient importance on {n} batches of the {split} split). Prune and train on: ftlit fit --config "
        f"{target / FIT}\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(target, "tmp")
    tmp.mkdir()
    try:
        (tmp / FIT).write_text(header + yaml.safe_dump(config, sort_keys=False))
        (tmp / SCORES).write_text(json.dumps(report, indent=2) + "\n")
        if find_spec("matplotlib") is not None:  # the plots extra
            (tmp / PNG).write_bytes(draw_importance(scores, chosen))
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, report


def draw_importance(scores: list[list[float]], chosen: dict[int, list[int]]) -> bytes:
    """The scores as a layers x heads heat map, the heads chosen for removal crossed out (PNG bytes)."""
    fig = new_figure(1.2 + 0.55 * max(len(layer) for layer in scores), 1.0 + 0.45 * len(scores))
    ax = fig.add_subplot()
    width = max(len(layer) for layer in scores)
    grid = [layer + [float("nan")] * (width - len(layer)) for layer in scores]
    image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    for layer, heads in chosen.items():
        ax.scatter(heads, [layer] * len(heads), marker="x", color="red", s=60)
    ax.set(xlabel="head", ylabel="layer", title="head importance (x: removed)")
    ax.set_xticks(range(width))
    ax.set_yticks(range(len(scores)))
    fig.colorbar(image, ax=ax)
    return png_bytes(fig)


def check_labels(labels: list[str] | None, module: FineTuneModule) -> None:
    """The data's labels are the model's, in its order (else the loss scores the wrong classes)."""
    if labels is not None and [str(name) for name in labels] != list(module.label_names or []):
        raise ConfigError("config", f"the data's labels {list(labels)} are not the checkpoint's "
                          f"{module.label_names}: give the config of the run that wrote it")  # fmt: skip


def relocated(config: dict[str, Any], root: Path) -> dict[str, Any]:
    """A run's resolved config for a new run folder ``root``, a fresh fit, not a resume. A config.yaml written
    before ftlit kept the run-folder paths as given holds the checkpoint folder and the default loggers' folder of
    its run: those follow too."""
    config = copy.deepcopy(config)
    trainer = config["trainer"]
    old = Path(trainer.get("default_root_dir") or Path.cwd()).resolve()
    trainer["default_root_dir"] = str(root)
    dirpath = config["checkpoint"].get("dirpath")
    if dirpath and Path(dirpath).resolve() == old / "checkpoints":
        config["checkpoint"]["dirpath"] = None
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else []:
        args = logger.get("init_args") or {}
        if args.get("save_dir") and Path(args["save_dir"]).resolve() == old:
            args["save_dir"] = str(root)
    config["ckpt_path"] = None
    config["overwrite"] = False  # a run started with --overwrite: its next one must not delete this one's
    return config


def data_module(data: dict[str, Any], tokenizer: str, trust_remote_code: bool) -> TaskDataModule:
    """The run's data module, as its fit config builds it, with the checkpoint's tokenizer."""
    name = data.get("class_path") if isinstance(data, dict) else None
    cls = find_class(name) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, TaskDataModule)):
        raise ConfigError("config", f"data: {name!r} is not an ftlit data module: give the run's fit config")
    settings = {**(data.get("init_args") or {}), "tokenizer": tokenizer, "trust_remote_code": trust_remote_code}
    built = cls(**settings)
    built.tokenizer  # noqa: B018 - read now, while its folder exists
    return built


def build_parser() -> Any:
    parser = command_parser(heads, "ftlit heads", flags=("overwrite", "trust_remote_code"), skip=("config",))
    parser.add_argument("--config", action="append", required=True, help=arg_docs(heads)["config"])
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ftlit heads``; bad input exits with one line naming the field (exit code 2)."""
    args = report_errors(lambda: build_parser().parse_args(sys.argv[1:] if argv is None else argv))
    settings = {k: v for k, v in vars(args).items() if not k.startswith("__")}
    folder, report = report_errors(lambda: heads(**settings))
    print(
        f"ftlit: scored {report['heads']} attention heads on {report['batches']} batches of {report['split']}; "
        f"the {report['removed']} least important removed in {folder / FIT}: ftlit fit --config {folder / FIT}"
    )
