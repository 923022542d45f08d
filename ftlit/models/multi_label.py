"""Old module path of MultiLabelClassifier: see ``ftlit.tasks.text``."""

from ftlit.tasks.text import MultiLabelClassifier

__all__ = ["MultiLabelClassifier"]
