"""Token classification (NER): a pretrained encoder with a tag classifier over every token, scored on entities.

Training and metrics follow Hugging Face's ``run_ner.py``: cross-entropy over the labelled sub-tokens (the first of
each word unless ``data.label_all_subtokens``), and entity-level precision, recall and F1 as ``seqeval`` computes
them (:class:`~ftlit.tasks.ner.metric.SpanF1`). Evaluation and predict batches hold every window of their sentences
(``ftlit.tasks.ner.data``): each word is read once, and scored and decoded per sentence, so entities that cross a
window edge stay whole.
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
from ftlit.tasks.ner.data import (
    TEXT,
    WINDOW_ROW,
    WORD_IDS,
    WORD_SPANS,
    TokenClassificationDataModule,
    checkpoint_words,
    words_mismatch,
)
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
        # The word splitter of the data this model was trained on, once it is loaded from a checkpoint (see
        # on_load_checkpoint): what explain and the report split raw text with.
        self.words: str | None = None

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.words = checkpoint_words(checkpoint.get("datamodule_hyper_parameters") or {})
        # The CLI refuses a mismatch before any work (checkpoint_settings); this catches one from Python.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if isinstance(datamodule, TokenClassificationDataModule):
            error = words_mismatch(self.words, datamodule.words)
            if error is not None:
                raise error

    @override
    def attach_data(self, datamodule: Any) -> None:
        # A model built from an exported folder (ftlit serve) learns its splitter from the data module, which read it
        # from the export's ftlit.json.
        if self.words is None and isinstance(datamodule, TokenClassificationDataModule):
            self.words = datamodule.words

    @override
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The backbone's logits; the windows of an evaluation or predict batch (possibly many more than its rows)
        run at most as many at a time as the batch has rows, as QA's do."""
        meta = batch.get(META)
        if not meta or WINDOW_ROW not in meta:
            return super().forward(batch)
        step = max(meta[WINDOW_ROW][-1] + 1, 1)
        inputs = self.model_inputs(batch)
        windows = batch["input_ids"].shape[0]
        if windows <= step:
            return self.model(**inputs).logits
        return torch.cat(
            [self.model(**{k: v[a : a + step] for k, v in inputs.items()}).logits for a in range(0, windows, step)]
        )

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
        preds, labels = logits.argmax(-1), batch["labels"]
        meta = batch.get(META)
        if meta and WINDOW_ROW in meta:
            # One sequence per sentence, its words in order, whichever window each was read in.
            preds, labels = (by_sentence(t, meta[WORD_IDS], meta[WINDOW_ROW]) for t in (preds, labels))
        metrics.update(preds, labels)

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

        A word's tag is the prediction at its first sub-token, in the window where that token is furthest from a cut
        (long texts are read in overlapping windows); entities are read from the word tags as seqeval reads them.
        ``score`` is the mean probability of the predicted tag over the entity's words. ``tags`` holds one tag per
        word, as ``data.words`` split the text (``O`` for a word that made no token at all).
        """
        probs = self(batch).float().softmax(-1)
        meta = batch[META]
        reads = meta[WORD_IDS]
        window, token = (reads >= 0).nonzero(as_tuple=True)
        score, ids = (t[window, token].tolist() for t in probs.max(-1))
        spans = [[(a, b) for a, b in row if a >= 0] for row in meta[WORD_SPANS].tolist()]
        word_tags = [["O"] * len(s) for s in spans]
        conf = [[0.0] * len(s) for s in spans]
        owner = meta[WINDOW_ROW]
        for w, word, tag, p in zip(window.tolist(), reads[window, token].tolist(), ids, score, strict=True):
            word_tags[owner[w]][word], conf[owner[w]][word] = self.label_names[tag], p
        rows = []
        for text, tags, confidence, row_spans in zip(meta[TEXT], word_tags, conf, spans, strict=True):
            entities = []
            for type_, first, last in extract_entities(tags):
                start, end = row_spans[first][0], row_spans[last][1]
                entities.append(
                    {
                        "text": text[start:end],
                        "type": type_,
                        "start": start,
                        "end": end,
                        "score": sum(confidence[first : last + 1]) / (last + 1 - first),
                    }
                )
            rows.append({"entities": entities, "tags": tags})
        return rows


def by_sentence(values: torch.Tensor, reads: torch.Tensor, owner: list[int]) -> torch.Tensor:
    """Per-window token values (predicted or gold tag ids, ``[windows, tokens]``) as one row per sentence holding the
    value where each word is read, in word order (``[sentences, words]``); -100 where a word made no token and in
    padding, so the metrics drop it."""
    window, token = (reads >= 0).nonzero(as_tuple=True)
    words = reads[window, token]
    rows = torch.tensor(owner, device=reads.device)[window]
    width = int(words.max()) + 1 if words.numel() else 1
    out = torch.full((owner[-1] + 1, width), IGNORE_INDEX, dtype=values.dtype, device=values.device)
    out[rows, words] = values[window, token]
    return out
