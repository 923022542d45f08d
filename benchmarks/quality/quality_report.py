"""The quality benchmark's table: ``run.py --summary`` reads the finished rows and writes ``<results>.md`` and
``<results>.json`` beside the rows' folder (``benchmarks/results/quality.md`` by default).

Per set x size x system: the seeds, the test score's mean ± sample sd, the worst seed, the failed seeds (ended at
the trivial model's score: ``quality_bench.is_failed``), the validation score, the second score, the mean wall
time and how many rows stopped at the time cap; against the Trainer on the same set and size: the difference of
the means in points, the ratio of the sds and of the wall times. A second table takes the mean over the 100- and
1,000-row sets (the issue's target for ftlit's default: 5 points above the Trainer, with at most half its sd).
"""

from __future__ import annotations

import datetime
import statistics
from pathlib import Path
from typing import Any

from quality_bench import PRIMARY, SECONDARY, SIZES, Row, is_failed, load_rows

SIZE_ORDER = {s: i for i, s in enumerate(SIZES)}


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def cells(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One cell per (set, size, system) of the finished rows, in set, size and system order (the Trainer first)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        row = Row(**r["row"])
        groups.setdefault((row.set, row.size, row.system), []).append(r)
    out = []
    for (name, size, system), group in groups.items():
        ok = sorted((r for r in group if r.get("status") == "ok"), key=lambda r: r["row"]["seed"])
        task = group[0]["task"]
        metric, second = PRIMARY[task], SECONDARY[task]
        skewed = any(r.get("baseline", {}).get("skewed") for r in ok)
        if task == "classification" and not skewed:
            second = None  # macro-F1 only where the classes are skewed
        test = [(r["row"]["seed"], r["test"].get(metric)) for r in ok]
        scored = [(seed, v) for seed, v in test if v is not None]
        worst = min(scored, key=lambda sv: sv[1]) if scored else None
        failed = [r["row"]["seed"] for r in ok if is_failed(task, r["test"], r["baseline"])]
        out.append(
            {
                "set": name,
                "size": size,
                "system": system,
                "task": task,
                "metric": metric,
                "second_metric": second,
                "train_rows": ok[0]["train_rows"] if ok else None,
                "seeds": [r["row"]["seed"] for r in ok],
                "errors": [r["row"]["seed"] for r in group if r.get("status") != "ok"],
                "test": stats([v for _, v in scored]),
                "val": stats([v for v in (r["val"].get(metric) for r in ok) if v is not None]),
                "test_second": stats([v for v in (r["test"].get(second) for r in ok) if v is not None])
                if second
                else None,
                "worst": {"seed": worst[0], "score": worst[1]} if worst else None,
                "failed_seeds": failed,
                "wall_s": stats([r["wall_s"] for r in ok]),
                "cap_hits": sum(bool(r.get("cap_hit")) for r in ok),
                "epochs": stats([float(r["epochs"]) for r in ok if r.get("epochs") is not None]),
                "steps": stats([float(r["steps"]) for r in ok if r.get("steps") is not None]),
            }
        )
    systems = sorted({c["system"] for c in out}, key=lambda s: (s != "trainer", s != "ftlit-default", s))
    out.sort(key=lambda c: (c["set"], SIZE_ORDER.get(c["size"], 9), systems.index(c["system"])))
    trainer = {(c["set"], c["size"]): c for c in out if c["system"] == "trainer"}
    for c in out:
        t = trainer.get((c["set"], c["size"]))
        if c["system"] == "trainer" or t is None or not c["test"] or not t["test"]:
            c["vs_trainer"] = None
            continue
        c["vs_trainer"] = {
            "test_points": 100 * (c["test"]["mean"] - t["test"]["mean"]),
            "sd_ratio": c["test"]["sd"] / t["test"]["sd"] if t["test"]["sd"] else None,
            "wall_ratio": c["wall_s"]["mean"] / t["wall_s"]["mean"] if c["wall_s"] and t["wall_s"] else None,
        }
    return out


def small_data(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system: the mean over the 100- and 1,000-row cells that the Trainer has too (the issue's target)."""
    trainer = {(c["set"], c["size"]): c for c in table if c["system"] == "trainer" and c["test"]}
    out = []
    for system in dict.fromkeys(c["system"] for c in table):
        mine = [c for c in table if c["system"] == system and c["size"] != "full" and c["test"]]
        mine = [c for c in mine if (c["set"], c["size"]) in trainer]
        if not mine:
            continue
        theirs = [trainer[(c["set"], c["size"])] for c in mine]
        mean = statistics.mean(c["test"]["mean"] for c in mine)
        base = statistics.mean(c["test"]["mean"] for c in theirs)
        sd = statistics.mean(c["test"]["sd"] for c in mine)
        base_sd = statistics.mean(c["test"]["sd"] for c in theirs)
        out.append(
            {
                "system": system,
                "cells": len(mine),
                "test_mean": mean,
                "vs_trainer_points": 100 * (mean - base),
                "mean_sd": sd,
                "sd_ratio": sd / base_sd if base_sd else None,
                "failed_seeds": sum(len(c["failed_seeds"]) for c in mine),
                "seeds": sum(len(c["seeds"]) for c in mine),
            }
        )
    return out


def pm(s: dict[str, float] | None, scale: float = 100.0, digits: int = 1) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{scale * s['mean']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['sd']:.{digits}f}"


def points(x: float | None) -> str:
    return "-" if x is None else f"{round(x, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def trainer_or(s: dict[str, Any], text: str) -> str:
    return "-" if s["system"] == "trainer" else text


def markdown(table: list[dict[str, Any]], small: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    models = sorted({r.get("model", "?") for r in records})
    errors = [r for r in records if r.get("status") != "ok"]
    lines = [
        "# Quality benchmark: the Trainer's defaults, ftlit's default and ftlit's recipes",
        "",
        f"Written {datetime.datetime.now():%Y-%m-%d %H:%M} by `python benchmarks/quality/run.py --summary` from "
        f"{len(records)} rows ({len(errors)} errors); model {', '.join(models)}, max_length 128. Scores in points "
        "(x100): accuracy (classification), Pearson (regression; Spearman second), micro-F1 (multi-label; macro "
        "second), entity F1 (NER); macro-F1 second for skewed classification sets. Mean ± sample sd over the seeds; "
        "*worst* is the lowest seed's test score; a seed *failed* when it ended within 1 point of the trivial model's "
        "score (majority class, constant labels, all-O) or, for regression, below 0.1 Pearson. Validation picks "
        "recipes; test is reported once. *Δ* is the difference of the test means against the Trainer's on the same "
        "set and size; *sd / T* and *wall / T* the ratios of the sds and of the mean wall times (one row's whole "
        "process: start-up, tokenization, fit, validation and test). *capped*: rows stopped by the time cap.",
        "",
        "| set | size | system | seeds | test | worst (seed) | failed | val | 2nd test score | Δ (pts) | sd / T "
        "| wall s | wall / T | epochs | capped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in table:
        v = c["vs_trainer"] or {}
        worst = f"{100 * c['worst']['score']:.1f} ({c['worst']['seed']})" if c["worst"] else "-"
        failed = ", ".join(map(str, c["failed_seeds"])) or "0"
        second = f"{c['second_metric']} {pm(c['test_second'])}" if c["second_metric"] else "-"
        delta = points(v["test_points"]) if v else "-"
        size = f"{c['size']} ({c['train_rows']})" if c["size"] == "full" and c["train_rows"] else c["size"]
        seeds = str(len(c["seeds"])) + (f" (+{len(c['errors'])} err)" if c["errors"] else "")
        epochs = f"{c['epochs']['mean']:.0f}" if c["epochs"] else "-"
        wall = f"{c['wall_s']['mean']:.0f}" if c["wall_s"] else "-"
        lines.append(
            f"| {c['set']} | {size} | {c['system']} | {seeds} | {pm(c['test'])} | {worst} | {failed} | {pm(c['val'])} "
            f"| {second} | {delta} | {ratio(v.get('sd_ratio'))} | {wall} "
            f"| {ratio(v.get('wall_ratio'))} | {epochs} | {c['cap_hits']} |"
        )
    if small:
        lines += [
            "",
            "## Small data (100 and 1,000 rows), mean over the cells the Trainer has too",
            "",
            "Target for ftlit's default: at least +5 points over the Trainer, with a mean sd at most half of its.",
            "",
            "| system | cells | test mean | Δ vs Trainer (pts) | mean sd | sd / Trainer's | failed seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in small:
            delta, sd = trainer_or(s, points(s["vs_trainer_points"])), trainer_or(s, ratio(s["sd_ratio"]))
            lines.append(
                f"| {s['system']} | {s['cells']} | {100 * s['test_mean']:.1f} | {delta} | {100 * s['mean_sd']:.1f} "
                f"| {sd} | {s['failed_seeds']} of {s['seeds']} |"
            )
    if errors:
        lines += ["", "## Rows that ended in an error (rerun: `--only ROW` or `--retry-errors`)", ""]
        lines += [f"- `{Row(**r['row']).id}`: {r.get('error', '?')}" for r in errors]
    return "\n".join(lines) + "\n"


def write_summary(results: Path, data: Any = None) -> Path:
    """Write ``<results>.md`` and ``<results>.json``; return the markdown's path."""
    from ftlit.core.results import write_json

    records = list(load_rows(results).values())
    table = cells(records)
    small = small_data(table)
    md = results.with_name(results.name + ".md")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(table, small, records))
    write_json(results.with_name(results.name + ".json"), {"cells": table, "small_data": small})
    return md
