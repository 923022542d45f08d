"""`ftlit serve`: a real HTTP server on a loopback port answers `ftlit predict`'s rows for every task, batches
concurrent requests without mixing them up, answers bad input with a 4xx JSON error and keeps serving, and drains
in-flight requests on SIGTERM."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from helpers import ner, qa
from helpers.browser import browser_missing, chromium
from helpers.onnx_graphs import LOG_ODDS_SHIFT, log_odds, shifted
from helpers.text import MULTI_LABEL, REGRESSION, read_jsonl, scored_rows, tagged_rows

from conftest import cli_args, command_error, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.commands.export import export
from ftlit.commands.serve import build, check_settings, main
from ftlit.serve import predictor as predictor_module
from ftlit.serve.predictor import Predictor, finite

FAST = ["--trainer.max_epochs=2", "--model.scheduler=constant", "--model.learning_rate=1e-2"]


def settings(model: str | Path, **overrides) -> dict:
    """`ftlit serve`'s settings for ``model``, its defaults but for ``overrides``."""
    values = {
        "model": str(model),
        "host": "127.0.0.1",
        "port": 0,
        "workers": 1,
        "max_batch_size": 32,
        "batch_timeout_ms": 5.0,
        "engine": "torch",
        "max_body_bytes": 1 << 20,
        "max_inputs": 64,
        "max_chars": 20_000,
        "api_key_env": None,
        "trust_remote_code": False,
        "drain_timeout_s": 30.0,
    }
    return check_settings({**values, **overrides})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model: str | Path, **overrides) -> Iterator[str]:
    """A real uvicorn server for ``model`` on a free loopback port, in a thread of this process; yields its URL."""
    app = build(settings(model, **overrides))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def fit_and_predict(root: Path, args: list[str]) -> tuple[Path, list[dict]]:
    """Fit, then `ftlit predict` with the last checkpoint: the checkpoint and predictions.jsonl's rows."""
    FtlitCLI(args=["fit", *args])
    FtlitCLI(args=["predict", *args, "--ckpt_path=last"])
    return root / "checkpoints" / "last.ckpt", read_jsonl(root / "predictions.jsonl")


