"""Knowledge distillation (Hinton et al. 2015): a fine-tuned teacher's softened predictions as a second target.

The student's loss is ``alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``, where ``_T`` is a
prediction at temperature T (softmax over the labels of a single-label classifier; for a multi-label one, each
label's own sigmoid, as a two-way distribution). The teacher is frozen, in eval mode, runs without gradients, and is
held outside the student's modules: it is in no checkpoint, optimizer or DDP wrapper.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from ftlit import backbone
from ftlit.core import warm_start
from ftlit.errors import ConfigError

FIELD = "model.teacher"
Kind = Literal["softmax", "sigmoid"]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, kind: Kind) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)``, averaged over rows (and, for ``sigmoid``, over labels): the T^2 keeps
    its gradient's size independent of T. Zero when the student's logits equal the teacher's."""
    s, t = student.float() / temperature, teacher.float() / temperature
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
    the student's tokenizer; its logits come out in the student's label order."""

    def __init__(self, model: PreTrainedModel, order: list[int] | None, inputs: tuple[str, ...]) -> None:
        self.model = model.eval().requires_grad_(False)
        self.order = order  # teacher column of each student label, when the orders differ
        self.inputs = inputs  # the batch tensors its forward takes

    @classmethod
    def load(
        cls,
        source: str,
        label_names: list[str],
        tokenizer: PreTrainedTokenizerBase,
        student_parameters: int,
        input_names: list[str],
        trust_remote_code: bool = False,
    ) -> Teacher:
        """Load and check ``source``: a sequence classifier over the same labels (in any order), whose tokenizer
        is the student's (the data is tokenized once, for both)."""
        with warm_start.source_folder(source, trust_remote_code, field=FIELD) as folder:
            config = backbone.load_config(str(folder), FIELD, trust_remote_code=trust_remote_code)
            kinds = config.architectures or []
            if not any(k.endswith("ForSequenceClassification") for k in kinds):
                what = ", ".join(kinds) or "model without a head"
                raise ConfigError(
                    FIELD, f"'{source}' is a {what}, not a sequence classifier: distil from one of the same labels"
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
                model = AutoModelForSequenceClassification.from_pretrained(
                    folder, dtype=torch.float32, trust_remote_code=trust_remote_code
                )
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
        """The teacher's logits for a batch of the student's inputs, in the student's label order."""
        device = next(iter(inputs.values())).device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        logits = self.model(**{k: v for k, v in inputs.items() if k in self.inputs}).logits
        return logits if self.order is None else logits[:, self.order]
