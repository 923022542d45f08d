"""The backbones users pick, each as a tiny random model with its own kind of tokenizer: fit with the per-layer
strategies, export, transformers' pipeline and ONNX give ftlit's outputs. ALBERT shares its layers' weights: the
per-layer strategies are one-line errors and the rest works."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from conftest import FILLER, NEGATIVE, POSITIVE, SPECIAL, cli_args, cli_error, toy_rows, write_jsonl
from ftlit.cli import FtlitCLI
from ftlit.commands.export import export
from ftlit.core import strategies
from ftlit.core.anatomy import anatomy
from ftlit.core.attention import build_with_attention
from ftlit.core.callbacks import GradualUnfreezing
from ftlit.errors import ConfigError
from ftlit.tasks.text import SequenceClassifier

WORDS = sorted(set(POSITIVE + NEGATIVE + FILLER))
PUNCT = ["?", ".", ","]
# A wide initialisation, so that the random models' outputs clearly differ from text to text.
SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "initializer_range": 0.2,
}
ROBERTA_IDS = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "max_position_embeddings": 130}  # pad + 1


def unigram(specials: list[str]) -> list[tuple[str, float]]:
    """A SentencePiece-style vocabulary: whole words, then letters for anything else."""
    pieces = [(s, 0.0) for s in specials] + [("▁" + w, -2.0) for w in WORDS] + [("▁", -3.0)]
    return pieces + [(p, -3.0) for p in PUNCT] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]


def byte_bpe(specials: list[str]) -> Tokenizer:
    """A byte-level BPE (RoBERTa's, ModernBERT's kind) trained on the toy words."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator([" ".join(WORDS), *(" " + w for w in WORDS)], trainer)
    return tokenizer


def roberta_tokenizer() -> tf.PreTrainedTokenizerBase:
    model = json.loads(byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]).to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return tf.RobertaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=128)


def modernbert_tokenizer() -> tf.PreTrainedTokenizerBase:
    """ModernBERT ships a plain ``PreTrainedTokenizerFast`` (BPE, [CLS] ... [SEP], no token type ids)."""
    bpe = byte_bpe(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, bpe.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    bpe.decoder = decoders.ByteLevel()
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        **{f"{kind}_token": f"[{kind.upper()}]" for kind in ("unk", "cls", "sep", "pad", "mask")},
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=128,
    )


def wordpiece(cls: type = tf.BertTokenizer) -> tf.PreTrainedTokenizerBase:
    vocab = SPECIAL + sorted(set(WORDS + ["##s", "##ly"] + PUNCT))
    return cls(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=128)