def same(got, expected, where: str = "") -> None:
    """Equal rows, numbers to 1e-4 (requests are padded in other batches than predict's)."""
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-4), where
    elif isinstance(expected, dict):
        assert set(got) == set(expected), where
        for k in expected:
            same(got[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            same(g, e, f"{where}[{i}]")
    else:
        assert got == expected, where


# --- one run of each task -------------------------------------------------------------------------------------------


def text_task(tiny_bert: str, tmp: Path, make, rows_of, *flags: str) -> dict:
    data = {"train_file": str(write_jsonl(tmp / "train.jsonl", make(96, 0)))}
    inputs = [rows_of(r) for r in make(12, 9)]
    data["predict_file"] = str(write_jsonl(tmp / "predict.jsonl", inputs))
    root = tmp / "run"
    ckpt, rows = fit_and_predict(root, cli_args(tiny_bert, data, root, *FAST, *flags))
    return {"ckpt": ckpt, "inputs": inputs, "rows": rows}


def classification(tiny_bert, tmp):
    return text_task(tiny_bert, tmp, toy_rows, lambda r: {"text": r["text"]})


def pairs(tiny_bert, tmp):
    def make(n, seed):
        return [{"text": r["text"], "text_pair": p["text"], "label": r["label"]}
                for r, p in zip(toy_rows(n, seed), toy_rows(n, seed + 50), strict=True)]  # fmt: skip

    return text_task(tiny_bert, tmp, make, lambda r: {"text": r["text"], "text_pair": r["text_pair"]},
                     "--data.text_pair_column=text_pair")  # fmt: skip


def regression(tiny_bert, tmp):
    return text_task(tiny_bert, tmp, scored_rows, lambda r: {"text": r["text"]}, *REGRESSION,
                     "--data.label_column=score")  # fmt: skip


def multi_label(tiny_bert, tmp):
    return text_task(tiny_bert, tmp, tagged_rows, lambda r: {"text": r["text"]}, *MULTI_LABEL,
                     "--data.label_column=topics", "--model.threshold=0.3")  # fmt: skip


def named_entities(tiny_bert, tmp):
    texts = [" ".join(r["tokens"]) for r in ner.toy_ner_rows(10, 9)] + ["The  movie\tis GOODS and food service ."]
    inputs = [{"text": t} for t in texts]
    data = {
        "train_file": str(ner.write_conll(tmp / "train.conll", ner.toy_ner_rows(96, 0))),
        "predict_file": str(write_jsonl(tmp / "predict.jsonl", inputs)),
    }
    root = tmp / "run"
    ckpt, rows = fit_and_predict(root, ner.fit_args(tiny_bert, root, data,
                                                    "--trainer.max_epochs=2"))  # fmt: skip
    return {"ckpt": ckpt, "inputs": inputs, "rows": rows}


def questions(tiny_bert, tmp):
    asked = qa.toy_qa_rows(8, 9, words=(3, 40))
    inputs = [{"id": f"q{i}", "question": r["question"], "context": r["context"]} for i, r in enumerate(asked)]
    data = {
        "train_file": str(write_jsonl(tmp / "train.jsonl", qa.toy_qa_rows(96, 0, words=(3, 40)))),
        "predict_file": str(write_jsonl(tmp / "predict.jsonl", inputs)),
    }
    root = tmp / "run"
    ckpt, rows = fit_and_predict(root, qa.fit_args(tiny_bert, root, data,
                                                   "--trainer.max_epochs=2"))  # fmt: skip
    return {"ckpt": ckpt, "inputs": inputs, "rows": rows}


TASKS = {
    "classification": classification,
    "pairs": pairs,
    "regression": regression,
    "multi-label": multi_label,
    "ner": named_entities,
    "qa": questions,
}


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory) -> dict[str, dict]:
    """One fit + `ftlit predict` of every task, made when first asked for."""
    made: dict[str, dict] = {}

    class Runs(dict):
        def __missing__(self, task: str) -> dict:
            tmp = tmp_path_factory.mktemp(task)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("FTLIT_CACHE", str(tmp / "cache"))
                made[task] = TASKS[task](tiny_bert, tmp)
            self[task] = made[task]
            return made[task]

    return Runs()


def post(url: str, body, timeout: float = 60, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=body, timeout=timeout, **kwargs)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_serves_ftlit_predict_s_rows(runs, task, tmp_path):
    """From the checkpoint and from its export: all inputs in one request, and each alone, concurrently (so they
    are batched with each other), give predict's rows."""
    run = runs[task]
    folder = export(str(run["ckpt"]), str(tmp_path / "export"))
    for model in (run["ckpt"], folder):
        with serving(model, batch_timeout_ms=50) as url:
            answer = post(url, {"inputs": run["inputs"]})
            assert answer.status_code == 200, answer.text
            same(answer.json()["predictions"], run["rows"], task)
            with ThreadPoolExecutor(len(run["inputs"])) as pool:
                alone = list(pool.map(lambda row, u=url: post(u, row).json()["predictions"], run["inputs"]))
            same([rows[0] for rows in alone], run["rows"], task)
    # The comparison means something: predictions differ from input to input.
    assert len({json.dumps(r, sort_keys=True) for r in run["rows"]}) > 1


def test_rows_of_similar_length_run_together_and_come_back_in_order(runs, monkeypatch):
    predictor = Predictor.load(str(runs["classification"]["ckpt"]))
    short, long = "good", " ".join(["the movie was very good and the plot was quite lovely"] * 4)
    rows = [{"text": t} for t in [long, short, long + " .", short + " .", "bad", long + " , boring"]]
    with monkeypatch.context() as mp:
        mp.setattr(predictor_module, "PAD_RATIO", float("inf"))  # one batch, in request order
        ungrouped = predictor.predict(rows)
    batches: list[list[int]] = []
    collate = predictor.datamodule.collate

    def spy(features):
        batches.append(sorted(len(f["input_ids"]) for f in features))
        return collate(features)

    monkeypatch.setattr(predictor.datamodule, "collate", spy)
    same(predictor.predict(rows), ungrouped)
    # Two groups, not one batch padded to the longest: the short texts' and the long ones'.
    assert len(batches) == 2 and all(b[-1] <= predictor_module.PAD_RATIO * b[0] for b in batches), batches
    assert len({r["probs"][1] for r in ungrouped}) > 2  # the order check means something


def test_the_onnx_engines_serve_the_exported_graphs(runs, tmp_path):
    """The answers are PyTorch's (int8: nearly), and onnxruntime gave them: the same folder with its graphs' classifier
    bias moved (its model.safetensors is not) answers with every row's log-odds moved by exactly that much."""
    pytest.importorskip("onnxruntime")
    run = runs["classification"]
    folder = export(str(run["ckpt"]), str(tmp_path / "export"), quantize="int8")
    moved = Path(shutil.copytree(folder, tmp_path / "moved"))
    for name in ("model.onnx", "model.int8.onnx"):
        shifted(folder / name, moved / name)
    answers = {}
    for model, engine in itertools.product((folder, moved), ("onnx", "onnx-int8")):
        with serving(model, engine=engine) as url:
            assert httpx.get(f"{url}/info").json()["engine"] == engine
            answer = post(url, {"inputs": run["inputs"]})
            assert answer.status_code == 200, answer.text
            answers[model.name, engine] = answer.json()["predictions"]
    same(answers["export", "onnx"], run["rows"])
    agree = [a["label"] == r["label"] for a, r in zip(answers["export", "onnx-int8"], run["rows"], strict=True)]
    assert sum(agree) >= len(agree) - 1, answers  # int8: near, not equal
    for engine in ("onnx", "onnx-int8"):
        for row, before in zip(answers["moved", engine], answers["export", engine], strict=True):
            assert log_odds(row["probs"]) - log_odds(before["probs"]) == pytest.approx(LOG_ODDS_SHIFT, abs=1e-3), engine


def test_two_hundred_concurrent_requests_each_get_their_own_answer(runs):
    """Distinct inputs from 200 concurrent requests: nothing lost, nothing swapped between batched requests, and
    the server did batch them (fewer batches than requests)."""
    run = runs["classification"]
    texts = [f"{r['text']} {' '.join(['good'] * (i % 7))} {'bad ' * (i % 5)}" for i, r in enumerate(toy_rows(200, 3))]
    with serving(run["ckpt"], max_batch_size=16, batch_timeout_ms=20) as url:
        expected = post(url, {"inputs": [{"text": t} for t in texts[:64]]}).json()["predictions"]
        expected += post(url, {"inputs": [{"text": t} for t in texts[64:128]]}).json()["predictions"]
        expected += post(url, {"inputs": [{"text": t} for t in texts[128:192]]}).json()["predictions"]
        expected += post(url, {"inputs": [{"text": t} for t in texts[192:]]}).json()["predictions"]
        before = httpx.get(f"{url}/ready").json()["batches"]
        client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=200))
        with client, ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(lambda t: client.post(f"{url}/predict", json={"text": t}), texts))
        batches = httpx.get(f"{url}/ready").json()["batches"] - before
    assert [a.status_code for a in answers] == [200] * 200
    same([a.json()["predictions"][0] for a in answers], expected)
    assert len({round(e["probs"][1], 6) for e in expected}) > 20  # distinct answers: a swap would show
    assert batches < 200, batches
    # --max_batch_size 1: every request is its own batch.
    with serving(run["ckpt"], max_batch_size=1, batch_timeout_ms=20) as url, ThreadPoolExecutor(8) as pool:
        alone = list(pool.map(lambda t: post(url, {"text": t}).json()["predictions"][0], texts[:8]))
        assert httpx.get(f"{url}/ready").json()["batches"] == 8
    same(alone, expected[:8])


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_requests_get_a_4xx_json_error_and_the_server_goes_on(runs):
    """Each bad request is one line naming its field (Ludwig's server answers schema errors with a traceback or a
    500: ludwig#2727), and the next good request is answered."""
    run = runs["classification"]
    good = {"text": "a good movie"}
    with serving(run["ckpt"], max_body_bytes=2000, max_inputs=4, max_chars=300) as url:
        cases = [
            (b"{not json", 400, "body: not valid JSON"),
            (b"\xff\xfe", 400, "body: not valid JSON"),
            (json.dumps([good]).encode(), 422, "body: a JSON list"),
            (json.dumps({"txt": "a good movie"}).encode(), 422, "txt: no such field"),
            (json.dumps({}).encode(), 422, "text: Field required"),
            (json.dumps({"text": 3}).encode(), 422, "text: Input should be a valid string"),
            (json.dumps({"text": None}).encode(), 422, "text: Input should be a valid string"),
            (json.dumps({"text": "   "}).encode(), 422, "text: row 0 of the predict split has no text"),
            (json.dumps({"text": "x" * 301}).encode(), 422, "text: String should have at most 300 characters"),
            (json.dumps({"inputs": []}).encode(), 422, "inputs: List should have at least 1 item"),
            (json.dumps({"inputs": [good, {"text": 1}]}).encode(), 422, "inputs.1.text: Input should be a valid"),
            (json.dumps({"inputs": [good] * 5}).encode(), 413, "inputs: 5 inputs, more than 4 per request"),
            (json.dumps({"text": "good " * 500}).encode(), 413, "body: 2512 bytes, more than the server's limit"),
        ]
        for body, status, message in cases:
            answer = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == status, (body[:40], answer.text)
            assert answer.json()["error"].startswith(message), (body[:40], answer.text)
            assert "\n" not in answer.json()["error"]
            # ... and the server still answers correctly.
            assert post(url, good).json()["predictions"][0]["label"] in ("neg", "pos")
        # A body that hides its size (chunked, no Content-Length) is cut off at the limit too.
        chunks = iter([b'{"text": "', b"good " * 450, b'"}'])
        answer = httpx.post(f"{url}/predict", content=chunks, headers={"content-type": "application/json"})
        assert answer.status_code == 413 and answer.json()["field"] == "body"
        assert httpx.get(f"{url}/nowhere").status_code == 404
        assert httpx.get(f"{url}/predict").json()["error"] == "Method Not Allowed"


