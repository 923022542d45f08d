"""Masked-language-model training on unlabelled in-domain text (domain-adaptive pretraining)."""

from ftlit.tasks.mlm.data import MaskedLMDataModule
from ftlit.tasks.mlm.metric import MaskedAccuracy, Perplexity
from ftlit.tasks.mlm.model import MaskedLanguageModel

__all__ = ["MaskedAccuracy", "MaskedLMDataModule", "MaskedLanguageModel", "Perplexity"]