def tokenizer_and_config(arch: str) -> tuple[tf.PreTrainedTokenizerBase, tf.PretrainedConfig]:
    """A tokenizer of the architecture's own kind and a config about as small as the architecture allows."""
    if arch == "bert":
        return wordpiece(), tf.BertConfig(**SMALL, max_position_embeddings=128)
    if arch == "distilbert":  # no token type ids
        config = tf.DistilBertConfig(
            dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128, initializer_range=0.2
        )
        return wordpiece(tf.DistilBertTokenizer), config
    if arch == "electra":  # narrower embeddings, projected up to the layers' width
        return wordpiece(), tf.ElectraConfig(**SMALL, embedding_size=16, max_position_embeddings=128)
    if arch == "roberta":
        return roberta_tokenizer(), tf.RobertaConfig(**SMALL, **ROBERTA_IDS)
    if arch == "xlm-roberta":
        vocab = unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        return tf.XLMRobertaTokenizer(vocab=vocab, model_max_length=128), tf.XLMRobertaConfig(**SMALL, **ROBERTA_IDS)
    if arch == "deberta-v2":  # DeBERTa-v3's layout: relative attention, no absolute positions, no SDPA
        config = tf.DebertaV2Config(
            **SMALL,
            max_position_embeddings=128,
            relative_attention=True,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
        )
        vocab = unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"])
        return tf.DebertaV2Tokenizer(vocab=vocab, model_max_length=128), config
    if arch == "modernbert":
        tokenizer = modernbert_tokenizer()
        ids = {k: tokenizer.convert_tokens_to_ids(f"[{k.upper()}]") for k in ("pad", "cls", "sep")}
        config = tf.ModernBertConfig(
            **SMALL,
            max_position_embeddings=128,
            local_attention=16,
            global_attn_every_n_layers=2,
            pad_token_id=ids["pad"],
            cls_token_id=ids["cls"],
            sep_token_id=ids["sep"],
            bos_token_id=ids["cls"],
            eos_token_id=ids["sep"],
        )
        return tokenizer, config
    if arch == "albert":  # one group of weights shared by both layers
        vocab = unigram(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"])
        config = tf.AlbertConfig(**SMALL, embedding_size=16, max_position_embeddings=128, num_hidden_groups=1)
        return tf.AlbertTokenizer(vocab=vocab, model_max_length=128), config
    raise KeyError(arch)


ARCHS = ["bert", "roberta", "distilbert", "electra", "deberta-v2", "modernbert", "xlm-roberta", "albert"]


def make_tiny(arch: str, folder: Path) -> Path:
    """Save a random tiny ``arch`` encoder and its fast tokenizer, as a pretrained model folder is laid out."""
    tokenizer, config = tokenizer_and_config(arch)
    tokenizer.save_pretrained(folder)
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    tf.AutoModel.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Models this small run fastest on one thread, and are then not slowed by other processes on a small machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """``tiny(arch)``: the folder of a tiny random ``arch`` model, built once per session."""
    folders: dict[str, str] = {}

    def get(arch: str) -> str:
        if arch not in folders:
            folders[arch] = str(make_tiny(arch, tmp_path_factory.mktemp(arch)))
        return folders[arch]

    return get


# Texts of different lengths (padding in ftlit's batch, none in the pipeline's single rows), one word unknown.
TEXTS = [r["text"] for r in toy_rows(5, 7)] + ["good", "the zebra was boring", "a very lovely and superb movie ."]
PER_LAYER = ["--model.layer_lr_decay=0.9", "--model.reinit_layers=1", "--model.freeze_layers=1"]
FAST = [
    "--trainer.max_steps=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--model.scheduler=constant",
    "--model.learning_rate=1e-2",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("data")
    return {
        "train_file": str(write_jsonl(tmp / "train.jsonl", toy_rows(32, 0))),
        "validation_file": str(write_jsonl(tmp / "validation.jsonl", toy_rows(8, 1))),
    }


@pytest.fixture(scope="module", params=ARCHS)
def trained(request, tiny, data, tmp_path_factory) -> dict:
    """A 2-step fit through the CLI, with the per-layer strategies (ALBERT: with frozen embeddings instead), and its
    export; ftlit's own logits on TEXTS come from the trained module."""
    arch = request.param
    tmp = tmp_path_factory.mktemp(f"fit-{arch}")
    strategies = ["--model.freeze_embeddings=true"] if arch == "albert" else PER_LAYER
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLIT_CACHE", str(tmp / "cache"))
        cli = FtlitCLI(args=["fit", *cli_args(tiny(arch), data, tmp / "run", *FAST, *strategies)])
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    out = export(str(ckpt), str(tmp / "hf"))
    module = cli.model.eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = module(dict(tokenizer(TEXTS, padding=True, return_tensors="pt")))
    return {"arch": arch, "cli": cli, "ckpt": ckpt, "out": out, "logits": logits, "tmp": tmp}


def test_fit_applies_the_layer_strategies(trained, tiny):
    cli, arch = trained["cli"], trained["arch"]
    parts = cli.model.anatomy()
    before = tf.AutoModel.from_pretrained(tiny(arch)).state_dict()
    prefix = cli.model.model.base_model_prefix + "."
    names = {id(p): n.removeprefix(prefix) for n, p in cli.model.model.named_parameters()}
    lrs = {g["name"]: g["initial_lr"] for g in cli.trainer.optimizers[0].param_groups}
    frozen = parts.embeddings if arch == "albert" else parts.layers[0]
    for p in frozen.parameters():  # bit-identical to the pretrained weights, and out of the optimizer
        assert not p.requires_grad and torch.equal(p.detach(), before[names[id(p)]]), names[id(p)]
    if arch == "albert":
        assert parts.shared and len(parts.layers) == 2 and parts.layers[0] is parts.layers[1]
        assert "embeddings" not in lrs and lrs["layers"] == lrs["head"] == pytest.approx(1e-2)
        # The projection up to the layers' width is part of the embeddings.
        assert not cli.model.model.albert.encoder.embedding_hidden_mapping_in.weight.requires_grad
    else:
        assert not parts.shared and "layer.0" not in lrs
        assert lrs["layer.1"] == pytest.approx(1e-2) and lrs["embeddings"] == pytest.approx(1e-2 * 0.9**2)
        top = parts.layers[1]
        # Re-initialised, then trained: far from the pretrained weights, unlike a 2-step fine-tune.
        weight = next(p for n, p in top.named_parameters() if p.dim() == 2)
        assert not torch.allclose(weight.detach(), before[names[id(weight)]], atol=0.05)
    # The checkpoint holds the weights the parity tests compare against.
    state = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in cli.model.state_dict().items())


def test_attention_is_sdpa_where_the_architecture_has_it_in_fit_and_export(trained):
    expected = "eager" if trained["arch"] == "deberta-v2" else "sdpa"
    assert trained["cli"].model.model.config._attn_implementation == expected
    rebuilt = SequenceClassifier.load_from_checkpoint(trained["ckpt"], map_location="cpu")  # as export does
    assert rebuilt.model.config._attn_implementation == expected


def test_pipeline_on_the_export_gives_ftlit_probabilities(trained):
    classify = tf.pipeline("text-classification", model=str(trained["out"]), top_k=None, device="cpu")
    expected = trained["logits"].softmax(-1)
    for text, want, got in zip(TEXTS, expected.tolist(), classify(TEXTS), strict=True):
        probs = {row["label"]: row["score"] for row in got}
        assert [probs["neg"], probs["pos"]] == pytest.approx(want, abs=1e-4), text
    # The comparison means something: the outputs differ by text.
    assert float(expected[:, 1].max() - expected[:, 1].min()) > 0.05


@pytest.mark.slow  # torch's ONNX exporter takes 10 to 30 s a model on 2 cores
# BERT's ONNX export is test_export's; each other architecture is exported once.
@pytest.mark.parametrize("trained", [arch for arch in ARCHS if arch != "bert"], indirect=True)
def test_onnx_export_gives_ftlit_logits(trained):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = export(str(trained["ckpt"]), str(trained["tmp"] / "onnx"), onnx=True)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = tf.AutoTokenizer.from_pretrained(out)
    names = [i.name for i in session.get_inputs()]
    assert names == [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    # One padded batch of all texts, then a batch of one: batch and sequence axes are both dynamic.
    for rows in (list(range(len(TEXTS))), [len(TEXTS) - 1]):
        enc = tokenizer([TEXTS[i] for i in rows], padding=True, return_tensors="np")
        (logits,) = session.run(["logits"], {n: enc[n] for n in names})
        assert logits == pytest.approx(trained["logits"][rows].numpy(), abs=1e-4)


# --- ALBERT: layers that share their weights -----------------------------------------------------------------

SHARED = "AlbertModel's 2 layers share one set of weights, so they cannot"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("freeze_layers", 1, "model.freeze_layers: " + SHARED + " be frozen one by one: use model.freeze_backbone"),
        ("reinit_layers", 1, "model.reinit_layers: " + SHARED + " be re-initialised one by one: drop the key"),
    ],
)
def test_albert_refuses_per_layer_strategies_as_it_is_built(tiny, key, value, expected):
    with pytest.raises(ConfigError) as err:
        SequenceClassifier(backbone=tiny("albert"), label_names=["neg", "pos"], **{key: value})
    assert str(err.value).startswith(expected)