def test_texts_longer_than_max_length_are_cut_as_in_training_and_said_so(runs):
    run = runs["classification"]
    with serving(run["ckpt"]) as url:
        answer = post(url, {"inputs": [{"text": "good"}, {"text": "good movie " * 100}]}).json()
    assert answer["truncated"] == [1]


def test_nan_and_infinity_are_never_written_as_json(runs):
    """A model gone bad (NaN weights) is answered with nulls, in JSON any client parses, not NaN or a 500 (Ludwig's
    server crashes on NaN in its output: ludwig#3751)."""
    import torch

    run = runs["classification"]
    app = build(settings(run["ckpt"]))
    predictor = app.state.batcher.predict.__self__
    with torch.no_grad():
        predictor.module.model.classifier.weight.fill_(float("nan"))
    rows = predictor.predict([{"text": "good"}])
    assert rows == [{"label": rows[0]["label"], "score": None, "probs": [None, None]}]
    assert finite({"a": [1.0, float("inf"), {"b": -math.inf}], "c": "nan"}) == {"a": [1.0, None, {"b": None}],
                                                                                 "c": "nan"}  # fmt: skip


def test_an_api_key_is_needed_for_everything_but_health(runs, monkeypatch):
    monkeypatch.setenv("FTLIT_TEST_KEY", "s3cret")
    with serving(runs["classification"]["ckpt"], api_key_env="FTLIT_TEST_KEY") as url:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer s3cre"}):
            answer = post(url, {"text": "good"}, headers=headers)
            assert answer.status_code == 401 and answer.json()["field"] == "api_key", headers
        assert httpx.get(f"{url}/info").status_code == 401
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        for headers in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
            assert post(url, {"text": "good"}, headers=headers).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/ready").status_code == 200


