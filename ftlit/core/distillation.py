"""Knowledge distillation (Hinton et al. 2015): a fine-tuned teacher's softened predictions as a second target.

The student's loss is ``alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``, where ``_T`` is a
prediction at temperature T (softmax over the labels of a single-label classifier; for a multi-label one, each
label's own sigmoid, as a two-way distribution; for a token classifier, a softmax per labelled token). The teacher
is frozen, in eval mode, runs without gradients, and is held outside the student's modules: it is in no checkpoint,
optimizer or DDP wrapper. Its logits depend only on a row's tokens, so they are computed once and kept on disk
(:class:`LogitCache`): later epochs and runs skip its forward.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from ftlit import backbone
from ftlit.core import warm_start
from ftlit.errors import ConfigError

FIELD = "model.teacher"
Kind = Literal["softmax", "sigmoid", "token-softmax"]
# What a teacher of each student's kind is called, by the end of its architecture's name.
_HEADS = {"ForSequenceClassification": "sequence classifier", "ForTokenClassification": "token classifier"}


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, kind: Kind, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)``, averaged over rows (for ``sigmoid``, over labels too; for
    ``token-softmax``, over the tokens where ``mask`` is set: those with a label): the T^2 keeps its gradient's size
    independent of T. Zero when the student's logits equal the teacher's."""
    s, t = student.float() / temperature, teacher.float() / temperature
    if kind == "token-softmax":
        if mask is None or not mask.any():
            return student.sum() * 0.0  # nothing labelled in the batch
        s, t, kind = s[mask], t[mask], "softmax"  # (tokens, labels): one softmax per aligned token
    if kind == "softmax":
        # kl_div takes the student's log-probabilities first and the teacher's probabilities second (swapped, it
        # is silently wrong); batchmean divides by the rows.
        return F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean") * temperature**2
    # Each label a Bernoulli: p log(p/q) + (1-p) log((1-p)/(1-q)), in log-sigmoids for stability.
    p = torch.sigmoid(t)
    log_p, log_not_p = F.logsigmoid(t), F.logsigmoid(-t)
    log_q, log_not_q = F.logsigmoid(s), F.logsigmoid(-s)
    kl = p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)
    return kl.mean() * temperature**2


class Teacher:
    """A frozen classifier (an ftlit checkpoint or an ``ftlit export`` folder) over the student's labels, read with
    the student's tokenizer; its logits come out in the student's label order (per row, or per token)."""

    def __init__(self, model: PreTrainedModel, order: list[int] | None, inputs: tuple[str, ...]) -> None:
        self.model = model.eval().requires_grad_(False)
        self.order = order  # teacher column of each student label, when the orders differ
        self.inputs = inputs  # the batch tensors its forward takes
        self.cache: LogitCache | None = None

    def fingerprint(self) -> str:
        """A hash of the teacher's weights and label order: what its logits of a row depend on, besides the row."""
        digest = hashlib.blake2b(repr(self.order).encode(), digest_size=16)
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    @classmethod
    def load(
        cls,
        source: str,
        label_names: list[str],
        tokenizer: PreTrainedTokenizerBase,
        student_parameters: int,
        input_names: list[str],
        trust_remote_code: bool = False,
        auto_class: Any = AutoModelForSequenceClassification,
    ) -> Teacher:
        """Load and check ``source``: a classifier of the student's kind (``auto_class``: sequence or token) over
        the same labels (in any order), whose tokenizer is the student's (the data is tokenized once, for both)."""
        head = auto_class.__name__.removeprefix("AutoModel")
        with warm_start.source_folder(source, trust_remote_code, field=FIELD) as folder:
            config = backbone.load_config(str(folder), FIELD, trust_remote_code=trust_remote_code)
            kinds = config.architectures or []
            if not any(k.endswith(head) for k in kinds):
                what = ", ".join(kinds) or "model without a head"
                raise ConfigError(
                    FIELD, f"'{source}' is a {what}, not a {_HEADS[head]}: distil from one of the same labels"
                )
            theirs = [config.id2label[i] for i in range(config.num_labels)]
            if sorted(theirs) != sorted(label_names):
                raise ConfigError(
                    FIELD, f"'{source}' predicts {theirs}, the data has {label_names}: use a teacher of these labels"
                )
            vocab = backbone.load_tokenizer(str(folder), FIELD, trust_remote_code=trust_remote_code).get_vocab()
            if vocab != tokenizer.get_vocab():
                raise ConfigError(
                    FIELD,
                    f"'{source}' reads text with another tokenizer than model.backbone's, and the data is tokenized "
                    "once: use a teacher with the same vocabulary",
                )
            with backbone.quiet():
                model = auto_class.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust_remote_code)
        size = sum(p.numel() for p in model.parameters())
        if size < student_parameters:
            rank_zero_warn(
                f"ftlit: the teacher ({size:,} parameters) is smaller than the student ({student_parameters:,}): "
                "distillation usually goes from a larger model to a smaller one"
            )
        from ftlit.core.module import accepted_inputs  # the module that uses this one

        order = [theirs.index(name) for name in label_names]
        return cls(model, None if order == list(range(len(order))) else order, accepted_inputs(model, input_names))

    @torch.no_grad()
    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's logits for a batch of the student's inputs, in the student's label order: from the cache
        when every row of the batch is in it. A cached row keeps its first logits, though float32 rounds a batch
        padded to another length otherwise: a run that reads the cache uses the very values the run that wrote it
        used."""
        if self.cache is None:
            return self.forward(inputs)
        keys, mask = self.cache.keys(inputs), LogitCache.mask(inputs)
        cached = self.cache.get(keys, mask)
        if cached is None:
            self.cache.put(keys, self.forward(inputs), mask)
            cached = self.cache.get(keys, mask)  # every row is in it now
        return cached.to(inputs["input_ids"].device)  # type: ignore[union-attr]

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's forward on a batch, in the student's label order."""
        device = next(iter(inputs.values())).device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        logits = self.model(**{k: v for k, v in inputs.items() if k in self.inputs}).logits
        return logits if self.order is None else logits[..., self.order]


