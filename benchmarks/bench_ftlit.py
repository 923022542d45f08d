"""One ftlit benchmark run, in its own process: ``ftlit fit`` through the real CLI, then evaluation and a loader pass.

Usage (from the repository root, with ``benchmarks/`` on ``PYTHONPATH``; ``run.py`` does this):
``python benchmarks/bench_ftlit.py --spec SPEC.json --result RESULT.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench_lightning import StepTiming
from bench_profiles import Variant
from bench_timing import device_name, loader_throughput, peak_memory_mib
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

from ftlit.cli import FtlitCLI


def cli_args(spec: dict[str, Any], workdir: Path) -> list[str]:
    """The ``ftlit fit`` command line: the quickstart config, the benchmark overlay, the profile's settings and the
    speed variant's config overrides (e.g. ``--data.group_by_length=true``)."""
    p = spec["profile"]
    args = [
        "fit",
        "--config=configs/quickstart.yaml",
        "--config=benchmarks/ftlit_overlay.yaml",
        "--trainer.callbacks+=bench_lightning.StepTiming",
        f"--seed_everything={p['seed']}",
        f"--trainer.default_root_dir={workdir}",
        f"--trainer.accelerator={'gpu' if p['device'] == 'cuda' else 'cpu'}",
        f"--trainer.precision={p['precision']}",
        f"--trainer.gradient_clip_val={p['gradient_clip']}",
        f"--trainer.log_every_n_steps={p['log_every_n_steps']}",
        f"--model.backbone={spec['ftlit_backbone']}",
        f"--model.learning_rate={p['learning_rate']}",
        f"--model.weight_decay={p['weight_decay']}",
        f"--model.warmup_ratio={p['warmup_ratio']}",
        "--model.scheduler=linear",
        f"--data.train_file={spec['train_file']}",
        f"--data.validation_file={spec['validation_file']}",
        f"--data.max_length={p['max_length']}",
        f"--data.batch_size={p['batch_size']}",
        "--data.num_workers=0",
        f"--data.pin_memory={str(p['device'] == 'cuda').lower()}",
    ]
    if spec.get("max_steps"):
        # max_epochs -1: the schedule's length is max_steps, as in the Trainer with max_steps.
        args += ["--trainer.max_epochs=-1", f"--trainer.max_steps={spec['max_steps']}"]
    else:
        args += [f"--trainer.max_epochs={p['epochs']}"]
    return args + Variant(**spec["variant"]).ftlit_overrides()


def logged_first_step_s(trainer: Trainer) -> float | None:
    """``perf/first_step_seconds`` as ftlit logged it to its CSV logger, else None.

    ftlit logs it only with ``model.compile``, and Lightning writes it only at a logging step
    (``log_every_n_steps``): a shorter run has none.
    """
    for logger in trainer.loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is not None and path.is_file():
            with open(path, newline="") as f:
                values = [row.get("perf/first_step_seconds") for row in csv.DictReader(f)]
            return next((float(v) for v in values if v), None)  # empty in the rows of other metrics
    return None


def main() -> None:
    """Train, evaluate, time the loader and write the result JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    ns = parser.parse_args()
    sys.argv = sys.argv[:1]  # LightningCLI gets its arguments from args= alone
    spec = json.loads(ns.spec.read_text())
    workdir = Path(spec["workdir"])
    # Wall clock at which run.py started this process: start-up figures include interpreter start and imports.
    spawned = float(os.environ.get("BENCH_SPAWN_TIME", time.time()))

    cli = FtlitCLI(args=cli_args(spec, workdir))  # runs the fit
    fit_done = time.time()
    timing = next(cb for cb in cli.trainer.callbacks if isinstance(cb, StepTiming))
    result: dict[str, Any] = {"system": "ftlit", **timing.timer.summary()}
    result["time_to_first_step_s"] = result.pop("train_start_unix") - spawned
    first_step = logged_first_step_s(cli.trainer)  # read before validate() logs more
    if first_step is not None:
        result["compile_first_step_s"] = first_step

    # Evaluate the final weights on the whole validation split (validation was off during fit).
    cli.trainer.limit_val_batches = 1.0
    start = time.perf_counter()
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    result["eval_s"] = time.perf_counter() - start
    result["val_accuracy"] = float(metrics["val/acc"])
    result["val_loss"] = float(metrics["val/loss"])
    result["fit_wall_s"] = fit_done - spawned

    result.update(loader_throughput(cli.datamodule.train_dataloader()))
    result["params"] = sum(p.numel() for p in cli.model.parameters() if p.requires_grad)
    result["torch_threads"] = torch.get_num_threads()
    result["device_name"] = device_name(spec["profile"]["device"])
    result["command"] = "ftlit " + " ".join(cli_args(spec, workdir))
    result.update(peak_memory_mib(spec["profile"]["device"]))
    ns.result.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
