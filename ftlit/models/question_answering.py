"""Extractive question answering: a pretrained encoder with a start/end head over every token, scored like SQuAD.

Training follows Hugging Face's ``run_qa.py``: the loss is the mean of the cross-entropies of the start and the end
token. Evaluation decodes every window with :func:`~ftlit.metrics.squad.best_spans` (the ``n_best`` best starts and
ends, spans of at most ``max_answer_length`` tokens inside the context) and :func:`~ftlit.metrics.squad.null_score`,
and :class:`~ftlit.metrics.SquadMetric` picks each question's answer over all its windows, on whichever processes they
were evaluated, and scores it as the official SQuAD v1.1 / v2.0 scripts do.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from transformers import AutoModelForQuestionAnswering, PretrainedConfig

from ftlit.data.question_answering import (
    ANSWERS,
    CONTEXT,
    END,
    EXAMPLE_IDX,
    ID,
    OFFSETS,
    START,
    WINDOW_EXAMPLE,
    QuestionAnsweringDataModule,
)
from ftlit.errors import ConfigError
from ftlit.metrics.squad import SquadMetric, best_spans, null_score
from ftlit.models.base import FineTuneModule

# A candidate answer: (start_char, end_char, score), end exclusive, score = start logit + end logit.
Span = tuple[int, int, float]
# Which split each evaluation stage scores.
_SPLITS = {"val": "validation", "test": "test"}


class QuestionAnswering(FineTuneModule):
    """Extractive question answering: the answer is a span of the context (SQuAD v1.1, SQuAD v2.0, NewsQA, ...)."""

    auto_class = AutoModelForQuestionAnswering
    data_class = "ftlit.data.QuestionAnsweringDataModule"
    # Positions, offsets and example bookkeeping travel with the batch: not model inputs.
    target_keys = (START, END, EXAMPLE_IDX, OFFSETS, CONTEXT, ANSWERS, ID, WINDOW_EXAMPLE)

    def __init__(
        self,
        *args: Any,
        n_best: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            n_best: Start and end positions tried per window when decoding an answer (``run_qa.py``'s
                ``n_best_size``); also the size of the candidate list a prediction's ``score`` is a probability over.
            max_answer_length: Longest answer, in tokens.
            null_score_diff_threshold: SQuAD v2.0 (``data.version_2_with_negative``): answer "" when the [CLS]
                ("no answer") score beats the best span's score by more than this. Raise it for fewer empty answers.
            *args: Shared model options: see ``FineTuneModule``.
            **kwargs: Shared model options: see ``FineTuneModule``.
        """
        for name, value in (("n_best", n_best), ("max_answer_length", max_answer_length)):
            if value < 1:
                raise ConfigError(f"model.{name}", f"must be a positive integer, got {value}")
        if not math.isfinite(null_score_diff_threshold):
            raise ConfigError("model.null_score_diff_threshold", f"must be finite, got {null_score_diff_threshold}")
        super().__init__(*args, **kwargs)
        if self.hparams.head_dropout is not None:
            raise ConfigError(
                "model.head_dropout",
                "question-answering heads have no dropout of their own: leave it unset (the backbone's applies)",
            )
        # One SquadMetric per evaluation stage, built in setup(): it needs the split's contexts and gold answers.
        self.squad = nn.ModuleDict()
        # From the data module in setup(): whether "no answer" is a possible prediction.
        self.version_2 = False

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        config = super().configure_backbone(config)
        # The span head has two outputs (start, end); a backbone fine-tuned for classification may say otherwise.
        if config.num_labels != 2:
            config.num_labels = 2
        return config

    def build_metrics(self) -> MetricCollection:
        """None here: the SQuAD metric needs the evaluated split's examples, so :meth:`setup` builds it."""
        return MetricCollection({})

    def logged_metrics(self) -> set[str]:
        # SQuAD v2's groups are logged only on v2 data, which the model learns of at setup: all are allowed here.
        groups = ("", "HasAns_", "NoAns_")
        return {"train/loss", "val/loss", *(f"val/{g}{k}" for g in groups for k in ("exact", "f1"))}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if not isinstance(datamodule, QuestionAnsweringDataModule):
            raise ConfigError("data.class_path", "QuestionAnswering needs ftlit.data.QuestionAnsweringDataModule")
        self.version_2 = datamodule.version_2_with_negative
        stages = {"fit": ["val"], "validate": ["val"], "test": ["test"]}.get(stage, [])
        for key in stages:
            split = _SPLITS[key]
            if datamodule.datasets is not None and split in datamodule.datasets:
                contexts, answers = datamodule.examples(split)
                self.squad[key] = SquadMetric(
                    contexts,
                    answers,
                    version_2=self.version_2,
                    null_threshold=self.hparams.null_score_diff_threshold,
                )

    # --- model ----------------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Start and end logits of every token, stacked: ``[windows, tokens, 2]``."""
        out = self.model(**{k: v for k, v in batch.items() if k not in self.target_keys})
        return torch.stack((out.start_logits, out.end_logits), dim=-1)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the start and end cross-entropies, as the Hugging Face QA heads compute it."""
        start, end = logits.float().unbind(-1)
        return (F.cross_entropy(start, batch[START]) + F.cross_entropy(end, batch[END])) / 2

    # --- decoding -------------------------------------------------------------------------------------------

    def decode_windows(self, logits: torch.Tensor, batch: dict[str, Any]) -> list[tuple[list[Span], float]]:
        """Best spans (character offsets into the context) and null score of every window of a batch.

        Each window is cut to its real tokens first (``attention_mask``), so that padding on either side changes
        nothing and the null score is read at [CLS], the window's first token.
        """
        logits = logits.detach().float().cpu()
        offsets = batch[OFFSETS].cpu()
        mask = batch.get("attention_mask")
        keep = mask.bool().cpu() if mask is not None else torch.ones(logits.shape[:2], dtype=torch.bool)
        out = []
        for w in range(logits.shape[0]):
            starts, ends = logits[w, keep[w], 0], logits[w, keep[w], 1]
            window = [None if a < 0 else (a, b) for a, b in offsets[w, keep[w]].tolist()]
            spans = best_spans(starts, ends, window, self.hparams.n_best, self.hparams.max_answer_length)
            out.append((spans, null_score(starts, ends)))
        return out

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, Any], metrics: SquadMetric) -> None:  # type: ignore[override]
        """Send every window of an evaluation batch to the SQuAD metric."""
        _send(metrics, batch[EXAMPLE_IDX].tolist(), self.decode_windows(logits, batch))

    # --- steps ----------------------------------------------------------------------------------------------

    def _qa_eval_step(self, batch: dict[str, Any], stage: str) -> None:
        logits = self(batch)
        loss = self.val_loss if stage == "val" else self.test_loss
        loss.update(self.loss(logits, batch), weight=self.loss_weight(batch))
        self.log(f"{stage}/loss", loss)
        self.update_metrics(logits, batch, self.squad[stage])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._qa_eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._qa_eval_step(batch, "test")

    def _log_scores(self, stage: str) -> None:
        """Score the epoch once (one sync, one decode) and log every score: ``val/exact``, ``val/f1``, ..."""
        if stage not in self.squad:
            return
        metric = self.squad[stage]
        # Two sanity-check batches would score every other question 0 (and warn about it): not worth a number.
        if not self.trainer.sanity_checking:
            scores = metric.compute()
            # Equal on every process already (the states were gathered); sync_dist only averages equal values.
            self.log_dict({f"{stage}/{k}": v for k, v in scores.items()}, prog_bar=stage == "val", sync_dist=True)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """The answer to each question of the batch, in batch order.

        A row is ``{"id", "answer", "score", "start", "end"}``: ``answer == context[start:end]`` (``end``
        exclusive), chosen over all the question's windows exactly as in evaluation. ``score`` is its probability
        among the question's ``n_best`` best candidates (softmax of start + end logits, the "no answer" candidate
        included under SQuAD v2.0), as ``run_qa.py``'s n-best lists give it. "No answer" is ``answer: ""`` with
        ``start``/``end`` null.
        """
        questions = len(batch[ID])
        inputs = {k: v for k, v in batch.items() if k not in self.target_keys}
        # A batch holds `questions` questions but may hold many more windows: run them at most that many at a time.
        windows = batch["input_ids"].shape[0]
        logits = torch.cat(
            [self({k: v[a : a + questions] for k, v in inputs.items()}) for a in range(0, windows, max(questions, 1))]
        )
        decoded = self.decode_windows(logits, batch)
        owner = batch[WINDOW_EXAMPLE].tolist()

        # The per-question choice is SquadMetric's own (sync off: each process answers its own questions). Gold
        # answers are unknown here; a placeholder satisfies the constructor and is never scored.
        chooser = SquadMetric(
            batch[CONTEXT],
            [[""]] * questions,
            version_2=self.version_2,
            null_threshold=self.hparams.null_score_diff_threshold,
            sync_on_compute=False,
        )
        _send(chooser, owner, decoded)
        choices = chooser.spans()

        rows = []
        for i, (context, question_id) in enumerate(zip(batch[CONTEXT], batch[ID], strict=True)):
            spans = [span for w, (found, _) in enumerate(decoded) if owner[w] == i for span in found]
            null = min(n for w, (_, n) in enumerate(decoded) if owner[w] == i)
            rows.append(self._answer_row(question_id, context, choices.get(i), spans, null))
        return rows

    def _answer_row(
        self, question_id: str, context: str, choice: tuple[int, int] | None, spans: list[Span], null: float
    ) -> dict:
        """The prediction row of one question, given the span SquadMetric chose (``None``: no answer) and all its
        candidates."""
        chosen: Span | None = None
        if choice is not None:
            # Its best score: the same offsets may come from several windows.
            chosen = max((s for s in spans if (s[0], s[1]) == choice), key=lambda s: s[2])
        elif not self.version_2:  # v1.1 with no valid span in any window: no answer, and no confidence in one
            return {"id": question_id, "answer": "", "score": 0.0, "start": None, "end": None}
        # run_qa.py's n-best list: the best candidates over all windows, plus "no answer" (None) under v2, which
        # stays in the list (as does the chosen answer) even when n_best others score higher.
        candidates: list[tuple[float, Span | None]] = [(span[2], span) for span in spans]
        if self.version_2:
            candidates.append((null, None))
        candidates.sort(key=lambda c: c[0], reverse=True)
        top = candidates[: self.hparams.n_best]
        for must in [chosen, None] if self.version_2 else [chosen]:
            if all(span != must for _, span in top):
                top.append((null if must is None else must[2], must))
        best = max(score for score, _ in top)
        weights = [math.exp(score - best) for score, _ in top]
        score = weights[[span for _, span in top].index(chosen)] / sum(weights)
        start, end = (chosen[0], chosen[1]) if chosen is not None else (None, None)
        answer = context[start:end] if chosen is not None else ""
        return {"id": question_id, "answer": answer, "score": score, "start": start, "end": end}


def _send(metric: SquadMetric, example_idx: list[int], decoded: list[tuple[list[Span], float]]) -> None:
    """Every candidate span of every window to ``metric``; a window without one still sends its null score."""
    rows = []
    for i, (spans, null) in zip(example_idx, decoded, strict=True):
        rows += [(i, s, e, score, null) for s, e, score in spans] or [(i, -1, -1, -math.inf, null)]
    idx, start, end, score, nulls = zip(*rows, strict=True)
    metric.update(
        torch.tensor(idx),
        torch.tensor(start),
        torch.tensor(end),
        torch.tensor(score, dtype=torch.float),
        torch.tensor(nulls, dtype=torch.float),
    )