def test_explain_gives_word_attributions_where_the_task_has_them(runs):
    pytest.importorskip("captum")
    with serving(runs["classification"]["ckpt"]) as url:
        assert httpx.get(f"{url}/info").json()["explain"] is True
        answer = httpx.post(f"{url}/explain", json={"text": "a lovely film"}, timeout=60).json()["explanations"]
        refused = httpx.post(f"{url}/explain", json={"text": 1})
        predicted = post(url, {"text": "a lovely film"}).json()["predictions"][0]
    [entry] = answer
    assert [w["word"] for w in entry["words"]] == ["a", "lovely", "film"] and entry["predicted"] == predicted["label"]
    assert refused.status_code == 422 and refused.json()["field"] == "text"
    with serving(runs["regression"]["ckpt"]) as url:
        assert httpx.get(f"{url}/info").json()["explain"] is False
        assert httpx.post(f"{url}/explain", json={"text": "good"}).status_code == 404


def test_the_schema_names_the_task_s_real_fields(runs):
    """Ludwig's schema lacks them (ludwig#1681): here the request and response fields are the task's own."""
    with serving(runs["pairs"]["ckpt"]) as url:
        schema = httpx.get(f"{url}/openapi.json").json()
        info = httpx.get(f"{url}/info").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    one = body["anyOf"][0]
    assert set(one["properties"]) == {"text", "text_pair"} and set(one["required"]) == {"text", "text_pair"}
    assert one["additionalProperties"] is False
    answer = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    rows = schema["components"]["schemas"][answer["$ref"].rsplit("/", 1)[1]]["properties"]["predictions"]
    assert set(schema["components"]["schemas"][rows["items"]["$ref"].rsplit("/", 1)[1]]["properties"]) == {
        "label", "score", "probs"}  # fmt: skip
    assert info["inputs"] == {"text": True, "text_pair": True} and info["labels"] == ["neg", "pos"]


