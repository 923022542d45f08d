"""A smaller model from the quickstart's, measured: dropping layers, with and without distillation.

    python benchmarks/bench_distill.py --seeds 1        # three fits of the quickstart: ~15 min on 2 idle CPUs
    python benchmarks/bench_distill.py --seeds 1 --max-steps 4 --name distill-smoke   # smoke: ~3 min

Three systems, all ftlit's real CLI on ``configs/quickstart.yaml`` (the packaged 6-layer MiniLM, 3 epochs), the same
data and seed, each fit then tested on its best checkpoint:

- teacher: the quickstart as it is (6 layers);
- student: ``--model.keep_layers [0, 2, 4]`` (every other layer: 3 layers, "Poor Man's BERT");
- distilled: the same student with ``--model.teacher`` the teacher's best checkpoint (alpha 0.5, T 2).

Reports test accuracy, parameters and test-time rows per second (``timing.json``'s test time, this CPU, batch 32),
and the students' accuracy as a share of the teacher's. Writes ``<out>/<name>.json`` and ``<out>/<name>.md``.
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
STUDENT = ["--model.keep_layers=[0, 2, 4]"]


def run(system: str, seed: int, ns: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """One fit and test of the quickstart through ftlit's CLI; its scores, size and test speed."""
    root = ns.work / f"{system}-{seed}"
    done = fit_and_test(root, quickstart_args(root, seed, ns.work, ns.max_steps, *extra), f"{system} seed {seed}")
    results, checkpoint = done["results"], done["results"]["ckpt_path"]
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {
        "system": system,
        "seed": seed,
        "test_acc": results["metrics"]["test/acc"],
        "test_rows": results["data"]["rows"],
        "parameters": sum(v.numel() for v in state.values()),
        "test_rows_per_s": results["data"]["rows"] / done["timing"]["test"]["seconds"],
        "checkpoint": checkpoint,
        "seconds": done["seconds"],
        "command": done["command"],
    }


def table(result: dict[str, Any]) -> str:
    runs = result["runs"]
    teacher = {r["seed"]: r for r in runs if r["system"] == "teacher"}
    lines = [
        "# A 3-layer student of the quickstart's 6-layer MiniLM, with and without distillation",
        "",
        f"{result['date']}, `{result['command']}`, {result['machine']}; {runs[0]['test_rows']} test sentences.",
        "",
        "| system | seed | test accuracy | of the teacher's | parameters | test rows/s | fit + test, s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        share = r["test_acc"] / teacher[r["seed"]]["test_acc"]
        lines.append(
            f"| {r['system']} | {r['seed']} | {r['test_acc']:.4f} | {share:.1%} | {r['parameters'] / 1e6:.1f} M | "
            f"{r['test_rows_per_s']:.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--max-steps", type=int, default=None, help="train this many steps (smoke runs)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="distill-quickstart")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-distill")
    ns = parser.parse_args()
    subprocess.run(
        ["bash", str(REPO / "configs" / "quickstart" / "get_data.sh"), "data/quickstart"], cwd=REPO, check=True
    )
    runs = []
    for seed in ns.seeds:
        teacher = run("teacher", seed, ns, [])
        runs += [teacher, run("student", seed, ns, STUDENT)]
        runs.append(run("distilled", seed, ns, [*STUDENT, f"--model.teacher={teacher['checkpoint']}"]))
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/bench_distill.py " + shlex.join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, CPU only",
        "runs": runs,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{ns.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (ns.out / f"{ns.name}.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