def test_albert_refuses_layer_lr_decay_and_gradual_unfreezing(tiny):
    with pytest.raises(ConfigError, match=r"^model\.layer_lr_decay: .*share one set of weights.*set it to 1\.0"):
        SequenceClassifier(backbone=tiny("albert"), label_names=["neg", "pos"], layer_lr_decay=0.9).param_groups()
    plain = SequenceClassifier(backbone=tiny("albert"), label_names=["neg", "pos"])
    trainer = SimpleNamespace(strategy=None, world_size=1)
    with pytest.raises(ConfigError, match="^GradualUnfreezing: " + SHARED + " thaw one by one"):
        GradualUnfreezing().setup(trainer, plain, "fit")


def test_albert_per_layer_strategies_are_one_line_cli_errors(tiny, data, tmp_path, capsys):
    err = cli_error(["fit", *cli_args(tiny("albert"), data, tmp_path / "a", *FAST, *PER_LAYER)], capsys)
    assert re.match(r"ftlit: error: model\.(freeze|reinit)_layers: " + SHARED, err), err
    # Refused as the model is built, or at the latest as its optimizer is: before any step.
    err = cli_error(
        ["fit", *cli_args(tiny("albert"), data, tmp_path / "b", *FAST, "--model.layer_lr_decay=0.9")], capsys
    )
    assert err.startswith("ftlit: error: model.layer_lr_decay: ") and "share one set of weights" in err


