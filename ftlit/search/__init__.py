"""Hyperparameter search (``ftlit tune``): the search file, the study, and the reporter inside each trial."""
