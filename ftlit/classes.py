"""Classes named by dotted path in a config or a checkpoint: imported here, and named back the way users write them."""

from __future__ import annotations

import importlib
import sys


def find_class(path: str, default_module: str | None = None, imported_only: bool = False) -> type | None:
    """The class ``path`` names (``package.module.Class``; a bare name is looked up in ``default_module``), or
    ``None`` when it does not import or is not a class.

    With ``imported_only`` (a path read from a file, e.g. a checkpoint's ``_class_path``), only ftlit's own modules
    and modules already imported are looked in: importing runs a module's code, and a file's contents are data.
    """
    module, _, name = path.rpartition(".")
    module = module or default_module or ""
    if imported_only and module not in sys.modules and not (module == "ftlit" or module.startswith("ftlit.")):
        return None
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError, TypeError):
        return None
    return found if isinstance(found, type) else None


def class_path(cls: type) -> str:
    """The shortest dotted path a config can name ``cls`` by: its package's when the package exports it
    (``ftlit.tasks.ner.TokenClassifier``), else its module's."""
    package = cls.__module__.rpartition(".")[0]
    if package and getattr(importlib.import_module(package), cls.__name__, None) is cls:
        return f"{package}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"
