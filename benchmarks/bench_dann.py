"""Domain-adversarial training (DANN), measured: does it help on a real domain shift?

    python benchmarks/bench_dann.py --seeds 1 2 3      # the quickstart's MiniLM, 3 epochs per run: ~25 min on 2 CPUs
    python benchmarks/bench_dann.py --seeds 1 --max-steps 4 --name dann-smoke   # smoke: ~2 min

The quickstart's review sentences (UCI Sentiment Labelled Sentences) come from three sites: Amazon (products),
Yelp (restaurants) and IMDb (films). Train on the labelled Amazon and Yelp sentences of the quickstart's train
split, with its IMDb sentences as unlabelled target-domain text; select the checkpoint on the Amazon and Yelp
validation sentences; test on every IMDb sentence of the validation and test splits (labels never seen in training).

Two systems, both ftlit's real CLI (``configs/quickstart.yaml`` with the domain keys), the same data, settings and
seeds, run one after the other in their own processes:

- plain: fine-tuning on the labelled source rows (the unlabelled target rows are in the batches, without a loss);
- DANN: the same, plus ``--model.domain_weight 1.0`` (Ganin et al.'s ramped gradient reversal);
- dann-0.1: the same at weight 0.1 (``--systems dann-0.1``), the size BERT-era DANN papers use.

``--add-to NAME`` adds the runs to ``<out>/NAME.json`` (the summary is over all its runs).

Writes ``<out>/<name>.json`` and ``<out>/<name>.md`` (default ``benchmarks/results/dann-quickstart``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from quickstart_cli import fit_and_test, quickstart_args

from ftlit.core.results import write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCE, TARGET = ("amazon", "yelp"), "imdb"
SYSTEMS = {"plain": [], "dann": ["--model.domain_weight=1.0"], "dann-0.1": ["--model.domain_weight=0.1"]}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def prepare_data(out: Path) -> dict[str, str]:
    """The cross-domain split of the quickstart's files (fetched by configs/quickstart/get_data.sh)."""
    data = REPO / "data" / "quickstart"
    subprocess.run(["bash", str(REPO / "configs" / "quickstart" / "get_data.sh"), str(data)], check=True)
    train = [{**r, "label": None} if r["source"] == TARGET else r for r in read_jsonl(data / "train.jsonl")]
    held_out = read_jsonl(data / "validation.jsonl") + read_jsonl(data / "test.jsonl")
    return {
        "train_file": write_jsonl(out / "train.jsonl", train),
        "validation_file": write_jsonl(out / "validation.jsonl", [r for r in held_out[:300] if r["source"] != TARGET]),
        "test_file": write_jsonl(out / "test.jsonl", [r for r in held_out if r["source"] == TARGET]),
    }


def run(system: str, seed: int, data: dict[str, str], ns: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One fit and test through ftlit's CLI; the test scores and the time."""
    root = work / f"{system}-{seed}"
    args = quickstart_args(
        root,
        seed,
        work,
        ns.max_steps,
        *(f"--data.{k}={v}" for k, v in data.items()),
        "--data.predict_file=null",
        "--data.domain_column=source",
        f"--data.target_domain={TARGET}",
        *SYSTEMS[system],
    )
    done = fit_and_test(root, args, f"{system} seed {seed}")
    results = done["results"]
    return {
        "system": system,
        "seed": seed,
        "test_acc": results["metrics"]["test/acc"],
        "test_f1": results["metrics"]["test/f1"],
        "test_rows": results["data"]["rows"],
        "seconds": done["seconds"],
        "command": done["command"],
    }


def systems_of(runs: list[dict[str, Any]]) -> list[str]:
    return [s for s in SYSTEMS if any(r["system"] == s for r in runs)]


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation, min and max of each score per system."""
    out: dict[str, dict[str, float]] = {}
    for system in systems_of(runs):
        for score in ("test_acc", "test_f1"):
            values = [r[score] for r in runs if r["system"] == system]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            out.setdefault(system, {}).update(
                {
                    f"{score}_mean": statistics.mean(values),
                    f"{score}_std": spread,
                    f"{score}_min": min(values),
                    f"{score}_max": max(values),
                }
            )
    return out


def table(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        f"# DANN on a domain shift: train {' + '.join(SOURCE)} (+ unlabelled {TARGET}), test {TARGET}",
        "",
        f"{result['date']}, `{'`, then `'.join(result['commands'])}`, {result['machine']}; "
        f"{result['runs'][0]['test_rows']} {TARGET} test sentences.",
        "",
        "| system | test accuracy (mean ± sd) | range | test macro F1 (mean ± sd) |",
        "|---|---|---|---|",
    ]
    for system in systems_of(result["runs"]):
        m = s[system]
        lines.append(
            f"| {system} | {m['test_acc_mean']:.4f} ± {m['test_acc_std']:.4f} | "
            f"{m['test_acc_min']:.4f}-{m['test_acc_max']:.4f} | {m['test_f1_mean']:.4f} ± {m['test_f1_std']:.4f} |"
        )
    lines.append("")
    for system in systems_of(result["runs"])[1:]:
        delta = s[system]["test_acc_mean"] - s["plain"]["test_acc_mean"]
        lines.append(f"{system} - plain, mean test accuracy: {delta:+.4f}.")
    lines += ["", "| system | seed | test acc | seconds |"]
    lines.append("|---|---|---|---|")
    lines += [
        f"| {r['system']} | {r['seed']} | {r['test_acc']:.4f} | {r.get('seconds', r.get('fit_seconds', 0)):.0f} |"
        for r in result["runs"]
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-steps", type=int, default=None, help="train this many steps (smoke runs)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="dann-quickstart")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=["plain", "dann"])
    parser.add_argument("--add-to", default=None, help="add the runs to <out>/<this>.json")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-dann")
    ns = parser.parse_args()
    data = prepare_data(ns.work / "data")
    command = "python benchmarks/bench_dann.py " + shlex.join(sys.argv[1:])
    earlier = json.loads((ns.out / f"{ns.add_to}.json").read_text()) if ns.add_to else {}
    ns.name = ns.add_to or ns.name
    ns.out.mkdir(parents=True, exist_ok=True)
    runs = list(earlier.get("runs", []))
    for seed in ns.seeds:
        for system in ns.systems:
            runs.append(run(system, seed, data, ns, ns.work))
            # each finished run is kept at once: a stopped benchmark loses only the run in progress
            write_json(ns.out / f"{ns.name}.partial.json", runs)
    result = {
        "date": datetime.date.today().isoformat(),
        "commands": [*earlier.get("commands", []), command],
        "machine": earlier.get("machine", f"{platform.processor() or platform.machine()}, CPU only"),
        "runs": runs,
        "summary": summary(runs),
    }
    (ns.out / f"{ns.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (ns.out / f"{ns.name}.md").write_text(table(result))
    (ns.out / f"{ns.name}.partial.json").unlink()
    print(table(result))


if __name__ == "__main__":
    main()
