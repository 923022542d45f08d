"""The one error type ftlit raises for bad input; the CLI prints it as a single line."""


class ConfigError(ValueError):
    """Bad user input: the message names the config field and how to fix it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss): the message says where it happened and what to try."""
