"""HTTP load test of ``ftlit serve`` against the plain FastAPI server a user would write (``serve_baseline.py``).

    python benchmarks/bench_serve.py                                          # 4 systems x 3 levels: ~10 min on 2 CPUs
    python benchmarks/bench_serve.py --requests 16 --concurrency 1 8 --systems baseline --name serve-smoke  # ~1 min

The model is an exported folder of the quickstart's classifier (default ``runs/bench-int8/export``, as
``bench_int8.py`` leaves it). From scratch::

    ftlit fit --config configs/quickstart.yaml
    ftlit export --ckpt_path runs/quickstart/checkpoints/last.ckpt --out runs/quickstart/export --quantize int8
    python benchmarks/bench_serve.py --model runs/quickstart/export

Systems, each started as a subprocess on a free 127.0.0.1 port (``--threads N``: with
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` N; onnxruntime ignores these) and stopped with SIGTERM afterwards:

- ``baseline``: ``serve_baseline.py``: one ``transformers.pipeline`` called once per request in FastAPI's threadpool;
- ``ftlit``: ``python -m ftlit serve`` with dynamic batching (``--max_batch_size 32 --batch_timeout_ms 5``);
- ``ftlit-nobatch``: the same with ``--max_batch_size 1`` (batching off);
- ``ftlit-onnx``: ``--engine onnx`` (the folder's ``model.onnx``) with batching.

Each system gets one warm-up of 8 requests once ``GET /ready`` answers 200 (waiting at most 120 s). Then, at each
concurrency level, N workers share one ``httpx.AsyncClient`` (N connections, 60 s timeout) and pull from a fixed list
of ``--requests`` requests (at most 64 at concurrency 1), each ``POST /predict`` with one text, cycling through the
test texts (``--texts``, the quickstart's 301 test sentences); no new request starts after ``--time-cap`` seconds.
Reports throughput (successful requests over the level's wall time), p50/p95/p99 latency of the successful requests,
errors (non-200 answers, bodies without a label, exceptions), and the answers' accuracy against the texts' labels.
The load generator runs on the same machine as the server, in this process: both share its CPUs. Writes
``<out>/<name>.json`` and ``<out>/<name>.md``; the servers' output goes to ``<work>/<name>-<system>.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"  # servers are only ever started and stopped here
BATCHING = ["--max_batch_size", "32", "--batch_timeout_ms", "5"]
SYSTEMS: dict[str, list[str]] = {
    "baseline": [str(HERE / "serve_baseline.py")],
    "ftlit": ["-m", "ftlit", "serve", *BATCHING],
    "ftlit-nobatch": ["-m", "ftlit", "serve", "--max_batch_size", "1"],
    "ftlit-onnx": ["-m", "ftlit", "serve", "--engine", "onnx", *BATCHING],
}
WARMUP = 8
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS's pick for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_command(system: str, model: str, port: int) -> list[str]:
    """The command line that starts ``system`` serving ``model`` on 127.0.0.1:``port``."""
    return [sys.executable, *SYSTEMS[system], "--model", model, "--host", HOST, "--port", str(port)]


def start(command: list[str], log: Path, threads: int | None) -> subprocess.Popen:
    """Start a server in its own process group, its output to ``log``; ``threads``: its torch (OpenMP/MKL) threads."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> str:
    """SIGTERM the server, wait; SIGKILL its process group if it hangs. How it ended."""
    if process.poll() is not None:
        return f"had exited with {process.returncode}"
    process.send_signal(signal.SIGTERM)
    try:
        return f"exited with {process.wait(STOP_TIMEOUT_S)} after SIGTERM"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return f"hung {STOP_TIMEOUT_S:.0f} s after SIGTERM: killed"