def test_bad_settings_are_one_line_before_any_work(runs, tmp_path, capsys, monkeypatch):
    ckpt = runs["classification"]["ckpt"]
    folder = export(str(ckpt), str(tmp_path / "export"))
    not_a_model = tmp_path / "notes.ckpt"
    not_a_model.write_text("hello")
    monkeypatch.delenv("FTLIT_UNSET_KEY", raising=False)
    capsys.readouterr()  # the export's own output
    cases = {
        (str(tmp_path / "nothing"),): "ftlit: error: model: '{}' does not exist",
        (str(not_a_model),): "ftlit: error: model: '{}' is not a readable checkpoint",
        (str(ckpt), "--engine", "tpu"): "ftlit: error: engine: 'tpu' is not an engine",
        (str(ckpt), "--engine", "onnx"): "ftlit: error: engine: onnx runs an exported folder's model.onnx",
        (str(folder), "--engine", "onnx-int8"): "ftlit: error: engine: '{}' has no model.int8.onnx",
        (str(ckpt), "--max_batch_size", "0"): "ftlit: error: max_batch_size: must be a whole number of at least 1",
        (str(ckpt), "--batch_timeout_ms", "-1"): "ftlit: error: batch_timeout_ms: must be 0 or more",
        (str(ckpt), "--port", "70000"): "ftlit: error: port: must be in [0, 65535]",
        (str(ckpt), "--api_key_env", "FTLIT_UNSET_KEY"): "ftlit: error: api_key_env: $FTLIT_UNSET_KEY is not set",
    }
    for (model, *rest), message in cases.items():
        assert command_error(main, ["--model", model, *rest], capsys).startswith(message.format(model)), rest
    # An export's ftlit.json is data: a damaged one, or one naming a class that is not ftlit's, is refused.
    spec = json.loads((folder / "ftlit.json").read_text())
    for bad, message in (
        ("{not json", "model: '{}/ftlit.json' is damaged: export the checkpoint again"),
        (json.dumps({**spec, "task": "subprocess.Popen"}),
         "model: names subprocess.Popen, which is not an ftlit task model importable here"),
        (json.dumps({**spec, "data": {**spec["data"], "class_path": "builtins.type"}}),
         "model: names data module builtins.type, which is not ftlit's"),
    ):  # fmt: skip
        (folder / "ftlit.json").write_text(bad)
        assert command_error(main, ["--model", str(folder)], capsys) == f"ftlit: error: {message.format(folder)}"
    # A plain transformers folder of a model with no task head is refused by name.
    from conftest import make_tiny_bert

    bare = make_tiny_bert(tmp_path / "bare")
    capsys.readouterr()
    assert "model: the folder holds a BertModel" in command_error(main, ["--model", str(bare)], capsys)


