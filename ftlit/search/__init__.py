"""Hyperparameter search (``ftlit tune``): the search file, the study, and the reporter inside each trial."""

# What a study folder holds besides its trials (``trials/<n>/``), written by ``ftlit tune``, read by ``ftlit report``.
STUDY_JSON = "study.json"  # the metric, its direction, the trials by state, the best trial
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
PLOTS = {"history.png": "plot_optimization_history", "importances.png": "plot_param_importances"}
