"""`ftlit export`: a checkpoint becomes a Hugging Face folder that transformers loads offline, with the same outputs."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.onnx_graphs import LOG_ODDS_SHIFT, log_odds, shifted
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

from conftest import cli_args, cli_error, make_tiny_bert, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.commands import export as export_module
from ftlit.commands.export import export, main
from ftlit.errors import ConfigError

# Texts of different lengths, so ftlit's padded batches and the pipeline's single rows are compared.
TEXTS = [r["text"] for r in toy_rows(10, 7)] + ["good", "the plot was boring", "a very lovely and superb movie ."]

# Only the adapters and the head train: LoRA needs a longer, faster fit for outputs that vary by text.
LORA_FIT = ["--trainer.max_epochs=4", "--model.learning_rate=3e-2"]


def fit_and_predict(backbone: str, data: dict[str, str], root: Path, *extra: str) -> list[dict]:
    """Fit briefly, then `ftlit predict --ckpt_path last` on TEXTS; return predictions.jsonl's rows.

    A high constant learning rate, so that two epochs give outputs that clearly vary by text.
    """
    predict = write_jsonl(root.parent / f"{root.name}-predict.jsonl", [{"text": t} for t in TEXTS])
    fast = ["--trainer.max_epochs=2", "--model.scheduler=constant", "--model.learning_rate=1e-2"]
    args = cli_args(backbone, {**data, "predict_file": str(predict)}, root, *fast, *extra)
    FtlitCLI(args=["fit", *args])
    FtlitCLI(args=["predict", *args, "--ckpt_path=last"])
    return [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]


def assert_pipeline_matches(folder: Path, predictions: list[dict]) -> None:
    """transformers' own pipeline on the exported folder gives ftlit's labels and probabilities."""
    classify = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
    for text, expected, got in zip(TEXTS, predictions, classify(TEXTS), strict=True):
        probs = {row["label"]: row["score"] for row in got}
        assert max(probs, key=probs.get) == expected["label"], text
        assert [probs["neg"], probs["pos"]] == pytest.approx(expected["probs"], abs=1e-4), text
    # The comparison means something: outputs differ by text, and are far enough from 0.5 that a swapped
    # id2label would fail it.
    pos = [p["probs"][1] for p in predictions]
    assert max(pos) - min(pos) > 0.05 and min(abs(p - 0.5) for p in pos) > 1e-3, pos


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> dict:
    """One fit shared by the tests below, from a copy of the tiny model that is deleted before any export."""
    tmp = tmp_path_factory.mktemp("export")
    model_dir = Path(shutil.copytree(tiny_bert, tmp / "model-to-delete"))
    data = {  # the rows of conftest's toy_data, which is per test: this fixture is per module
        "train_file": str(write_jsonl(tmp / "train.jsonl", toy_rows(96, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_rows(40, 1))),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLIT_CACHE", str(tmp / "cache"))
        predictions = fit_and_predict(str(model_dir), data, tmp / "run")
    shutil.rmtree(model_dir)
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    out = export(str(ckpt), str(tmp / "hf"))
    return {"ckpt": ckpt, "out": out, "predictions": predictions, "model_dir": model_dir, "tmp": tmp, "data": data}


def test_pipeline_loads_the_export_offline_and_matches_ftlit_predictions(trained):
    assert not trained["model_dir"].exists()  # the original backbone folder is gone: all came from the checkpoint
    assert_pipeline_matches(trained["out"], trained["predictions"])


def test_folder_has_safetensors_only_and_the_label_names(trained):
    out = trained["out"]
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "config.json" in files
    assert "pytorch_model.bin" not in files and not any(name.endswith(".bin") for name in files)
    assert {"tokenizer.json", "tokenizer_config.json"} <= files
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == {0: "neg", 1: "pos"}
    assert config.label2id == {"neg": 0, "pos": 1}
    assert config.architectures == ["BertForSequenceClassification"]
    # No leftovers of the atomic write beside the folder.
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_every_exported_file_is_readable_by_other_users_as_the_umask_allows(trained):
    # transformers 5 writes model.safetensors 0600: a server or container running as another user could not load it.
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in trained["out"].iterdir() if p.is_file()}
    assert "model.safetensors" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_exported_weights_equal_the_checkpoint(trained):
    state = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    saved = load_file(trained["out"] / "model.safetensors")
    expected = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    assert set(saved) <= set(expected)
    for key, value in saved.items():
        assert torch.equal(value, expected[key]), key


def test_lora_export_is_a_plain_merged_model(tiny_bert, toy_data, tmp_path):
    pytest.importorskip("peft")
    root = tmp_path / "run"
    predictions = fit_and_predict(tiny_bert, toy_data, root, "--model.lora_rank=4", *LORA_FIT)
    out = export(str(root / "checkpoints" / "last.ckpt"), str(tmp_path / "hf"))

    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and not {"adapter_config.json", "adapter_model.safetensors"} & files
    saved = load_file(out / "model.safetensors")
    assert not [k for k in saved if "lora_" in k or "base_layer" in k or "modules_to_save" in k]
    plain = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(out))
    assert set(saved) == set(plain.state_dict())
    # The adapters were folded in: the merged query weights moved away from the pretrained ones.
    query = "bert.encoder.layer.0.attention.self.query.weight"
    pretrained = load_file(Path(tiny_bert) / "model.safetensors")
    assert not torch.equal(saved[query], pretrained[query.removeprefix("bert.")])
    assert_pipeline_matches(out, predictions)


def test_dropped_layers_export_a_smaller_model_that_plain_transformers_loads(tmp_path, toy_data):
    deep = make_tiny_bert(tmp_path / "bert-4", layers=4)
    root = tmp_path / "run"
    # Trained, resumed-from and predicted with the layers dropped ("Poor Man's BERT": every other layer).
    predictions = fit_and_predict(str(deep), toy_data, root, "--model.keep_layers=[1, 3]")
    out = export(str(root / "checkpoints" / "last.ckpt"), str(tmp_path / "hf"))
    config = AutoConfig.from_pretrained(out)
    assert config.num_hidden_layers == 2
    saved = load_file(out / "model.safetensors")
    assert {k.split(".")[3] for k in saved if k.startswith("bert.encoder.layer.")} == {"0", "1"}
    # Layer 0 of the export started as layer 1 of the backbone: the kept layers, not the bottom two.
    start = load_file(deep / "model.safetensors")
    ffn = "encoder.layer.{}.output.dense.weight"
    before = [torch.dist(saved["bert." + ffn.format(0)], start[ffn.format(i)]).item() for i in range(4)]
    assert min(range(4), key=before.__getitem__) == 1, before
    assert_pipeline_matches(out, predictions)


def test_pruned_heads_export_at_full_width_with_zeros_and_onnx_stays_narrow(tmp_path, toy_data):
    wide = make_tiny_bert(tmp_path / "bert-4-heads", heads=4)
    root = tmp_path / "run"
    # Trained, and predicted from its checkpoint (rebuilt narrow), with 3 of 8 heads removed.
    predictions = fit_and_predict(str(wide), toy_data, root, "--model.prune_heads={0: [1, 3], 1: [0]}")
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert ckpt["model.bert.encoder.layer.0.attention.self.query.weight"].shape == (16, 32)
    assert ckpt["model.bert.encoder.layer.1.attention.output.dense.weight"].shape == (32, 24)
    onnx = find_spec("onnxruntime") is not None and find_spec("onnxscript") is not None
    out = export(str(root / "checkpoints" / "last.ckpt"), str(tmp_path / "hf"), onnx=onnx)
    saved = load_file(out / "model.safetensors")
    dense = "bert.encoder.layer.{}.attention.output.dense.weight"
    zero = [
        [bool((saved[dense.format(layer)][:, h * 8 : (h + 1) * 8] == 0).all()) for h in range(4)] for layer in (0, 1)
    ]
    assert zero == [[False, True, False, True], [True, False, False, False]]
    assert_pipeline_matches(out, predictions)
    if onnx:
        import onnx as onnx_lib
        import onnxruntime as ort

        graph = onnx_lib.load(str(out / "model.onnx")).graph
        assert sum(int(np.prod(t.dims)) for t in graph.initializer) < sum(v.numel() for v in saved.values())
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        enc = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="np")
        (logits,) = session.run(["logits"], {i.name: enc[i.name] for i in session.get_inputs()})
        probs = torch.from_numpy(logits).softmax(-1)
        assert torch.allclose(probs, torch.tensor([p["probs"] for p in predictions]), atol=1e-4)


def test_onnx_export_matches_ftlit_predictions(trained, tiny_bert):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = export(str(trained["ckpt"]), str(trained["tmp"] / "onnx"), quantize="int8")  # int8 implies onnx
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    expected = [p["probs"] for p in trained["predictions"]]
    # One padded batch of all texts, then batches of one: batch and sequence axes are both dynamic.
    batches = [list(range(len(TEXTS)))] + [[i] for i in range(3)]
    for rows in batches:
        enc = tokenizer([TEXTS[i] for i in rows], padding=True, return_tensors="np")
        (logits,) = session.run(["logits"], {n: enc[n] for n in names})
        probs = torch.from_numpy(logits).softmax(-1).tolist()
        for i, got in zip(rows, probs, strict=True):
            assert got == pytest.approx(expected[i], abs=1e-4), TEXTS[i]
    # The plain export files are there too.
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    # The int8 model beside it: its matrix products run on int8 weights, with the same predictions on these texts.
    import onnx

    from ftlit.commands.export import feed_forward_outputs

    graph = onnx.load(str(out / "model.int8.onnx")).graph
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {node.op_type for node in graph.node}
    # ... except each feed-forward block's second product (its input has the outliers), which stays in fp32.
    assert len(feed_forward_outputs(onnx.load(str(out / "model.onnx")).graph)) == 2  # the tiny model's 2 layers
    assert len(feed_forward_outputs(graph)) == 2 and all(
        n.op_type == "MatMul" for n in graph.node if n.name in feed_forward_outputs(graph)
    )
    int8 = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    (logits,) = int8.run(["logits"], {n: enc[n] for n in names})
    probs = torch.from_numpy(logits).softmax(-1)
    assert probs.argmax(-1).tolist() == [max((0, 1), key=p["probs"].__getitem__) for p in trained["predictions"]]
    assert torch.allclose(probs, torch.tensor(expected), atol=0.05)
    # `ftlit predict` on either ONNX model writes the rows PyTorch's predict wrote.
    predict = write_jsonl(trained["tmp"] / "onnx-predict.jsonl", [{"text": t} for t in TEXTS])
    data = {**trained["data"], "predict_file": str(predict)}

    def predict_with(model: Path) -> list[dict]:
        rows_file = trained["tmp"] / f"{model.name}.jsonl"
        args = cli_args(tiny_bert, data, trained["tmp"] / "run", f"--predictions.onnx_model={model}",
                        f"--predictions.output={rows_file}", "--ckpt_path=last")  # fmt: skip
        FtlitCLI(args=["predict", *args])
        return [json.loads(line) for line in rows_file.read_text().splitlines()]

    for name in ("model.onnx", "model.int8.onnx"):
        rows = predict_with(out / name)
        assert [r["label"] for r in rows] == [p["label"] for p in trained["predictions"]], name
        tolerance = 1e-4 if name == "model.onnx" else 0.05
        for row, expected_row in zip(rows, trained["predictions"], strict=True):
            assert row["probs"] == pytest.approx(expected_row["probs"], abs=tolerance), name
        # ... and onnxruntime wrote them, not PyTorch: the same graph with its classifier bias moved (the checkpoint
        # is not) moves every row's log-odds by exactly that much.
        moved = predict_with(shifted(out / name, trained["tmp"] / f"shifted-{name}"))
        for row, before in zip(moved, rows, strict=True):
            assert log_odds(row["probs"]) - log_odds(before["probs"]) == pytest.approx(LOG_ODDS_SHIFT, abs=1e-3), name


def test_predict_with_a_missing_onnx_model_is_one_line(trained, tiny_bert, tmp_path, capsys):
    args = cli_args(tiny_bert, trained["data"], tmp_path, f"--predictions.onnx_model={tmp_path / 'none.onnx'}")
    error = cli_error(["predict", *args, f"--ckpt_path={trained['ckpt']}"], capsys)
    missing = tmp_path / "none.onnx"
    assert error.startswith(f"ftlit: error: predictions.onnx_model: '{missing}' is not a file: give a model.onnx")


def test_onnx_without_its_packages_is_a_clear_error_before_any_work(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "find_spec", lambda name: None if name == "onnxscript" else object())
    with pytest.raises(ConfigError, match="onnx: ONNX export needs onnxscript: pip install onnxscript"):
        export(str(trained["ckpt"]), str(tmp_path / "hf"), onnx=True)
    assert not (tmp_path / "hf").exists()
    monkeypatch.setattr(export_module, "find_spec", lambda name: None if name == "onnxruntime" else object())
    with pytest.raises(ConfigError, match="quantize: int8 quantization needs onnxruntime: pip install onnxruntime"):
        export(str(trained["ckpt"]), str(tmp_path / "hf"), quantize="int8")
    assert not (tmp_path / "hf").exists()


def run_main(args: list[str], capsys) -> str:
    """Run `ftlit export` through main, expect exit code 2 and return its single stderr line."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_existing_folder_needs_overwrite_and_is_replaced_whole(trained, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = run_main([f"--ckpt_path={trained['ckpt']}", f"--out={out}"], capsys)
    assert err == f"ftlit: error: out: '{out}' exists and is not empty: pass --overwrite or another folder"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    main([f"--ckpt_path={trained['ckpt']}", f"--out={out}", "--overwrite"])
    files = {p.name for p in out.iterdir()}
    assert "keep.txt" not in files and "model.safetensors" in files
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temp or old folders left beside it
    assert "ftlit: exported" in capsys.readouterr().out

    # An empty folder is fine without --overwrite.
    (tmp_path / "empty").mkdir()
    assert (export(str(trained["ckpt"]), str(tmp_path / "empty")) / "model.safetensors").is_file()