# --- the process: SIGTERM, workers, the page ------------------------------------------------------------------------


def start(*args: str) -> tuple[subprocess.Popen, str]:
    """`ftlit serve` in its own process on a free loopback port, once it answers /ready."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "ftlit", "serve", *args, "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # workers import and load the model each: slow on a busy machine
    try:
        while True:
            assert process.poll() is None, process.stdout.read()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    return process, url
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
    except BaseException:
        process.kill()
        raise


def wait_for(condition, what: str, cap: float = 120) -> None:
    """Poll until ``condition()`` holds; fail only if it never does within a generous ``cap`` (a busy machine is
    slow, not wrong)."""
    deadline = time.monotonic() + cap
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {cap} s"
        time.sleep(0.05)


def ready(url: str) -> dict:
    return httpx.get(f"{url}/ready", timeout=60).json()


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError:
        return True
    return False


def read_head(sock: socket.socket) -> bytes:
    """The status line and headers of the next response on ``sock``."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"the server closed the connection after {head!r}"
        head += chunk
    return head


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(runs):
    """Requests waiting in a batch when SIGTERM comes are answered, and so is one whose body was still on its way;
    then the process ends by itself with code 0.

    Events, never timings: the batch waits for its 17th row (its time limit is far longer than the test), which
    comes from a request the server was already reading (Expect: 100-continue, answered once the handler reads the
    body) and whose body is sent only after the server stopped accepting connections, i.e. once it is draining.
    """
    run = runs["classification"]
    process, url = start("--model", str(run["ckpt"]), "--batch_timeout_ms", "600000", "--max_batch_size", "17")
    pool = ThreadPoolExecutor(16)
    late = socket.socket()
    try:
        late.settimeout(120)
        late.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        body = json.dumps({"text": "good movie 16"}).encode()
        late.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))  # fmt: skip
        assert read_head(late).startswith(b"HTTP/1.1 100 ")  # the handler is reading the body
        answers = [pool.submit(post, url, {"text": f"good movie {i}"}, timeout=600) for i in range(16)]
        wait_for(lambda: ready(url)["waiting"] == 16, "16 requests waiting for their batch")
        assert ready(url) == {"status": "ready", "batches": 0, "waiting": 16}
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: refuses_connections(url), "the server stops accepting connections after SIGTERM")
        assert process.poll() is None  # draining: the 16 are still waiting
        late.sendall(body)
        assert read_head(late).startswith(b"HTTP/1.1 200 ")
        assert [a.result().status_code for a in answers] == [200] * 16
        assert process.wait(120) == 0
    finally:
        late.close()
        process.kill()
        pool.shutdown()  # after the kill: a request still waiting ends with the process
    output = process.stdout.read()
    assert "Finished server process" in output, output