def test_albert_freeze_backbone_l2sp_and_lora(tiny):
    frozen = SequenceClassifier(backbone=tiny("albert"), label_names=["neg", "pos"], freeze_backbone=True)
    head = {"classifier.weight", "classifier.bias"}
    assert {n for n, p in frozen.model.named_parameters() if p.requires_grad} == head
    # L2-SP anchors each shared weight once.
    l2sp = SequenceClassifier(backbone=tiny("albert"), label_names=["neg", "pos"], l2sp_alpha=0.1).l2sp
    backbone = [n for n, _ in frozen.model.named_parameters() if n not in head]
    assert len(l2sp.params) == len({id(p) for p in l2sp.params}) == len(backbone)
    pytest.importorskip("peft")
    lora = SequenceClassifier(backbone=tiny("albert"), label_names=["neg", "pos"], lora_rank=2)
    trainable = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    assert any(".query.lora_A" in n for n in trainable) and any(".value.lora_A" in n for n in trainable)


# --- what the other architectures need -----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["deberta-v2", "electra", "modernbert"])
def test_reinit_pooler_without_a_pooler_is_an_error(tiny, arch):
    # DeBERTa's relative position embeddings, ELECTRA's projection and ModernBERT's final norm are pretrained
    # weights outside the layers, not a pooler.
    with pytest.raises(ConfigError, match=r"^model\.reinit_pooler: \w+ForSequenceClassification has no pooler"):
        SequenceClassifier(backbone=tiny(arch), label_names=["neg", "pos"], reinit_pooler=True)


def test_electra_projection_is_frozen_with_the_embeddings(tiny):
    model = SequenceClassifier(backbone=tiny("electra"), label_names=["neg", "pos"], freeze_embeddings=True)
    assert not model.model.electra.embeddings_project.weight.requires_grad
    assert model.model.electra.encoder.layer[0].attention.self.query.weight.requires_grad


@pytest.mark.parametrize(
    ("arch", "module"), [("distilbert", "q_lin"), ("deberta-v2", "query_proj"), ("modernbert", "Wqkv")]
)
def test_lora_targets_the_architecture_s_own_attention_names(tiny, arch, module):
    pytest.importorskip("peft")
    model = tf.AutoModelForSequenceClassification.from_pretrained(tiny(arch), num_labels=2)
    # By default, its own names; names it does not have are a one-line error that lists the ones it has.
    with pytest.raises(ConfigError, match=rf"^model\.lora_target_modules: .* named query or value: use \['{module}'"):
        strategies.apply_lora(model, anatomy(model), 2, 16.0, 0.0, ["query", "value"])
    adapted = strategies.apply_lora(model, anatomy(model), 2, 16.0, 0.0)
    assert any(f".{module}.lora_A" in n for n, p in adapted.named_parameters() if p.requires_grad)
    explicit = SequenceClassifier(
        backbone=tiny(arch), label_names=["neg", "pos"], lora_rank=2, lora_target_modules=[module]
    )
    assert any(f".{module}.lora_A" in n for n, p in explicit.model.named_parameters() if p.requires_grad)