def test_overwrite_never_deletes_the_run_holding_the_checkpoint(trained, capsys):
    run = trained["ckpt"].parent.parent
    err = run_main([f"--ckpt_path={trained['ckpt']}", f"--out={run}", "--overwrite"], capsys)
    assert err.startswith("ftlit: error: out:") and "holds the checkpoint" in err
    assert trained["ckpt"].is_file()


def test_a_crash_mid_export_leaves_no_half_folder(trained, tmp_path, monkeypatch):
    def crash(self, folder, *args, **kwargs):
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module.PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export(str(trained["ckpt"]), str(tmp_path / "new"))
    assert list(tmp_path.iterdir()) == []

    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("previous export")
    with pytest.raises(RuntimeError, match="disk full"):
        export(str(trained["ckpt"]), str(old), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    assert (old / "keep.txt").read_text() == "previous export"


def test_missing_foreign_and_truncated_checkpoints_are_one_line_errors(trained, tmp_path, capsys):
    out = tmp_path / "hf"
    missing = tmp_path / "nope.ckpt"
    err = run_main(["--ckpt_path", str(missing), "--out", str(out)], capsys)
    assert err == f"ftlit: error: ckpt_path: checkpoint '{missing}' does not exist"

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 0}, foreign)
    err = run_main(["--ckpt_path", str(foreign), "--out", str(out)], capsys)
    assert err == f"ftlit: error: ckpt_path: '{foreign}' is not an ftlit checkpoint"

    truncated = tmp_path / "truncated.ckpt"
    data = trained["ckpt"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    err = run_main(["--ckpt_path", str(truncated), "--out", str(out)], capsys)
    assert err.startswith(f"ftlit: error: ckpt_path: '{truncated}' is not a readable checkpoint")
    assert not out.exists()
    err = run_main(["--ckpt_path", str(trained["ckpt"]), "--out", str(out), "--quantize", "int4"], capsys)
    assert err == "ftlit: error: quantize: 'int4' is not a kind ftlit quantizes to: use int8, or drop the flag"


def test_model_class_comes_from_the_checkpoint(trained, tmp_path):
    ckpt = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    for class_path, problem in (
        ("ftlit.models.NoSuchTask", "which cannot be imported here"),
        ("torch.nn.Linear", "which is not an ftlit task model"),
    ):
        ckpt["hyper_parameters"]["_class_path"] = class_path
        torch.save(ckpt, tmp_path / "other.ckpt")
        with pytest.raises(ConfigError, match=f"ckpt_path: .* holds a {class_path}, {problem}"):
            export(str(tmp_path / "other.ckpt"), str(tmp_path / "hf"))
    # A checkpoint of a model built in Python (no class path saved by the CLI) is a SequenceClassifier.
    del ckpt["hyper_parameters"]["_class_path"]
    torch.save(ckpt, tmp_path / "plain.ckpt")
    out = export(str(tmp_path / "plain.ckpt"), str(tmp_path / "hf"))
    assert load_file(out / "model.safetensors").keys() == load_file(trained["out"] / "model.safetensors").keys()


def test_help_documents_every_argument(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "usage: ftlit export --ckpt_path CKPT_PATH --out OUT" in help_text
    for doc in ("Checkpoint written by", "Folder to create", "Replace an existing", "Also write ``model.onnx``"):
        assert doc in help_text


def test_question_answering_export_gives_ftlit_predict_s_answers(tiny_bert, tmp_path):
    """A QA checkpoint exports to a folder that plain transformers runs offline with ftlit's answers, and to ONNX.

    transformers 5 removed the ``question-answering`` pipeline, so the folder is run as ``run_qa.py`` runs a model:
    the same windows (max length 32, stride 8), ``AutoModelForQuestionAnswering``, the best span over all windows.
    """
    from helpers.qa import fit_args as qa_fit_args
    from helpers.qa import toy_qa_rows

    from ftlit.tasks.qa.answers import best_spans

    rows = toy_qa_rows(12, 9, words=(3, 40))
    data = {
        "train_file": str(write_jsonl(tmp_path / "train.jsonl", toy_qa_rows(96, 0, words=(3, 40)))),
        "predict_file": str(
            write_jsonl(tmp_path / "predict.jsonl", [{k: r[k] for k in ("question", "context")} for r in rows])
        ),
    }
    args = qa_fit_args(tiny_bert, tmp_path / "run", data, "--trainer.max_epochs=3")
    FtlitCLI(args=["fit", *args])
    FtlitCLI(args=["predict", *args, "--ckpt_path=last"])
    predictions = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    onnx = find_spec("onnxruntime") is not None and find_spec("onnxscript") is not None
    out = export(str(tmp_path / "run" / "checkpoints" / "last.ckpt"), str(tmp_path / "hf"), onnx=onnx)
    assert AutoConfig.from_pretrained(out).architectures == ["BertForQuestionAnswering"]

    model = AutoModelForQuestionAnswering.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    window_args = {"truncation": "only_second", "max_length": 32, "stride": 8, "return_overflowing_tokens": True}
    for row, expected in zip(rows, predictions, strict=True):
        enc = tokenizer(row["question"], row["context"], return_offsets_mapping=True, **window_args)
        spans = []
        for w, window in enumerate(enc["offset_mapping"]):
            # One window at a time, unpadded: padding must not take any of the n-best start and end positions.
            with torch.no_grad():
                logits = model(**{k: torch.tensor([enc[k][w]]) for k in tokenizer.model_input_names})
            context = [tuple(o) if s == 1 else None for o, s in zip(window, enc.sequence_ids(w), strict=True)]
            spans += best_spans(logits.start_logits[0], logits.end_logits[0], context)
        start, end, score = max(spans, key=lambda s: (s[2], -s[0], -s[1]))
        assert (row["context"][start:end], start, end) == (expected["answer"], expected["start"], expected["end"])
        top = sorted((s[2] for s in spans), reverse=True)[:20]
        probability = 1 / sum(torch.tensor(top).sub(score).exp().tolist())
        assert probability == pytest.approx(expected["score"], abs=1e-4)
    # The comparison means something: the model answers most questions right, from contexts of 1 to 3 windows.
    right = sum(p["answer"] == r["answers"]["text"][0] for p, r in zip(predictions, rows, strict=True))
    assert right >= len(rows) // 2, predictions

    if not onnx:
        pytest.skip("onnxruntime and onnxscript are needed for the ONNX half")
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]
    names = [i.name for i in session.get_inputs()]
    enc = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], padding=True, **window_args)
    inputs = {n: torch.tensor(enc[n]) for n in names}
    start_logits, end_logits = session.run(None, {n: v.numpy() for n, v in inputs.items()})
    with torch.no_grad():
        expected = model(**inputs)
    torch.testing.assert_close(torch.from_numpy(start_logits), expected.start_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.from_numpy(end_logits), expected.end_logits, atol=1e-4, rtol=0)