def wait_ready(process: subprocess.Popen, base: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Poll ``GET /ready`` until it answers 200; the seconds that took. Raises if the server dies or times out."""
    start_time = time.perf_counter()
    with httpx.Client(timeout=5, trust_env=False) as client:
        while time.perf_counter() - start_time < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode} before /ready")
            try:
                if client.get(f"{base}/ready").status_code == 200:
                    return time.perf_counter() - start_time
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    raise RuntimeError(f"/ready did not answer 200 within {timeout:.0f} s")


def info(base: str) -> Any:
    """The server's ``GET /info`` (ftlit's: engine, labels, max_length), or None where it has none."""
    with httpx.Client(timeout=10, trust_env=False) as client:
        response = client.get(f"{base}/info")
    return response.json() if response.status_code == 200 else None


def label_of(body: Any) -> str | None:
    """The top label in a ``/predict`` answer for one text: ftlit's ``{"predictions": [...]}`` or the pipeline's
    list of ``{"label", "score"}`` (alone, or in a list of one); None if the body has neither shape."""
    if isinstance(body, list) and len(body) == 1 and isinstance(body[0], list):
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("predictions"), list) and len(body["predictions"]) == 1:
        prediction = body["predictions"][0]
        return prediction.get("label") if isinstance(prediction, dict) else None
    if isinstance(body, list) and body and all(isinstance(x, dict) and "label" in x and "score" in x for x in body):
        return max(body, key=lambda x: x["score"])["label"]
    return None


async def load(
    base: str, rows: list[dict[str, str]], concurrency: int, requests: int, time_cap: float
) -> dict[str, Any]:
    """``requests`` single-text ``POST /predict`` calls (cycling through ``rows``) from ``concurrency`` workers,
    none started after ``time_cap`` seconds; throughput, latency percentiles, errors and accuracy."""
    todo = iter(range(requests))
    latencies: list[float] = []
    errors: list[str] = []
    labels: dict[int, str] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient, deadline: float) -> None:
        while time.perf_counter() < deadline:
            i = next(todo, None)
            if i is None:
                return
            row = rows[i % len(rows)]
            sent = time.perf_counter()
            try:
                response = await client.post(f"{base}/predict", json={"text": row["text"]})
            except Exception as e:  # every failure counts as an error
                errors.append(f"{type(e).__name__}: {e}")
                continue
            elapsed = time.perf_counter() - sent
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                continue
            try:
                label = label_of(response.json())
            except ValueError:
                label = None
            if label is None:
                errors.append(f"unexpected body: {response.text[:200]}")
                continue
            latencies.append(elapsed)
            labels[i % len(rows)] = label

    async with httpx.AsyncClient(limits=limits, timeout=60, trust_env=False) as client:
        begin = time.perf_counter()
        await asyncio.gather(*(worker(client, begin + time_cap) for _ in range(concurrency)))
        seconds = time.perf_counter() - begin
    ms = np.array(latencies) * 1000
    right = [labels[j] == str(rows[j].get("label")) for j in labels]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "completed": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "capped": len(latencies) + len(errors) < requests,
        "seconds": seconds,
        "req_per_s": len(latencies) / seconds,
        **{f"p{q}_ms": float(np.percentile(ms, q)) if latencies else None for q in (50, 95, 99)},
        "mean_ms": float(ms.mean()) if latencies else None,
        "accuracy": sum(right) / len(right) if right else None,
        "labels": {str(j): v for j, v in sorted(labels.items())},
    }


def number(x: float | None) -> str:
    """``x`` rounded to a whole number, or "-" for None."""
    return "-" if x is None else f"{x:.0f}"


def bench(system: str, ns: argparse.Namespace, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Start one system, warm it up, load it at each concurrency, stop it."""
    port = free_port()
    command = server_command(system, ns.model, port)
    log = ns.work / f"{ns.name}-{system}.log"
    result: dict[str, Any] = {"system": system, "command": shlex.join(command), "log": str(log), "levels": []}
    result["load_average_before"] = os.getloadavg()
    process = start(command, log, ns.threads)
    base = f"http://{HOST}:{port}"
    try:
        result["ready_s"] = wait_ready(process, base)
        print(f"{system}: ready in {result['ready_s']:.1f} s", flush=True)
        result["info"] = info(base)
        warm = asyncio.run(load(base, rows, WARMUP, WARMUP, ns.time_cap))
        result["warmup"] = {k: warm[k] for k in ("completed", "errors", "error_samples", "seconds")}
        for concurrency in ns.concurrency:
            requests = min(ns.requests, 64) if concurrency == 1 else ns.requests
            level = asyncio.run(load(base, rows, concurrency, requests, ns.time_cap))
            level["load_average_after"] = os.getloadavg()
            result["levels"].append(level)
            print(
                f"{system} c={concurrency}: {level['completed']}/{requests} in {level['seconds']:.1f} s, "
                f"{level['req_per_s']:.1f} req/s, p50 {number(level['p50_ms'])} ms, p99 {number(level['p99_ms'])} ms, "
                f"errors {level['errors']}",
                flush=True,
            )
    except Exception as e:  # one system failing must not lose the others' numbers
        result["error"] = f"{type(e).__name__}: {e}"
        print(f"{system}: {result['error']}", flush=True)
    finally:
        result["stop"] = stop(process)
    result["log_tail"] = log.read_text(errors="replace").splitlines()[-15:]
    return result


