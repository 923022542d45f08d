"""Which heads to remove: ``ftlit heads``' gradient importance against random choices, on the fine-tuned quickstart.

    python benchmarks/bench_heads.py                       # one quickstart fit, then the curve: ~6 min on 2 CPUs
    python benchmarks/bench_heads.py --retrain 0.5         # and `ftlit fit --config <heads>/fit.yaml` at 50%

Michel et al. 2019's experiment, on ftlit's real CLI: the quickstart (``configs/quickstart.yaml``, the packaged
6-layer MiniLM, 72 heads) is fine-tuned once, then ``ftlit heads`` scores its heads on the validation split. For
each share of heads removed, the fine-tuned model loses (without retraining)

- ``importance``: the least important heads (``ftlit heads``' choice at that share);
- ``random``: as many heads drawn at random (``--random-seeds`` draws, each layer keeping one head, as ftlit does);
- ``most important``: the highest-scored ones (a check that the scores rank anything),

and is scored on the test split (301 sentences). ``--retrain S`` also runs the written ``fit.yaml`` at share ``S``
(the pruned model trained on for the quickstart's epochs) and tests its best checkpoint. Writes
``<out>/<name>.json`` and ``<out>/<name>.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import random
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from quickstart_cli import fit_and_test, quickstart_args

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def ftlit(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ftlit", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ftlit {shlex.join(args)} failed:\n{done.stderr[-3000:]}")


class Evaluator:
    """Test accuracy of a fine-tuned checkpoint with some heads removed (no retraining): the model read once, each
    pruning on a copy; the test split read by the run's own data module."""

    def __init__(self, ckpt: Path, config: Path) -> None:
        from ftlit.commands.heads import data_module
        from ftlit.commands.tune import base_config
        from ftlit.core.module import FineTuneModule

        fit = base_config([str(config)])
        self.module = FineTuneModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
        data = data_module(fit["data"], fit["model"]["init_args"]["backbone"], False)
        data.setup("test")
        self.batches = list(data.test_dataloader())

    def __call__(self, heads: dict[int, list[int]] | None) -> float:
        import torch

        from ftlit.core import strategies
        from ftlit.core.anatomy import anatomy

        module = copy.deepcopy(self.module)
        if heads:
            strategies.prune_heads(module.model, anatomy(module.model), heads)
        right = total = 0
        with torch.inference_mode():
            for batch in self.batches:
                right += int((module(batch).argmax(-1) == batch["labels"]).sum())
                total += len(batch["labels"])
        return right / total


def main() -> None:
    from ftlit.core.head_importance import least_important

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="the quickstart fit's seed")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.25, 0.4, 0.5, 0.6, 0.75])
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--retrain", type=float, nargs="*", default=[], help="shares whose fit.yaml to train")
    parser.add_argument("--max-steps", type=int, default=None, help="train this many steps (smoke runs)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="heads-quickstart")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-heads")
    ns = parser.parse_args()
    subprocess.run(["bash", "configs/quickstart/get_data.sh", "data/quickstart"], cwd=REPO, check=True)
    command = "python benchmarks/bench_heads.py " + shlex.join(sys.argv[1:])

    root = ns.work / f"quickstart-{ns.seed}"
    fitted = fit_and_test(root, quickstart_args(root, ns.seed, ns.work, ns.max_steps), "quickstart")
    ckpt, config = Path(fitted["results"]["ckpt_path"]), root / "csv" / "version_0" / "config.yaml"
    scored = ns.work / "heads"
    ftlit("heads", "--config", str(config), "--ckpt_path", str(ckpt), "--remove", "0.5", "--out", str(scored),
          "--overwrite")  # fmt: skip
    report = json.loads((scored / "head-importance.json").read_text())
    scores: list[list[float]] = report["importance"]
    accuracy = Evaluator(ckpt, config)
    dense = accuracy(None)
    print(f"dense: {dense:.4f}", flush=True)

    rows: list[dict[str, Any]] = []
    for share in ns.shares:
        chosen = least_important(scores, share)
        removed = sum(len(h) for h in chosen.values())
        row: dict[str, Any] = {"share": share, "removed": removed, "importance": accuracy(chosen)}
        draws = []
        for seed in ns.random_seeds:
            rng = random.Random(seed)
            drawn = [[rng.random() for _ in layer] for layer in scores]
            draws.append(accuracy(least_important(drawn, share)))
        row["random"] = draws
        row["most important"] = accuracy(least_important([[-s for s in layer] for layer in scores], share))
        print(json.dumps(row), flush=True)
        rows.append(row)

    retrained = []
    for share in ns.retrain:
        folder = ns.work / f"heads-{share}"
        ftlit("heads", "--config", str(config), "--ckpt_path", str(ckpt), "--remove", str(share), "--out", str(folder),
              "--overwrite")  # fmt: skip
        args = ["--config", str(folder / "fit.yaml"), "--trainer.enable_progress_bar=false", "--overwrite=true"]
        args += ["--trainer.max_steps", str(ns.max_steps)] if ns.max_steps else []
        done = fit_and_test(folder / "run", args, f"retrain {share}")
        retrained.append(
            {"share": share, "test_acc": done["results"]["metrics"]["test/acc"], "seconds": done["seconds"]}
        )

    result = {
        "date": datetime.date.today().isoformat(),
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, CPU only",
        "heads": report["heads"],
        "scored_on": f"{report['batches']} batches of {report['split']}",
        "dense": dense,
        "quickstart_test_acc": fitted["results"]["metrics"]["test/acc"],
        "rows": rows,
        "retrained": retrained,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{ns.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Heads removed from the fine-tuned quickstart, no retraining ({report['heads']} heads, packaged MiniLM)",
        "",
        f"{result['date']}, `{command}`, {result['machine']}. Dense test accuracy {dense:.4f}; scores from "
        f"{result['scored_on']}.",
        "",
        "| share removed | heads removed | least important (ftlit heads) | random, mean (min-max) | most important |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        draws = r["random"]
        lines.append(
            f"| {r['share']:.0%} | {r['removed']} | {r['importance']:.4f} | {statistics.mean(draws):.4f} "
            f"({min(draws):.4f}-{max(draws):.4f}) | {r['most important']:.4f} |"
        )
    if retrained:
        lines += ["", "| share removed, then trained on | test accuracy |", "|---|---|"]
        lines += [f"| {r['share']:.0%} | {r['test_acc']:.4f} |" for r in retrained]
    (ns.out / f"{ns.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