def test_a_model_class_known_only_once_built_falls_back_to_eager_without_touching_the_config(tiny):
    config = tf.AutoConfig.from_pretrained(tiny("deberta-v2"))

    def build(*args, **kwargs):  # not a bound method: the class is known only once built
        return tf.AutoModel.from_config(*args, **kwargs)

    model = build_with_attention(build, config)
    assert model.config._attn_implementation == "eager"
    assert build_with_attention(tf.AutoModel.from_config, config).config._attn_implementation == "eager"
    bert = build_with_attention(
        tf.AutoModel.from_pretrained, tiny("bert"), config=tf.AutoConfig.from_pretrained(tiny("bert"))
    )
    assert bert.config._attn_implementation == "sdpa"


# --- attention heads removed ---------------------------------------------------------------------------------

PRUNED = {0: [1], 1: [0]}


def head_output_columns(layer: torch.nn.Module) -> torch.nn.Linear:
    """The output projection that reads a layer's heads (BERT-style ``attention.output.dense``, DistilBERT's
    ``attention.out_lin``)."""
    attention = layer.attention
    return attention.out_lin if hasattr(attention, "out_lin") else attention.output.dense


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "electra", "xlm-roberta"])
def test_pruned_heads_are_gone_and_the_rest_computes_as_before(tiny, arch):
    labels, folder = ["neg", "pos"], tiny(arch)
    torch.manual_seed(0)
    full = SequenceClassifier(backbone=folder, label_names=labels).eval()
    torch.manual_seed(0)  # the same random task head
    pruned = SequenceClassifier(backbone=folder, label_names=labels, prune_heads=PRUNED).eval()
    size = full.model.config.hidden_size // 2  # 2 heads
    # Masking the removed heads in the full model (their output-projection columns zero) is what removing them is.
    layers = anatomy(full.model).layers
    with torch.no_grad():
        for index, heads in PRUNED.items():
            for h in heads:
                head_output_columns(layers[index]).weight[:, h * size : (h + 1) * size] = 0
    tokenizer = tf.AutoTokenizer.from_pretrained(folder)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    with torch.no_grad():
        expected, got = full(batch), pruned(batch)
    assert got == pytest.approx(expected, abs=1e-5)
    # Each layer lost one head's query, key and value rows and output columns (with their biases): 4 * size^2 + 3s.
    removed = 2 * (4 * size * 2 * size + 3 * size)
    assert sum(p.numel() for p in full.model.parameters()) - sum(p.numel() for p in pruned.model.parameters()) == (
        removed
    )
    # Written back at the config's width, the removed heads zero: plain transformers loads it and agrees.
    wide = strategies.full_width_heads(pruned.model)
    plain = tf.AutoModelForSequenceClassification.from_config(full.model.config).eval()
    plain.load_state_dict(wide.state_dict())
    with torch.no_grad():
        assert plain(**batch).logits == pytest.approx(expected, abs=1e-5)
    assert strategies.full_width_heads(full.model) is full.model


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("deberta-v2", "model.prune_heads: DebertaV2Model's attention is not a layout ftlit prunes"),
        ("modernbert", "model.prune_heads: ModernBertModel's attention is not a layout ftlit prunes"),
        ("albert", "model.prune_heads: AlbertModel's 2 layers share one set of weights, so their heads cannot be"),
    ],
)
def test_head_pruning_is_refused_where_it_cannot_work(tiny, arch, expected):
    with pytest.raises(ConfigError) as err:
        SequenceClassifier(backbone=tiny(arch), label_names=["neg", "pos"], prune_heads={0: [0]})
    assert str(err.value).startswith(expected), err.value
