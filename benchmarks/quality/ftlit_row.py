"""The quality benchmark's ftlit rows: ``ftlit fit`` through the real CLI, then validation and test.

    python benchmarks/quality/ftlit_row.py --spec SPEC.json --result RESULT.json

The spec (written by ``run.py``) holds the base config (``base.yaml``: only the model class and backbone, the data
class and files, ``max_length`` 128, the seed, the run folder and a quiet console), the recipe overlay if any, and
the time cap. The command line is what a user types::

    ftlit fit --config base.yaml [--config configs/recipes/<recipe>.yaml] --trainer.callbacks+=<time_cap.TimeCap>

``trainer.max_epochs`` is never given (a recipe may set it): ftlit-default measures what a user gets. The cap is a
guard so a row cannot run for ever (Lightning's default is 1,000 epochs); the row records whether it stopped there.
It is ``time_cap.TimeCap``, not ``trainer.max_time``, which would change the default it guards (see time_cap.py).
After the fit, the checkpoint ftlit's own ``--ckpt_path best`` would pick is scored: the best one where the config
monitors a metric, else the last (the final weights, as the Trainer's).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

# ftlit's score names -> the benchmark's (the Trainer row uses the same).
RENAME = {"acc": "accuracy", "f1": "f1_macro"}
KEEP = {
    "classification": ("acc", "f1", "mcc"),
    "regression": ("pearson", "spearman", "mse"),
    "multi_label": ("f1_micro", "f1_macro", "exact_match"),
    "ner": ("precision", "recall", "f1"),
}


def fit_args(spec: dict[str, Any]) -> list[str]:
    args = ["fit", f"--config={spec['base_config']}"]
    if spec.get("recipe"):
        args.append(f"--config={spec['recipe']}")
    if spec.get("max_time_s"):
        cap = {"class_path": "time_cap.TimeCap", "init_args": {"seconds": spec["max_time_s"]}}
        args.append(f"--trainer.callbacks+={json.dumps(cap)}")
    return args


def scores(task: str, metrics: dict[str, float], stage: str) -> dict[str, float]:
    out = {}
    for key in KEEP[task]:
        value = metrics.get(f"{stage}/{key}")
        if value is not None:
            out[key if task == "ner" else RENAME.get(key, key)] = float(value)
    return out


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Fit, then validate and test the chosen checkpoint; the row's result."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from time_cap import TimeCap

    from ftlit import quiet
    from ftlit.cli import FtlitCLI
    from ftlit.core.callbacks.clock import RunClock

    started = time.time()
    quiet.install()
    argv = sys.argv
    sys.argv = sys.argv[:1]  # LightningCLI reads args= alone
    try:
        cli = FtlitCLI(args=fit_args(spec))
    finally:
        sys.argv = argv
    trainer = cli.trainer
    clock = next((c for c in trainer.callbacks if isinstance(c, RunClock)), None)
    cap_hit = any(c.hit for c in trainer.callbacks if isinstance(c, TimeCap))
    early = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    monitored = checkpoint is not None and checkpoint.monitor is not None and bool(checkpoint.best_model_path)
    ckpt = "best" if monitored else "last"
    if cap_hit:
        stop = "time cap"
    elif any(c.stopped_epoch for c in early):
        stop = "early stopping"
    elif trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        stop = "max_steps"
    else:
        stop = "max_epochs"
    result: dict[str, Any] = {
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "fit_s": float(clock.time_elapsed("train")) if clock is not None else None,
        "cap_hit": cap_hit,
        "stopped_by": stop,
        "batch_size": int(cli.datamodule.batch_size),
        "learning_rate": float(cli.model.hparams.learning_rate),
        "warmup_ratio": float(cli.model.hparams.warmup_ratio),
        "warmup_steps": int(cli.model.hparams.warmup_steps),
        "ckpt": ckpt,
        # The step of the last checkpoint: below "steps" when the cap stopped a fit between saves.
        "last_ckpt_step": getattr(checkpoint, "_last_global_step_saved", None),
        "command": "ftlit " + " ".join(fit_args(spec)),
    }
    task = spec["task"]
    val = trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)[0]
    test = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)[0]
    result["val"], result["test"] = scores(task, val, "val"), scores(task, test, "test")
    result["run_s"] = time.time() - started
    return result


if __name__ == "__main__":
    from row_cli import main

    main(run, __doc__)
