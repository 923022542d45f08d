"""Side-by-side benchmark: ftlit against a plain Hugging Face ``Trainer``, same model, data and settings.

    python benchmarks/run.py --profile cpu-tiny
    python benchmarks/run.py --profile cpu-minilm --max-steps 40
    python benchmarks/run.py --profile cpu-tiny --variant group_by_length --variant pad_to_multiple_of

Each system trains in its own subprocess, one after the other (peak memory is per system, no warm caches are
shared): ftlit through its real CLI (``bench_ftlit.py``), the baseline through ``Trainer`` (``bench_trainer.py``).
Each ``--variant`` (a speed option from ``bench_profiles.VARIANTS``) runs both systems again with that option on,
ftlit through its config keys, the Trainer through its own equivalent, and adds one row per variant to a second table.
Prints the tables and writes ``<out>/<name>.json`` and ``<out>/<name>.md``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
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

from bench_profiles import (
    DATA,
    DEFAULT_VARIANT,
    PROFILES,
    REPO,
    VARIANTS,
    Profile,
    Variant,
    gpu_peak_flops,
    make_random_bert_base,
    make_tiny_bert,
    model_flops,
    variant,
)

HERE = Path(__file__).resolve().parent
SYSTEMS = {"ftlit": HERE / "bench_ftlit.py", "trainer": HERE / "bench_trainer.py"}

# (key, label, format, which way is better for ftlit/Trainer: "higher", "lower" or "" for neither)
ROWS: list[tuple[str, str, str, str]] = [
    ("train_samples_per_s", "train samples/s (warm-up step excluded)", "{:.1f}", "higher"),
    ("train_tokens_per_s", "train tokens/s (non-padding, warm-up step excluded)", "{:.0f}", "higher"),
    ("train_samples_per_s_incl_warmup", "train samples/s (warm-up step included)", "{:.1f}", "higher"),
    ("train_samples_per_cpu_s", "train samples per CPU second (warm-up step excluded)", "{:.1f}", "higher"),
    ("step_ms", "time per step, ms (warm-up step excluded)", "{:.1f}", "lower"),
    ("median_step_ms", "median step, ms (warm-up step excluded)", "{:.1f}", "lower"),
    ("max_step_ms", "slowest step after the warm-up, ms", "{:.1f}", "lower"),
    ("warmup_s", "first (warm-up) step, s", "{:.2f}", "lower"),
    ("epoch_s_mean", "wall time per epoch, s (training steps only)", "{:.2f}", "lower"),
    ("train_s", "training loop, s (all steps)", "{:.2f}", "lower"),
    ("time_to_first_step_s", "start-up to first step, s (imports, config, model, tokenization)", "{:.1f}", "lower"),
    ("model_tflops_per_s", "model TFLOP/s (6 x params x tokens)", "{:.3f}", "higher"),
    ("mfu", "MFU (of the GPU's bf16 dense peak)", "{:.1%}", "higher"),
    ("peak_rss_mib", "peak RSS, MiB (whole process)", "{:.0f}", "lower"),
    ("peak_rss_at_first_step_mib", "peak RSS before training, MiB (set-up)", "{:.0f}", "lower"),
    ("rss_at_first_step_mib", "RSS at the first training step, MiB", "{:.0f}", "lower"),
    ("peak_gpu_mib", "peak GPU memory allocated, MiB", "{:.0f}", "lower"),
    ("val_accuracy", "final validation accuracy", "{:.3f}", "higher"),
    ("val_loss", "final validation loss", "{:.4f}", "lower"),
    ("eval_s", "evaluation, s", "{:.2f}", "lower"),
    ("loader_batches_per_s", "train loader alone, batches/s", "{:.1f}", "higher"),
    ("process_wall_s", "whole process, s (incl. evaluation and loader pass)", "{:.1f}", "lower"),
    ("steps", "optimizer steps", "{:.0f}", ""),
    ("samples", "samples trained", "{:.0f}", ""),
    ("tokens", "non-padding tokens trained", "{:.0f}", ""),
    ("padded_tokens", "tokens trained, padding included", "{:.0f}", ""),
    ("padding_share", "padding, share of the tokens trained", "{:.1%}", "lower"),
]


def ensure_data() -> None:
    """Fetch the quickstart data with its documented script when it is not there yet."""
    if not (DATA / "train.jsonl").is_file():
        subprocess.run(["bash", str(REPO / "configs" / "quickstart" / "get_data.sh"), str(DATA)], check=True)


def prepare_backbone(profile: Profile, tmp: Path) -> tuple[str, str]:
    """(what ftlit's ``model.backbone`` gets, the folder or Hub name the baseline loads): the same model."""
    from ftlit.backbone import resolve

    if profile.backbone == "tiny":
        folder = str(make_tiny_bert(tmp / "tiny-bert", DATA / "train.jsonl", seed=profile.seed))
        return folder, folder
    if profile.backbone == "bert-base-random":
        minilm = resolve(PROFILES["cpu-minilm"].backbone)
        folder = str(make_random_bert_base(tmp / "bert-base-random", minilm, seed=profile.seed))
        return folder, folder
    return profile.backbone, resolve(profile.backbone)


def run_system(system: str, spec: dict[str, Any], tmp: Path, log: Path) -> dict[str, Any]:
    """Run one system in a fresh subprocess and return its result, with the process-level figures added."""
    workdir = tmp / f"{system}-{spec['variant']['name']}-{spec['repeat']}"
    workdir.mkdir(parents=True)
    spec = {**spec, "workdir": str(workdir)}
    spec_file, result_file = workdir / "spec.json", workdir / "result.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        # Fresh caches for each run: both systems tokenize from scratch, neither reuses the other's work.
        "FTLIT_CACHE": str(workdir / "ftlit-cache"),
        "HF_DATASETS_CACHE": str(workdir / "hf-datasets"),
        # torch.compile's on-disk cache: a warm one from an earlier run would hide the compile time.
        "TORCHINDUCTOR_CACHE_DIR": str(workdir / "inductor-cache"),
        "BENCH_SPAWN_TIME": repr(time.time()),
    }
    if not spec["profile"]["needs_hub"]:
        env["HF_HUB_OFFLINE"] = "1"
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])  # torch's intra-op threads
    cmd = [sys.executable, str(SYSTEMS[system]), "--spec", str(spec_file), "--result", str(result_file)]
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{system} failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    result = json.loads(result_file.read_text())
    result["variant"] = spec["variant"]["name"]
    result["process_wall_s"] = wall
    result["loadavg_1m_before_after"] = [load_before[0], os.getloadavg()[0]]
    result["epoch_s_mean"] = statistics.fmean(result["epoch_s"])
    tokens_flops = model_flops(result["params"], 1) * result["train_tokens_per_s"]
    result["model_tflops_per_s"] = tokens_flops / 1e12
    peak = gpu_peak_flops(result["device_name"]) if spec["profile"]["device"] == "cuda" else None
    if peak:
        result["gpu_peak_flops"] = peak
        result["mfu"] = tokens_flops / peak
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-figure medians over repeated runs (lists are kept from the first run)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
    return out


