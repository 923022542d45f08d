"""One folder per task family, each with its data module, model and (where it has one) metric: ``text``
(single-label and multi-label classification, regression), ``ner`` and ``qa``."""