def agreement(result: dict[str, Any], baseline: dict[str, Any] | None, concurrency: int) -> float | None:
    """Share of texts answered at ``concurrency`` by both systems that got the same label from both."""
    if baseline is None:
        return None
    mine = next((lv["labels"] for lv in result["levels"] if lv["concurrency"] == concurrency), {})
    theirs = {k: v for lv in baseline["levels"] for k, v in lv["labels"].items()}
    common = [k for k in mine if k in theirs]
    return sum(mine[k] == theirs[k] for k in common) / len(common) if common else None


def table(result: dict[str, Any]) -> str:
    """The markdown report: one table per concurrency level, a row per system."""
    runs = result["runs"]
    baseline = next((r for r in runs if r["system"] == "baseline" and r["levels"]), None)
    lines = [
        "# `ftlit serve` vs a plain FastAPI + `transformers.pipeline` server: single-text requests over HTTP",
        "",
        f"{result['date']}, `{result['command']}`; {result['machine']}; servers' OMP threads "
        f"{result['settings']['server_threads'] or 'default'}; load generator on the same CPUs. "
        f"Model `{result['settings']['model']}`, texts `{result['settings']['texts']}` "
        f"({result['settings']['texts_count']}).",
        "",
        "req/s: successful requests over the level's wall time; latency of the successful requests; accuracy: the "
        "answers' labels against the texts'; same as baseline: labels equal to the baseline's for the same texts.",
    ]
    for concurrency in result["settings"]["concurrency"]:
        base = next((lv for lv in baseline["levels"] if lv["concurrency"] == concurrency), None) if baseline else None
        lines += [
            "",
            f"## concurrency {concurrency}",
            "",
            "| system | done | req/s | / baseline | p50 ms | p95 ms | p99 ms | errors | accuracy | same as baseline |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            level = next((lv for lv in r["levels"] if lv["concurrency"] == concurrency), None)
            if level is None:
                lines.append(f"| {r['system']} | failed: {r.get('error', 'no result')} | | | | | | | | |")
                continue
            ratio = f"{level['req_per_s'] / base['req_per_s']:.2f}x" if base and base["req_per_s"] else "-"
            acc = f"{level['accuracy']:.3f}" if level["accuracy"] is not None else "-"
            same = agreement(r, baseline, concurrency)
            lines.append(
                f"| {r['system']} | {level['completed']}/{level['requests']}{' (capped)' if level['capped'] else ''} "
                f"| {level['req_per_s']:.1f} | {ratio} | {number(level['p50_ms'])} | {number(level['p95_ms'])} "
                f"| {number(level['p99_ms'])} | {level['errors']} | {acc} | {'-' if same is None else f'{same:.1%}'} |"
            )
    lines += [
        "",
        "Servers' start-up (process start to `/ready` 200), and the machine's 1-minute load average before each (it "
        "still holds the previous system's own load):",
    ]
    lines += [
        f"- {r['system']}: "
        + (f"{r['ready_s']:.1f} s" if "ready_s" in r else r.get("error", "-"))
        + f"; load {r['load_average_before'][0]:.1f}"
        for r in runs
    ]
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str | None]:
    """Installed versions of the packages the servers and the client use."""
    found: dict[str, str | None] = {}
    for package in ("torch", "transformers", "fastapi", "uvicorn", "onnxruntime", "httpx", "ftlit"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "runs" / "bench-int8" / "export"), help="an exported folder")
    parser.add_argument("--texts", default=str(REPO / "data" / "quickstart" / "test.jsonl"), help='{"text"} lines')
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=256, help="requests per level (at most 64 at concurrency 1)")
    parser.add_argument("--time-cap", type=float, default=120.0, help="no new request after this many s per level")
    parser.add_argument("--threads", type=int, default=None, help="servers' OMP/MKL threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="serve-quickstart")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-serve", help="servers' logs")
    ns = parser.parse_args()
    rows = [json.loads(line) for line in Path(ns.texts).read_text().splitlines() if line.strip()]
    ns.work.mkdir(parents=True, exist_ok=True)
    import torch

    cpu = platform.processor() or platform.machine()
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["python", "benchmarks/bench_serve.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, CPU only, torch threads "
        f"{torch.get_num_threads()}",
        "versions": versions(),
        "settings": {
            "model": ns.model,
            "texts": ns.texts,
            "texts_count": len(rows),
            "systems": ns.systems,
            "concurrency": ns.concurrency,
            "requests": ns.requests,
            "time_cap_s": ns.time_cap,
            "warmup": WARMUP,
            "server_threads": ns.threads,
        },
        "runs": [bench(system, ns, rows) for system in ns.systems],
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{ns.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (ns.out / f"{ns.name}.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