def ratios(ftlit: dict[str, Any], trainer: dict[str, Any]) -> dict[str, float]:
    """ftlit / Trainer for every figure both report."""
    return {
        key: ftlit[key] / trainer[key]
        for key, *_ in ROWS
        if isinstance(ftlit.get(key), (int, float)) and isinstance(trainer.get(key), (int, float)) and trainer[key]
    }


def same_batches(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Per epoch, whether every run trained on batches of identical token counts in the same order."""
    per_epoch = zip(*(r["epoch_batch_digests"] for rs in runs.values() for r in rs), strict=True)
    return ", ".join("yes" if len(set(d)) == 1 else "no" for d in per_epoch)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per system, their ratios and the batch-order check, for the runs of one variant."""
    systems = {s: median_run(r) for s, r in runs.items()}
    return {
        "systems": systems,
        "ratios": ratios(systems["ftlit"], systems["trainer"]),
        "same_batches": same_batches(runs),
        "runs": runs,
    }


# Throughput by the wall clock, and by the process's CPU time (steadier when other work shares the cores).
RATES = ("train_samples_per_s", "train_samples_per_cpu_s")


def variant_report(v: Variant, runs: dict[str, list[dict[str, Any]]], default: dict[str, Any]) -> dict[str, Any]:
    """One variant's figures, plus each system's training throughput over its own default run's."""
    out: dict[str, Any] = {"settings": v.to_dict(), "ftlit_overrides": v.ftlit_overrides(), **summarize(runs)}
    out["speedup_vs_default"] = {s: {key: r[key] / default[s][key] for key in RATES} for s, r in out["systems"].items()}
    return out


def markdown(report: dict[str, Any]) -> str:
    """The result table, with the settings and the machine it was measured on; then the variants' table, if any."""
    f, t, r = report["systems"]["ftlit"], report["systems"]["trainer"], report["ratios"]
    s = report["settings"]
    length = f"{report['max_steps']} steps" if report["max_steps"] else f"{s['epochs']} epochs"
    lines = [
        f"### `{report['profile']}`: {s['description']}",
        "",
        f"{report['date']}, {report['machine']['summary']}; `{report['command']}`",
        f"({length}, batch {s['batch_size']}, max_length {s['max_length']}, lr {s['learning_rate']}, "
        f"seed {s['seed']}, {s['precision']}; median of {report['repeats']} run(s) per system; "
        f"1-min load average before/after each run: {report['machine']['loadavg_runs']}; "
        f"same batches in the same order, by epoch: {report['same_batches']})",
        "",
        "| | ftlit | Trainer | ftlit / Trainer |",
        "|---|---:|---:|---:|",
    ]
    for key, label, fmt, better in ROWS:
        if key not in f or key not in t:
            continue
        if key == "epoch_s_mean" and report["max_steps"]:
            continue  # a partial epoch: the training-loop row says it
        ratio = f"{r[key]:.2f}" + (f" ({better} is better)" if better and key in r else "") if key in r else "-"
        lines.append(f"| {label} | {fmt.format(f[key])} | {fmt.format(t[key])} | {ratio} |")
    if report.get("variants"):
        lines += ["", *variants_markdown(report)]
    return "\n".join(lines) + "\n"


# The variants' table, after the throughput columns: (column, figure, format); each cell shows ftlit / Trainer.
VARIANT_PAIRS: list[tuple[str, str, str]] = [
    ("train tokens/s (non-padding)", "train_tokens_per_s", "{:.0f}"),
    ("padding, share of tokens", "padding_share", "{:.0%}"),
    ("first (warm-up) step, s", "warmup_s", "{:.2f}"),
    ("median step, ms", "median_step_ms", "{:.1f}"),
    ("slowest later step, ms", "max_step_ms", "{:.0f}"),
    ("train loader alone, batches/s", "loader_batches_per_s", "{:.0f}"),
    ("final validation accuracy", "val_accuracy", "{:.3f}"),
]


def variants_markdown(report: dict[str, Any]) -> list[str]:
    """One row per variant (the default first): both systems' throughput, by the wall clock and per CPU second,
    their ratio, each one's speed-up over its own default run, and the figures that explain it."""
    ones = {key: 1.0 for key in RATES}
    rows = {"default": {**report, "speedup_vs_default": {"ftlit": ones, "trainer": ones}}, **report["variants"]}
    lines = [
        "#### Speed variants: each one runs both systems again with the option on",
        "",
        "Medians, warm-up step excluded. 'ftlit / Trainer' compares the two with the same option on; 'over default' "
        "is a system's throughput over its own default run above (wall clock / CPU time). Paired cells: "
        "ftlit / Trainer.",
        "",
        "| variant | train samples/s | ftlit / Trainer | train samples per CPU second | ftlit / Trainer, per CPU s "
        "| ftlit over default | Trainer over default | "
        + " | ".join(column for column, *_ in VARIANT_PAIRS)
        + " | ftlit's logged perf/first_step_seconds | same batches, by epoch |",
        "|---|" + "---:|" * (6 + len(VARIANT_PAIRS) + 1) + "---|",
    ]
    for name, v in rows.items():
        f, t, up = v["systems"]["ftlit"], v["systems"]["trainer"], v["speedup_vs_default"]
        cells = [f"`{name}`"]
        for key in RATES:
            cells += [f"{f[key]:.0f} / {t[key]:.0f}", f"{v['ratios'][key]:.2f}"]
        cells += [" / ".join(f"{up[system][key]:.2f}" for key in RATES) for system in ("ftlit", "trainer")]
        cells += [f"{fmt.format(f[key])} / {fmt.format(t[key])}" for _, key, fmt in VARIANT_PAIRS]
        cells += [f"{f['compile_first_step_s']:.1f}" if "compile_first_step_s" in f else "-", v["same_batches"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, v in report["variants"].items():
        setting = v["settings"]
        trainer = ", ".join(f"`{k}={val!r}`" for k, val in setting["trainer_args"].items())
        collator = ", ".join(f"`{k}={val!r}`" for k, val in setting["collator_args"].items())
        baseline = "; ".join(
            part
            for part in (trainer and f"`TrainingArguments`: {trainer}", collator and f"collator: {collator}")
            if part
        )
        lines.append(
            f"- `{name}`: {setting['description']}. ftlit: `{' '.join(v['ftlit_overrides'])}`; Trainer: {baseline}."
        )
    return lines


def machine(device: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the numbers come from, including the concurrent load seen around each run."""
    import torch
    import transformers

    cores = os.cpu_count()
    name = runs[0]["device_name"]
    loads = ", ".join(
        f"{run_label(r['system'], r['variant'])} {a:.1f}/{b:.1f}"
        for r in runs
        for a, b in [r["loadavg_1m_before_after"]]
    )
    gpu = name if device == "cuda" else "no GPU"
    try:
        import lightning

        lightning_version = lightning.__version__
    except ImportError:
        lightning_version = "?"
    return {
        "summary": f"{cores} CPU cores ({name if device == 'cpu' else platform.processor() or 'CPU'}), {gpu}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, lightning {lightning_version}, "
        f"{runs[0]['torch_threads']} torch threads",
        "cpu_cores": cores,
        "device_name": name,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning_version,
        "loadavg_runs": loads,
    }


def run_label(system: str, variant_name: str) -> str:
    """``ftlit``, or ``ftlit [group_by_length]`` for a variant's run."""
    return system if variant_name == DEFAULT_VARIANT.name else f"{system} [{variant_name}]"


def variant_arg(name: str) -> Variant:
    """``--variant``'s type: a name from ``bench_profiles.VARIANTS``, or several joined with ``+``."""
    try:
        return variant(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write its JSON and markdown; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES))
    parser.add_argument("--max-steps", type=int, default=None, help="train this many steps instead of the epochs")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where <name>.json/.md go")
    parser.add_argument("--name", default=None, help="file name of the results, without suffix (default: the profile)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per system (alternating order); medians")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in both (default: torch's)")
    parser.add_argument(
        "--variant",
        type=variant_arg,
        action="append",
        default=[],
        metavar="NAME",
        help=f"also run both systems with this speed option on, one row each (repeatable): {', '.join(VARIANTS)}; "
        "join names with + to combine them",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    name = args.name or profile.name
    if args.max_steps is not None and args.max_steps < 2:
        parser.error("--max-steps must be at least 2 (one warm-up step is reported apart)")
    if profile.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error(f"profile {profile.name} needs a CUDA GPU")
    variants = list({v.name: v for v in [DEFAULT_VARIANT, *args.variant]}.values())  # in order, each once
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    ensure_data()
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {v.name: {s: [] for s in SYSTEMS} for v in variants}
    with tempfile.TemporaryDirectory(prefix="ftlit-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ftlit_backbone, backbone_path = prepare_backbone(profile, tmp)
        base = {
            "profile": profile.to_dict(),
            "max_steps": args.max_steps,
            "ftlit_backbone": ftlit_backbone,
            "backbone_path": backbone_path,
            "train_file": str(DATA / "train.jsonl"),
            "validation_file": str(DATA / "validation.jsonl"),
            "threads": args.threads,
        }
        for repeat in range(args.repeats):
            order = list(SYSTEMS) if repeat % 2 == 0 else list(reversed(SYSTEMS))
            for v in variants:
                for system in order:
                    print(f"[{name}] run {repeat + 1}/{args.repeats}: {run_label(system, v.name)} ...", flush=True)
                    tag = "" if v is DEFAULT_VARIANT else f"-{v.name}"
                    log = logs / f"{name}{tag}-{system}-{repeat}.log"
                    result = run_system(system, {**base, "variant": v.to_dict(), "repeat": repeat}, tmp, log)
                    runs[v.name][system].append(result)
                    wall = result["process_wall_s"]
                    print(f"  {result['train_samples_per_s']:.1f} samples/s, {wall:.1f} s", flush=True)
    default = summarize(runs[DEFAULT_VARIANT.name])
    report: dict[str, Any] = {
        "profile": profile.name,
        "date": datetime.date.today().isoformat(),
        "command": command,
        "max_steps": args.max_steps,
        "repeats": args.repeats,
        "settings": profile.to_dict(),
        "machine": machine(profile.device, [r for rs in runs.values() for r_s in rs.values() for r in r_s]),
        "warmup": "rates exclude the first optimizer step (reported as warmup_s); *_incl_warmup include it",
        "ratios_are": "ftlit / Trainer",
        **default,  # systems, ratios, same_batches, runs: the profile as is
    }
    if len(variants) > 1:
        report["variants"] = {
            v.name: variant_report(v, runs[v.name], default["systems"]) for v in variants if v is not DEFAULT_VARIANT
        }
    table = markdown(report)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{name}.md").write_text(table)
    print(table)
    return report


if __name__ == "__main__":
    main()