# --- named-entity recognition ---------------------------------------------------------------------------------------

# Raw texts for `ftlit predict` and the pipeline: upper case, double spaces and tabs (offsets into the original
# text), words of one sub-token and of several (GOODS -> good ##s, badly -> bad ##ly), the two-word ORG entity, an
# I-ORG with no B-ORG before it, adjacent entities of one type (split at B-, as seqeval splits them), an unknown word
# ([UNK]) and an empty text.
NER_TEXTS = [
    "The movie is GOODS and  the food service\tis badly .",
    "greatly the plot was poorly",
    "food service food service",
    "goods greatly bad awful",
    "the service was xylophone good",
    "",
]
# A word with punctuation attached: ftlit's words (data.words: bert, a new fit's) are BERT's pre-tokens, as the
# pipeline's are.
NER_PUNCTUATED = "the food service was badly."


def test_ner_export_runs_in_the_token_classification_pipeline_with_ftlit_predict_s_entities(tiny_bert, tmp_path):
    """The `token-classification` pipeline on a NER export gives `ftlit predict`'s entities, tags and scores.

    What matches, and why: with ``aggregation_strategy="first"`` the pipeline tags a word by its first sub-token
    (argmax there, as ftlit), scores an entity with the mean over its words of that sub-token's top probability (as
    ftlit) and groups word tags as seqeval's default mode does for IOB2 tags (``B-X I-X`` one entity, ``B-X B-X``
    two, ``I-X`` after ``O`` or another type starts one, a change of type ends one). ftlit's words are BERT's
    pre-tokens (``data.words: bert``), which are the pipeline's words, so entity types, character spans, text and
    score all match, on a word with punctuation attached too (``badly.``: the entity is ``badly``, as the pipeline's).
    The pipeline's own ``word`` is detokenized (lower case, for an uncased model), so the text is compared as
    ``text[start:end]``. The pipeline knows no IOBES (``E-``/``S-`` tags); these tags are IOB2 only.
    """
    from helpers.ner import fit_args as ner_fit_args
    from helpers.ner import toy_ner_rows, write_conll

    from ftlit.core.words import bert
    from ftlit.tasks.ner.model import TokenClassifier

    texts = [*NER_TEXTS, NER_PUNCTUATED]
    data = {
        "train_file": str(write_conll(tmp_path / "train.conll", toy_ner_rows(96, 0))),
        "predict_file": str(write_jsonl(tmp_path / "predict.jsonl", [{"text": t} for t in texts])),
    }
    args = ner_fit_args(tiny_bert, tmp_path / "run", data)
    FtlitCLI(args=["fit", *args])
    FtlitCLI(args=["predict", *args, "--ckpt_path=last"])
    predictions = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = export(str(ckpt), str(tmp_path / "hf"))

    labels = ["B-NEG", "B-ORG", "B-POS", "I-ORG", "O"]  # every tag seen in train, sorted
    config = AutoConfig.from_pretrained(out)
    assert config.architectures == ["BertForTokenClassification"]
    assert config.id2label == dict(enumerate(labels))
    assert config.label2id == {tag: i for i, tag in enumerate(labels)}

    first = pipeline("token-classification", model=str(out), aggregation_strategy="first", device="cpu")
    tokens = pipeline("token-classification", model=str(out), aggregation_strategy="none", ignore_labels=[])
    by_token = tokens(texts)

    # Entities: type, characters, text and score, on every text.
    for text, expected, got in zip(texts, predictions, first(texts), strict=True):
        spans = [(e["entity_group"], e["start"], e["end"], text[e["start"] : e["end"]]) for e in got]
        assert spans == [(e["type"], e["start"], e["end"], e["text"]) for e in expected["entities"]], text
        assert [float(e["score"]) for e in got] == pytest.approx([e["score"] for e in expected["entities"]], abs=1e-4)
    start = NER_PUNCTUATED.index("badly")
    assert ("badly", "NEG", start, start + 5) in [
        (e["text"], e["type"], e["start"], e["end"]) for e in predictions[-1]["entities"]
    ]

    # Word tags: the pipeline's tag at the first sub-token of each word is ftlit's tag of that word.
    overruled = 0  # continuation sub-tokens whose own top tag is not their word's: "first" must ignore them
    for text, expected, got in zip(texts, predictions, by_token, strict=True):
        at_start: dict[int, str] = {}
        for token in got:
            at_start.setdefault(token["start"], token["entity"])
        assert [at_start[a] for a, _ in bert(text)] == expected["tags"], text
        word_tag = dict(zip((a for a, _ in bert(text)), expected["tags"], strict=True))
        tag = None
        for token in got:
            tag = word_tag.get(token["start"], tag)
            overruled += token["entity"] != tag

    # Per-token probabilities, every sub-token: the pipeline's top tag and probability are those of ftlit's model
    # (as `ftlit predict` runs it: rebuilt from the checkpoint, words tokenized apart, one padded batch).
    module = TokenClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    words = [[text[a:b] for a, b in bert(text)] for text in texts]
    batch = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = module(dict(batch)).softmax(-1)
    compared = 0
    for i, (text, got) in enumerate(zip(texts, by_token, strict=True)):
        assert len(got) == int(batch["attention_mask"][i].sum()) - 2, text  # every token but [CLS] and [SEP]
        for token in got:
            top, tag = probs[i, token["index"]].max(-1)
            word = tokenizer.convert_ids_to_tokens(int(batch["input_ids"][i, token["index"]]))
            # Same token at the same place; the pipeline shows an unknown word as its text rather than [UNK].
            assert token["word"] == (text[token["start"] : token["end"]] if word == "[UNK]" else word), text
            assert (token["entity"], float(token["score"])) == (labels[int(tag)], pytest.approx(float(top), abs=1e-4))
            compared += 1

    # The comparison means something: entities of one and of several sub-tokens, and of two words, were found.
    # An entity opened by I-ORG, adjacent entities of one type, and sub-tokens tagged unlike their word's first.
    found = {(e["text"], e["type"]) for row in predictions for e in row["entities"]}
    assert {("GOODS", "POS"), ("badly", "NEG"), ("food service", "ORG"), ("greatly", "POS")} <= found, found
    assert "I-ORG" in predictions[4]["tags"] and ("service", "ORG") in found, predictions[4]
    assert [e["type"] for e in predictions[2]["entities"]] == ["ORG", "ORG"], predictions[2]
    assert [e["type"] for e in predictions[3]["entities"]][:2] == ["POS", "POS"], predictions[3]
    assert overruled > 0 and compared > 30


def test_token_classification_pipeline_groups_iob2_word_tags_as_ftlit_does(tiny_bert):
    """The pipeline's grouping of word tags into entities is ftlit's (seqeval's default mode) for every IOB2
    sequence of two types up to five words: B- always opens an entity, I- continues one of its type or opens one.

    This is what lets the NER export test compare entities and not only tags; IOBES tags would not group alike.
    """
    from ftlit.tasks.ner.metric import extract_entities

    tagger = pipeline("token-classification", model=tiny_bert, device="cpu")
    tags = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    for length in range(1, 6):
        for sequence in itertools.product(tags, repeat=length):
            words = [{"entity": t, "score": 0.5, "word": "a", "start": i, "end": i + 1} for i, t in enumerate(sequence)]
            groups = tagger.group_entities(words)
            got = [(g["entity_group"], g["start"], g["end"] - 1) for g in groups if g["entity_group"] != "O"]
            assert got == extract_entities(list(sequence)), sequence
