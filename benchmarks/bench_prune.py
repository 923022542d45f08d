"""Accuracy against sparsity for magnitude pruning, and against depth for dropped layers, on the quickstart.

    python benchmarks/bench_prune.py --seeds 1          # five fits of the quickstart: ~25 min on 2 idle CPUs
    python benchmarks/bench_prune.py --seeds 1 --max-steps 4 --name prune-smoke   # smoke

Every system is ftlit's real CLI on ``configs/quickstart.yaml`` (the packaged 6-layer MiniLM, 3 epochs), the same
data and seed, fit then tested on its best checkpoint:

- sparsity 0 (the quickstart as it is), 0.5, 0.7 and 0.9: ``ftlit.core.callbacks.MagnitudePruning`` (global L1,
  cubic schedule over the first 70% of the steps, every 10 steps), layered over the quickstart as
  ``configs/strategies/pruning.yaml`` does;
- 3 layers: ``--model.keep_layers [0, 2, 4]`` (every other layer, no pruning).

Reports test accuracy, the share of zeros in the encoder's linear weights of the tested checkpoint, and test-time
rows per second (``timing.json``; zeros do not run faster on dense kernels, dropped layers do). Writes
``<out>/<name>.json`` and ``<out>/<name>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from quickstart_cli import fit_and_test, quickstart_args

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PRUNE = "--trainer.callbacks+=ftlit.core.callbacks.MagnitudePruning"


def systems() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"sparsity 0": []}
    for sparsity in (0.5, 0.7, 0.9):
        out[f"sparsity {sparsity}"] = [PRUNE, f"--trainer.callbacks.sparsity={sparsity}"]
    out["3 layers"] = ["--model.keep_layers=[0, 2, 4]"]
    return out


def run(system: str, seed: int, ns: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """One fit and test of the quickstart through ftlit's CLI; its score, sparsity and test speed."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ftlit.core.callbacks.pruning import sparsity_of

    root = ns.work / f"{system.replace(' ', '-')}-{seed}"
    done = fit_and_test(root, quickstart_args(root, seed, ns.work, ns.max_steps, *extra), f"{system} seed {seed}")
    results, timing = done["results"], done["timing"]
    checkpoint = torch.load(results["ckpt_path"], map_location="cpu", weights_only=True)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**checkpoint["ftlit"]["config"]))
    model.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}, strict=False)
    return {
        "system": system,
        "seed": seed,
        "test_acc": results["metrics"]["test/acc"],
        "sparsity": sparsity_of(model),
        "layers": model.config.num_hidden_layers,
        "test_rows_per_s": results["data"]["rows"] / timing["test"]["seconds"],
        "seconds": done["seconds"],
        "command": done["command"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--max-steps", type=int, default=None, help="train this many steps (smoke runs)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="prune-quickstart")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-prune")
    ns = parser.parse_args()
    subprocess.run(["bash", "configs/quickstart/get_data.sh", "data/quickstart"], cwd=REPO, check=True)
    runs = [run(system, seed, ns, extra) for seed in ns.seeds for system, extra in systems().items()]
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/bench_prune.py " + shlex.join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, CPU only",
        "runs": runs,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{ns.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    dense = {r["seed"]: r for r in runs if r["system"] == "sparsity 0"}
    lines = [
        "# Magnitude pruning and dropped layers on the quickstart (packaged MiniLM, 6 layers)",
        "",
        f"{result['date']}, `{result['command']}`, {result['machine']}.",
        "",
        "| system | seed | test accuracy | vs dense | zeros in encoder linears | layers | test rows/s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['system']} | {r['seed']} | {r['test_acc']:.4f} | {r['test_acc'] - dense[r['seed']]['test_acc']:+.4f} | "
        f"{r['sparsity']:.1%} | {r['layers']} | {r['test_rows_per_s']:.0f} |"
        for r in runs
    ]
    (ns.out / f"{ns.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
