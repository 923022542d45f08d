"""Old module path of MultiLabelDataModule: see ``ftlit.tasks.text``."""

from ftlit.tasks.text import MultiLabelDataModule

__all__ = ["MultiLabelDataModule"]
