"""Token classification (NER): a pretrained encoder with a tag classifier over every token, scored on entities.

Training and metrics follow Hugging Face's ``run_ner.py``: cross-entropy over the labelled sub-tokens (the first of
each word unless ``data.label_all_subtokens``), and entity-level precision, recall and F1 as ``seqeval`` computes
them (:class:`~ftlit.tasks.ner.metric.SpanF1`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from transformers import AutoModelForTokenClassification, PretrainedConfig
from typing_extensions import override

from ftlit.core.datamodule import META
from ftlit.core.module import FineTuneModule
from ftlit.core.results import score_table
from ftlit.errors import ConfigError
from ftlit.tasks.ner.data import TEXT, WORD_IDS, WORD_SPANS, TokenClassificationDataModule
from ftlit.tasks.ner.metric import IGNORE_INDEX, EntityConfusion, SpanF1, extract_entities

# SpanF1's micro scores; per entity type they are suffixed, e.g. ``f1_PER``.
_MICRO = ("precision", "recall", "f1")


class SpanScore(SpanF1):
    """One score of :class:`SpanF1` (``f1``, ``precision_PER``, ...) as a scalar, so Lightning can log the Metric.

    Lightning logs a Metric object only if its ``compute()`` is a tensor, and SpanF1 computes a dict of them.
    """

    def __init__(self, label_names: list[str], key: str, **kwargs: Any) -> None:
        """
        Args:
            label_names: Tag string of each tag id.
            key: Which of SpanF1's scores this metric computes.
            **kwargs: Passed to :class:`SpanF1`.
        """
        super().__init__(label_names, **kwargs)
        self.key = key

    @override
    def compute(self) -> torch.Tensor:
        return super().compute()[self.key]


class TokenClassifier(FineTuneModule):
    """Per-token tagging, scored on entities: named-entity recognition (CoNLL-2003, WNUT, OntoNotes)."""

    auto_class = AutoModelForTokenClassification
    data_class = TokenClassificationDataModule
    distill_kind = "token-softmax"

    def __init__(self, *args: Any, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        """
        Args:
            label_smoothing: Cross-entropy label smoothing (0 turns it off).
            *args: Shared model options: see ``FineTuneModule``.
            **kwargs: Shared model options: see ``FineTuneModule``.
        """
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError("model.label_smoothing", f"must be in [0, 1), got {label_smoothing}")
        super().__init__(*args, **kwargs)

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        return self.configure_labels(super().configure_backbone(config))

    def build_metrics(self, stage: Literal["val", "test"]) -> MetricCollection:
        """Entity precision, recall and F1 (micro); test adds them per entity type (``f1_PER``, ...). Validation
        reports the micro scores, which checkpointing monitors.

        One :class:`SpanScore` per score: they share one compute group, so the entities are counted once per batch.
        """
        if not self.label_names:
            raise ConfigError("model.label_names", "no tag names: the CLI links them from data.label_names")
        try:
            types = SpanF1(self.label_names).types
        except ValueError as err:
            raise ConfigError("model.label_names", str(err)) from None
        per_type = stage == "test"
        keys = [*_MICRO, *(f"{score}_{type_}" for type_ in types for score in _MICRO if per_type)]
        return MetricCollection({key: SpanScore(self.label_names, key) for key in keys}, compute_groups=True)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["labels"]
        if not (labels != IGNORE_INDEX).any():
            # Nothing labelled in the batch: cross-entropy would be 0/0.
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits.float().flatten(0, 1),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.hparams.label_smoothing,
        )

    @override
    def distill_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        # The tokens the labels are aligned to (the first sub-token of each word, unless data.label_all_tokens).
        return batch["labels"] != IGNORE_INDEX

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # The loss is a mean over labelled sub-tokens, not over sentences.
        return (batch["labels"] != IGNORE_INDEX).sum()

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], metrics: MetricCollection) -> None:
        metrics.update(logits.argmax(-1), batch["labels"])

    @override
    def build_test_details(self) -> dict[str, Metric]:
        return {"entities": EntityConfusion(self.label_names)}

    @override
    def describe_test_details(self, values: dict[str, Any]) -> dict[str, Any]:
        """``entity_confusion`` (types, and counts with rows gold and columns predicted, "no entity" last) and
        ``per_type`` (each type's entity precision, recall, F1 and support: SpanF1's numbers)."""
        counts = values["entities"]
        types = list(EntityConfusion(self.label_names).types)
        exact = counts.diag()[:-1].tolist()
        gold, predicted = counts.sum(1)[:-1].tolist(), counts.sum(0)[:-1].tolist()
        return {
            "entity_confusion": {"types": types, "counts": counts.tolist()},
            "per_type": score_table(
                types,
                exact,
                [p - t for p, t in zip(predicted, exact, strict=True)],
                [g - t for g, t in zip(gold, exact, strict=True)],
                "type",
            ),
        }

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Entities of each input row, with their text, type, character offsets and score.

        A word's tag is the prediction at its first sub-token; entities are read from the word tags as seqeval
        reads them. ``score`` is the mean probability of the predicted tag over the entity's words. ``tags`` holds
        one tag per whitespace-separated word (``None`` for words cut off by ``data.max_length``).
        """
        probs = self(batch).float().softmax(-1)
        score, ids = (t.tolist() for t in probs.max(-1))
        # Predict batches carry each token's word and each word's characters, for entity offsets.
        meta = batch[META]
        rows = []
        for i, (text, token_words) in enumerate(zip(meta[TEXT], meta[WORD_IDS].tolist(), strict=True)):
            spans = [(a, b) for a, b in meta[WORD_SPANS][i].tolist() if a >= 0]
            # A word that made no token at all is "O"; words past max_length have no prediction.
            seen = max(token_words, default=-1) + 1
            word_tags, conf, tagged = ["O"] * seen, [0.0] * seen, set()
            for t, word in enumerate(token_words):
                if word >= 0 and word not in tagged:
                    tagged.add(word)
                    word_tags[word], conf[word] = self.label_names[ids[i][t]], score[i][t]
            entities = []
            for type_, first, last in extract_entities(word_tags):
                start, end = spans[first][0], spans[last][1]
                entities.append(
                    {
                        "text": text[start:end],
                        "type": type_,
                        "start": start,
                        "end": end,
                        "score": sum(conf[first : last + 1]) / (last + 1 - first),
                    }
                )
            rows.append({"entities": entities, "tags": word_tags + [None] * (len(spans) - seen)})
        return rows
