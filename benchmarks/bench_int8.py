"""Prediction speed and accuracy of one fine-tuned model three ways: PyTorch fp32, ONNX fp32 and ONNX int8.

    python benchmarks/bench_int8.py --ckpt runs/quickstart/checkpoints/last.ckpt     # ~3 min on 2 CPUs

Exports the checkpoint with ``ftlit export --quantize int8`` (``model.onnx`` and ``model.int8.onnx``), then runs the
quickstart's test split (301 sentences) through transformers' ``AutoModelForSequenceClassification`` (under
``torch.inference_mode``) and through onnxruntime's CPU sessions of both ONNX files, at batch 1 and batch 32. The
batches are tokenized (padded per batch, ``max_length`` 64 as in training) before the clock starts: the times are
the models' alone; ``--sort-by-length`` batches the texts in order of length (as a batch job or ftlit serve's
grouped batches run them) instead of file order. Reports rows/s (median of ``--repeats`` passes), test accuracy,
and agreement with PyTorch's labels. Writes ``<out>/<name>.json`` and ``<out>/<name>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def passes(run, batches: list[dict[str, np.ndarray]], repeats: int) -> tuple[np.ndarray, float]:
    """The logits of every batch, and the median rows/s over ``repeats`` passes (after one warm-up pass)."""
    rows = sum(len(b["input_ids"]) for b in batches)
    logits = np.concatenate([run(b) for b in batches])
    speeds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            run(b)
        speeds.append(rows / (time.perf_counter() - start))
    return logits, statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="an ftlit checkpoint of the quickstart's classifier")
    parser.add_argument("--test-file", default=str(REPO / "data" / "quickstart" / "test.jsonl"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sort-by-length",
        action="store_true",
        help="batch the texts in order of length (less padding), not file order",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="int8-quickstart")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-int8")
    ns = parser.parse_args()

    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ftlit.commands.export import export

    folder = export(ns.ckpt, str(ns.work / "export"), overwrite=True, quantize="int8")
    rows = [json.loads(line) for line in Path(ns.test_file).read_text().splitlines() if line.strip()]
    texts = [r["text"] for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if ns.sort_by_length:  # as a batch job (or ftlit serve's grouped batches) would run them
        rows = sorted(rows, key=lambda r: len(tokenizer(r["text"])["input_ids"]))
        texts = [r["text"] for r in rows]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    label2id = model.config.label2id
    gold = np.array([label2id[str(r["label"])] for r in rows])
    sessions = {
        name: ort.InferenceSession(str(folder / file), providers=["CPUExecutionProvider"])
        for name, file in (("onnx fp32", "model.onnx"), ("onnx int8", "model.int8.onnx"))
    }
    names = [i.name for i in sessions["onnx fp32"].get_inputs()]

    def torch_run(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()

    results: list[dict[str, Any]] = []
    for size in (1, 32):
        batches = [
            {n: v.astype(np.int64) for n, v in tokenizer(
                texts[i : i + size], padding=True, truncation=True, max_length=64, return_tensors="np").items()
             if n in names}
            for i in range(0, len(texts), size)
        ]  # fmt: skip
        engines = {"pytorch fp32": torch_run}
        engines.update({k: (lambda b, s=s: s.run(None, b)[0]) for k, s in sessions.items()})
        reference = None
        for engine, run in engines.items():
            logits, speed = passes(run, batches, ns.repeats)
            labels = logits.argmax(-1)
            reference = labels if reference is None else reference
            results.append(
                {
                    "engine": engine,
                    "batch": size,
                    "rows_per_s": speed,
                    "test_acc": float((labels == gold).mean()),
                    "agreement_with_pytorch": float((labels == reference).mean()),
                }
            )
    sizes = {f: (folder / f).stat().st_size for f in ("model.safetensors", "model.onnx", "model.int8.onnx")}
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/bench_int8.py " + shlex.join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, CPU only, torch threads {torch.get_num_threads()}",
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "rows": len(rows),
        "sizes_bytes": sizes,
        "results": results,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{ns.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    base = {r["batch"]: r["rows_per_s"] for r in results if r["engine"] == "pytorch fp32"}
    lines = [
        f"# PyTorch fp32 vs ONNX fp32 vs ONNX int8: {len(rows)} quickstart test sentences",
        "",
        f"{result['date']}, `{result['command']}`, {result['machine']}; sizes: "
        + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items()),
        "",
        "| engine | batch | rows/s | / PyTorch | test accuracy | same label as PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['engine']} | {r['batch']} | {r['rows_per_s']:.0f} | {r['rows_per_s'] / base[r['batch']]:.2f}x | "
        f"{r['test_acc']:.4f} | {r['agreement_with_pytorch']:.1%} |"
        for r in results
    ]
    (ns.out / f"{ns.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