class LogitCache:
    """A teacher's logits of the rows it has seen, keyed by each row's tokens (those under the attention mask, so
    the padding of a batch does not matter) and kept in ``<folder>/<teacher fingerprint>-rank<r>.pt``: each process
    writes its own file and reads them all. A file that cannot be read is skipped (the rows are computed again).
    A token classifier's logits are kept for the tokens under the mask only, and padded again as a batch needs."""

    def __init__(self, folder: Path, fingerprint: str, rank: int) -> None:
        self.path = folder / f"{fingerprint}-rank{rank}.pt"
        self.rows: dict[bytes, torch.Tensor] = {}
        self.unsaved = 0
        for file in sorted(folder.glob(f"{fingerprint}-rank*.pt")):
            try:
                saved = torch.load(file, map_location="cpu", weights_only=True)
                logits = saved["logits"]
                if "lengths" in saved:  # token logits, each row's tokens one after the other
                    logits = logits.split(saved["lengths"].tolist())
                self.rows.update(zip((bytes(k) for k in saved["keys"].tolist()), logits, strict=True))
            except Exception as e:  # a cache: a damaged file costs a recomputation, never the run
                rank_zero_warn(f"ftlit: ignoring the teacher's logit cache {file} ({type(e).__name__}: {e})")

    @staticmethod
    def mask(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Which positions of the batch are tokens (not padding), on the CPU."""
        ids = inputs["input_ids"].cpu()
        return inputs.get("attention_mask", torch.ones_like(ids)).cpu().bool()

    @staticmethod
    def keys(inputs: dict[str, torch.Tensor]) -> list[bytes]:
        """One 16-byte key per row: a hash of its token ids (and token types) under the attention mask."""
        ids, mask = inputs["input_ids"].cpu(), LogitCache.mask(inputs)
        types = inputs.get("token_type_ids")
        keys = []
        for i in range(len(ids)):
            digest = hashlib.blake2b(ids[i][mask[i]].numpy().tobytes(), digest_size=16)
            if types is not None:
                digest.update(types[i].cpu()[mask[i]].numpy().tobytes())
            keys.append(digest.digest())
        return keys

    def get(self, keys: list[bytes], mask: torch.Tensor) -> torch.Tensor | None:
        """The cached logits of these rows (token logits placed at the batch's ``mask``, zeros on its padding), or
        ``None`` unless every one is cached."""
        rows = [self.rows.get(k) for k in keys]
        if any(r is None for r in rows):
            return None
        if rows[0].dim() == 1:  # type: ignore[union-attr]
            return torch.stack(rows)  # type: ignore[arg-type]
        out = rows[0].new_zeros(*mask.shape, rows[0].shape[-1])  # type: ignore[union-attr]
        for i, row in enumerate(rows):
            out[i][mask[i]] = row
        return out

    def put(self, keys: list[bytes], logits: torch.Tensor, mask: torch.Tensor) -> None:
        """Keep the logits of the rows not cached yet (a row seen twice keeps its first)."""
        for i, (key, row) in enumerate(zip(keys, logits.detach().float().cpu(), strict=True)):
            if key not in self.rows:
                self.rows[key] = (row[mask[i]] if row.dim() == 2 else row).clone()
                self.unsaved += 1

    def save(self) -> None:
        """Write the rows (when any are new), atomically: a kill leaves the old file or the new one."""
        if not self.unsaved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = torch.tensor([list(k) for k in self.rows], dtype=torch.uint8)
        rows = list(self.rows.values())
        saved = {"keys": keys, "logits": torch.stack(rows) if rows[0].dim() == 1 else torch.cat(rows)}
        if rows[0].dim() == 2:
            saved["lengths"] = torch.tensor([len(r) for r in rows])
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(saved, partial)
        os.replace(partial, self.path)
        self.unsaved = 0
