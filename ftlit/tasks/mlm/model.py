"""Masked-language-model training: continue pretraining a backbone on in-domain text before fine-tuning it.

The loss is the cross-entropy over the masked tokens, as ``run_mlm.py`` and BERT compute it; validation reports the
perplexity and the accuracy on the masked tokens. The checkpoint (or its export, a ``...ForMaskedLM`` folder that
``pipeline("fill-mask")`` loads) is a ``model.init_from`` or ``model.backbone`` for a later fine-tuning.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from transformers import AutoModelForMaskedLM
from typing_extensions import override

from ftlit.core.module import FineTuneModule
from ftlit.errors import ConfigError
from ftlit.tasks.mlm.data import IGNORE_INDEX, MaskedLMDataModule
from ftlit.tasks.mlm.metric import MaskedAccuracy, Perplexity


class MaskedLanguageModel(FineTuneModule):
    """Domain-adaptive pretraining (Gururangan et al. 2020): the backbone with its masked-LM head, on unlabelled
    text; ``predict`` fills each mask token of a text with the most likely tokens."""

    auto_class = AutoModelForMaskedLM
    data_class = MaskedLMDataModule

    def __init__(self, *args: Any, top_k: int = 5, **kwargs: Any) -> None:
        """
        Args:
            top_k: How many tokens ``predict`` gives for each mask token, most likely first.
            *args: Shared model options: see ``FineTuneModule``.
            **kwargs: Shared model options: see ``FineTuneModule``.
        """
        if top_k < 1:
            raise ConfigError("model.top_k", f"must be a positive integer, got {top_k}")
        super().__init__(*args, **kwargs)

    def build_metrics(self, stage: Literal["val", "test"]) -> MetricCollection:
        """Perplexity and accuracy over the masked tokens (``val/perplexity``, ``val/accuracy``)."""
        return MetricCollection({"perplexity": Perplexity(), "accuracy": MaskedAccuracy()})

    def loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the masked tokens; 0 for a batch where no token was masked."""
        labels = batch["labels"]
        total = F.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        # A sum over a count kept on the device: a batch without masks gives 0, not 0/0, with no host sync.
        return total / (labels != IGNORE_INDEX).sum().clamp(min=1)

    def loss_weight(self, batch: dict[str, Any]) -> torch.Tensor:
        # The loss is a mean over masked tokens, not over chunks.
        return (batch["labels"] != IGNORE_INDEX).sum()

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, Any], metrics: MetricCollection) -> None:
        metrics.update(logits, batch["labels"])

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """For each text, each mask token's ``top_k`` fills: ``{"masks": [[{"token", "token_id", "score"}, ...],
        ...]}``, masks in text order, ``score`` the softmax probability over the vocabulary (as ``fill-mask``)."""
        tokenizer = self.trainer.datamodule.tokenizer
        probs = self(batch).float().softmax(-1)
        rows = []
        for ids, row_probs in zip(batch["input_ids"], probs, strict=True):
            masks = []
            for position in (ids == tokenizer.mask_token_id).nonzero().flatten().tolist():
                scores, tokens = row_probs[position].topk(self.hparams.top_k)
                masks.append(
                    [
                        {"token": tokenizer.decode([t]), "token_id": t, "score": s}
                        for t, s in zip(tokens.tolist(), scores.tolist(), strict=True)
                    ]
                )
            rows.append({"masks": masks})
        return rows
