"""The package's layout holds: imports run one way (commands -> tasks -> core -> shared utilities), a task folder
imports no other task's, nothing imports the command line or the old packages back, and every task model names
its own data module."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from conftest import REPO
from ftlit.core.module import FineTuneModule

PACKAGE = REPO / "ftlit"
# The old packages: re-exports for users' class paths, which ftlit itself never imports.
OLD = ("ftlit.models", "ftlit.data", "ftlit.callbacks", "ftlit.metrics")
# Lower may be imported by higher, never the other way round. Shared utilities are everything else: errors,
# backbone, checkpoint I/O, run folders, checks, classes, upstream.
LAYERS = {"ftlit.commands": 3, "ftlit.serve": 3, "ftlit.search": 2, "ftlit.tasks": 2, "ftlit.core": 1}
# The modules that may import the command line: the entry point, and `ftlit tune`, which reads `ftlit fit` configs
# with the CLI's own parser (inside the command, so importing it starts no cycle).
CLI_USERS = ("ftlit.__main__", "ftlit.commands.tune")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    if name in ("ftlit.cli", "ftlit.__main__") or name.startswith(OLD):
        return 4
    return next((n for prefix, n in LAYERS.items() if name == prefix or name.startswith(prefix + ".")), 0)


def ftlit_imports(path: Path) -> list[str]:
    """Every ftlit module ``path`` imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from ftlit.core import strategies` imports ftlit.core.strategies.
            found += [f"{node.module}.{a.name}" for a in node.names]
    return [name for name in found if name == "ftlit" or name.startswith("ftlit.")]


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_run_one_way(path):
    name = module_name(path)
    for imported in ftlit_imports(path):
        assert not imported.startswith("ftlit.cli") or name in CLI_USERS, f"{name} imports the CLI back"
        if name.startswith(OLD):
            continue
        assert not imported.startswith(OLD), f"{name} imports the old package {imported}: import from its new home"
        assert layer(imported) <= layer(name), f"{name} (layer {layer(name)}) imports {imported} ({layer(imported)})"
        if name.startswith("ftlit.tasks.") and imported.startswith("ftlit.tasks."):
            mine, theirs = name.split(".")[2], imported.split(".")[2]
            assert mine == theirs, f"{name} imports another task's module {imported}"


def test_the_layout_rule_catches_a_backward_import(tmp_path):
    # The rule above must be able to fail: a core module importing a task is reported.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ftlit.tasks.ner.data import TokenClassificationDataModule\n")
    imported = ftlit_imports(bad)
    assert imported == ["ftlit.tasks.ner.data.TokenClassificationDataModule"]
    assert layer(imported[0]) > layer("ftlit.core.module")


def task_models() -> list[type]:
    import ftlit.tasks.ner
    import ftlit.tasks.qa
    import ftlit.tasks.text

    found = []
    for package in (ftlit.tasks.text, ftlit.tasks.ner, ftlit.tasks.qa):
        found += [getattr(package, n) for n in package.__all__ if inspect.isclass(getattr(package, n))]
    return [cls for cls in found if issubclass(cls, FineTuneModule)]


@pytest.mark.parametrize("cls", task_models(), ids=lambda c: c.__name__)
def test_a_task_model_trains_on_a_data_module_of_its_own_folder(cls):
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} unimplemented"
    task = cls.__module__.split(".")[2]
    assert cls.data_class.__module__.split(".")[:3] == ["ftlit", "tasks", task]


def ftlit_classes() -> list[type]:
    import importlib
    import pkgutil

    import ftlit

    found = []
    for info in pkgutil.walk_packages(ftlit.__path__, "ftlit."):
        module = importlib.import_module(info.name)
        found += [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    return found


def unmarked_overrides(cls: type) -> list[str]:
    """Methods of ``cls`` that override a method of a class outside ftlit (Lightning's hooks, torchmetrics',
    torch's) without ``@override``."""
    foreign = {name for base in cls.__mro__[1:] if not base.__module__.startswith("ftlit") for name in vars(base)}
    missing = []
    for name, value in vars(cls).items():
        function = value.__func__ if isinstance(value, classmethod | staticmethod) else value
        if name.startswith("__") or name not in foreign or isinstance(value, property) or not callable(function):
            continue
        if isinstance(function, type):  # a class the base's metaclass made (autograd's _backward_cls), not a method
            continue
        if not (getattr(value, "__override__", False) or getattr(function, "__override__", False)):
            missing.append(name)
    return missing


def test_overridden_hooks_say_so():
    missing = {cls.__qualname__: unmarked_overrides(cls) for cls in ftlit_classes()}
    assert not {k: v for k, v in missing.items() if v}, "add @override (typing_extensions) to these"


def test_the_override_rule_catches_a_bare_hook():
    import lightning.pytorch as pl

    class Bare(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None: ...

    assert unmarked_overrides(Bare) == ["on_train_start"]


def test_test_modules_import_no_other_test_module():
    # Shared helpers live in conftest.py and tests/helpers/: a test module imported by another runs its tests twice
    # and ties the two together.
    offenders = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert not offenders, offenders
