"""Extractive question answering: a pretrained encoder with a start/end head over every token, scored like SQuAD.

Training follows Hugging Face's ``run_qa.py``: the loss is the mean of the cross-entropies of the start and the end
token. Evaluation and ``predict`` decode every window and pick each question's answer over all its windows with the
same functions (:mod:`ftlit.tasks.qa.answers`); :class:`~ftlit.tasks.qa.metric.SquadMetric` gathers the windows of
every process first and scores the answers as the official SQuAD v1.1 / v2.0 scripts do.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from transformers import AutoModelForQuestionAnswering, PretrainedConfig
from typing_extensions import override

from ftlit.core.datamodule import META
from ftlit.core.module import EVALUATED, FineTuneModule
from ftlit.errors import ConfigError
from ftlit.tasks.qa.answers import Span, answer_row, candidate_rows, choose_answers, decode_windows
from ftlit.tasks.qa.data import (
    CONTEXT,
    END,
    EXAMPLE_IDX,
    ID,
    OFFSETS,
    START,
    WINDOW_EXAMPLE,
    QuestionAnsweringDataModule,
)
from ftlit.tasks.qa.metric import SquadBreakdown, SquadMetric

# Which split each evaluation stage scores.
_SPLITS = {"val": "validation", "test": "test"}


class QuestionAnswering(FineTuneModule):
    """Extractive question answering: the answer is a span of the context (SQuAD v1.1, SQuAD v2.0, NewsQA, ...)."""

    auto_class = AutoModelForQuestionAnswering
    data_class = QuestionAnsweringDataModule
    predict_settings = ("n_best", "max_answer_length", "null_score_diff_threshold")

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
        # From the data module in setup(): whether "no answer" is a possible prediction.
        self.version_2 = False

    def configure_backbone(self, config: PretrainedConfig) -> PretrainedConfig:
        config = super().configure_backbone(config)
        # The span head has two outputs (start, end); a backbone fine-tuned for classification may say otherwise.
        if config.num_labels != 2:
            config.num_labels = 2
        return config

    def build_metrics(self, stage: Literal["val", "test"]) -> MetricCollection:
        """SQuAD exact match and F1 (with SQuAD v2.0 data, also per has-answer / no-answer group) over the split's
        examples, which the data module holds: built at :meth:`setup`, once the data is there."""
        return MetricCollection({"squad": self._squad(SquadMetric, stage)})

    @override
    def build_test_details(self) -> dict[str, Metric]:
        return {"squad": self._squad(SquadBreakdown, "test")}

    @override
    def describe_test_details(self, values: dict[str, Any]) -> dict[str, Any]:
        """``by_answer_length`` and ``by_answerability``: exact match and F1 per group of questions
        (:class:`~ftlit.tasks.qa.metric.SquadBreakdown`)."""
        return dict(values["squad"])

    def _squad(self, kind: type[SquadMetric], stage: Literal["val", "test"]) -> SquadMetric:
        """A SQuAD metric of the split's examples, which the data module holds."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if not isinstance(datamodule, QuestionAnsweringDataModule):
            raise ConfigError("data.class_path", "QuestionAnswering needs ftlit.tasks.qa.QuestionAnsweringDataModule")
        contexts, answers = datamodule.examples(_SPLITS[stage])
        return kind(
            contexts,
            answers,
            version_2=datamodule.version_2_with_negative,
            null_threshold=self.hparams.null_score_diff_threshold,
        )

    @override
    def attach_data(self, datamodule: Any) -> None:
        if not isinstance(datamodule, QuestionAnsweringDataModule):
            raise ConfigError("data.class_path", "QuestionAnswering needs ftlit.tasks.qa.QuestionAnsweringDataModule")
        self.version_2 = datamodule.version_2_with_negative

    @override
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        self.attach_data(datamodule)
        # The metrics hold this run's examples: built afresh for each stage, and only for splits the data has.
        for evaluated in [key for key in self.metrics if key in ("val", "test")]:
            del self.metrics[evaluated]
        for evaluated in EVALUATED.get(stage, ()):
            if datamodule.datasets is not None and _SPLITS[evaluated] in datamodule.datasets:
                self.evaluation_metrics(evaluated)

    @override
    def logged_metrics(self) -> set[str]:
        # SQuAD v2's groups are logged only on v2 data, which the model learns of at setup: all are allowed here.
        groups = ("", "HasAns_", "NoAns_")
        return {"train/loss", "val/loss", *(f"val/{g}{k}" for g in groups for k in ("exact", "f1"))}

    # --- model ----------------------------------------------------------------------------------------------

    @override
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Start and end logits of every token, stacked: ``[windows, tokens, 2]``."""
        out = self.model(**self.model_inputs(batch))
        return torch.stack((out.start_logits, out.end_logits), dim=-1)

    def loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Mean of the start and end cross-entropies, as the Hugging Face QA heads compute it."""
        start, end = logits.float().unbind(-1)
        return (F.cross_entropy(start, batch[START]) + F.cross_entropy(end, batch[END])) / 2

    def decode(self, logits: torch.Tensor, batch: dict[str, Any]) -> list[tuple[list[Span], float]]:
        """Best spans (character offsets into the context) and null score of every window of a batch."""
        return decode_windows(
            logits,
            batch[META][OFFSETS],
            batch.get("attention_mask"),
            self.hparams.n_best,
            self.hparams.max_answer_length,
        )

    def update_metrics(self, logits: torch.Tensor, batch: dict[str, Any], metrics: MetricCollection) -> None:
        """Send every candidate of every window of an evaluation batch to the SQuAD metric."""
        rows = candidate_rows(batch[META][EXAMPLE_IDX].tolist(), self.decode(logits, batch))
        idx, start, end, score, nulls = zip(*rows, strict=True)
        metrics["squad"].update(
            torch.tensor(idx),
            torch.tensor(start),
            torch.tensor(end),
            torch.tensor(score, dtype=torch.float),
            torch.tensor(nulls, dtype=torch.float),
        )

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """The answer to each question of the batch, in batch order.

        A row is ``{"id", "answer", "score", "start", "end"}``: ``answer == context[start:end]`` (``end``
        exclusive), chosen over all the question's windows by :func:`~ftlit.tasks.qa.answers.choose_answers`, as in
        evaluation. ``score`` is its probability among the question's ``n_best`` best candidates (softmax of start +
        end logits, the "no answer" candidate included under SQuAD v2.0), as ``run_qa.py``'s n-best lists give it.
        "No answer" is ``answer: ""`` with ``start``/``end`` null.
        """
        meta = batch[META]
        questions = len(meta[ID])
        inputs = self.model_inputs(batch)
        # A batch holds `questions` questions but may hold many more windows: run them at most that many at a time.
        windows = batch["input_ids"].shape[0]
        step = max(questions, 1)
        logits = torch.cat([self({k: v[a : a + step] for k, v in inputs.items()}) for a in range(0, windows, step)])
        decoded = self.decode(logits, batch)
        owner = meta[WINDOW_EXAMPLE].tolist()
        choices = choose_answers(candidate_rows(owner, decoded), self.version_2, self.hparams.null_score_diff_threshold)
        rows = []
        for i, (context, question_id) in enumerate(zip(meta[CONTEXT], meta[ID], strict=True)):
            spans = [span for w, (found, _) in enumerate(decoded) if owner[w] == i for span in found]
            null = min(n for w, (_, n) in enumerate(decoded) if owner[w] == i)
            rows.append(
                answer_row(question_id, context, choices.get(i), spans, null, self.hparams.n_best, self.version_2)
            )
        return rows