def test_drain_timeout_bounds_how_long_a_stop_waits(runs):
    """--drain_timeout_s: a request still waiting for its batch when the drain time is up is dropped, and the
    process ends by itself instead of after the batch (whose wait, 10 minutes, is far longer than the cap here)."""
    process, url = start("--model", str(runs["classification"]["ckpt"]), "--batch_timeout_ms", "600000",
                         "--max_batch_size", "64", "--drain_timeout_s", "0.5")  # fmt: skip
    pool = ThreadPoolExecutor(1)
    try:
        answer = pool.submit(post, url, {"text": "good"}, timeout=600)
        wait_for(lambda: ready(url)["waiting"] == 1, "the request waiting for its batch")
        process.send_signal(signal.SIGTERM)
        code = process.wait(300)  # raises if the process waits for the batch instead
        with pytest.raises(httpx.HTTPError):
            answer.result().raise_for_status()
    finally:
        process.kill()
        pool.shutdown()
    output = process.stdout.read()
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in output, output
    assert code == 0, output


def test_workers_serve_from_several_processes(runs):
    process, url = start("--model", str(runs["classification"]["ckpt"]), "--workers", "2")
    try:
        answers = [post(url, {"text": "good"}).json() for _ in range(8)]
        assert all(a == answers[0] for a in answers)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    output = process.stdout.read()
    assert output.count("Application startup complete") == 2, output


def test_the_page_works_in_a_real_browser(runs):
    reason = browser_missing()
    if reason is not None:
        pytest.skip(f"needs a headless browser: {reason}")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with serving(runs["ner"]["ckpt"], max_chars=50) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(url, wait_until="networkidle")
            assert page.title() == "ftlit serve"
            page.fill("#field-text", "the food service was good")
            page.click("#submit")
            page.wait_for_selector("#result pre", timeout=30_000)
            page.wait_for_selector("#words span", timeout=60_000)  # the word attributions (extra explain)
            words = page.eval_on_selector_all("#words p:nth-of-type(2) span", "spans => spans.map(s => s.textContent)")
            # Spaces only where the text has them (none between Chinese characters), so English reads as typed.
            sentence = page.inner_text("#words p:nth-of-type(2)")  # "<entity> [TYPE]: " then the words
            shown = page.inner_text("#result")
            row = json.loads(page.inner_text("#result pre"))
            heading = page.inner_text("#title")
            clean = list(errors)
            page.fill("#field-text", "good " * 11)
            page.click("#submit")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
            error = page.inner_text("#error")
        finally:
            browser.close()
        expected = post(url, {"text": "the food service was good"}).json()["predictions"][0]
    assert clean == []
    assert words == ["the", "food", "service", "was", "good"] and sentence.endswith(": the food service was good")
    # The refused input's 422 is the only thing the console reports afterwards.
    assert [e for e in errors[len(clean) :] if "status of 422" not in e] == []
    assert row == expected
    assert heading == "ftlit: named-entity recognition"
    assert shown.startswith("Prediction: ") and '"entities"' in shown
    assert error == "text: String should have at most 50 characters"


def test_a_model_s_own_code_runs_only_with_trust_remote_code(custom_code_bert, toy_data, tmp_path, capsys):
    root = tmp_path / "run"
    FtlitCLI(args=["fit", *cli_args(custom_code_bert, toy_data, root, "--model.trust_remote_code=true",
                                    "--trainer.max_epochs=1")])  # fmt: skip
    ckpt = root / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    error = command_error(main, ["--model", str(ckpt)], capsys)  # the checkpoint's own setting is not used
    assert error.startswith("ftlit: error: ") and "trust_remote_code" in error, error
    app = build(settings(ckpt, trust_remote_code=True))
    model = app.state.batcher.predict.__self__.module.model
    assert type(model).__name__ == "CustomBertForSequenceClassification" and model.ran_custom_code
