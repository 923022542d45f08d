"""Pinned installs: the README's commands, CI and the Dockerfiles install what constraints.txt pins, and the pins
are inside pyproject.toml's ranges (a newcomer gets what CI tested; a user's own environment gets the ranges)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
INSTALLERS = ["README.md", ".ci/run", "docker/Dockerfile", "docker/Dockerfile.cpu"]


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    """constraints.txt's pins that apply to this interpreter and platform."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(default_environment()):
            [spec] = requirement.specifier
            assert spec.operator == "==", line
            assert _name(requirement.name) not in found, f"two pins of {requirement.name} apply here"
            found[_name(requirement.name)] = spec.version
    return found


def requirements() -> list[Requirement]:
    """Every requirement of the project and of its extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in listed]


def install_lines(text: str) -> list[str]:
    """Each ``pip install`` in a shell line, a README command or a Dockerfile RUN."""
    return [part.strip() for part in re.split(r"&&|\n", text) if re.search(r"\bpip install\b", part)]


@pytest.mark.parametrize("file", INSTALLERS)
def test_every_install_takes_the_pins(file):
    """torch==2.13.0 first (it is pinned there too), then every other install with -c constraints.txt."""
    lines = install_lines((ROOT / file).read_text(encoding="utf-8"))
    project = [line for line in lines if not re.search(r"pip install (-q )?torch==", line)]
    assert project, file
    # README's table of extras shows single `pip install -e ".[extra]"` lines for an environment of one's own.
    unpinned = [line for line in project if "-c constraints.txt" not in line and not line.startswith(("| `", "#"))]
    assert not unpinned, f"{file}: {unpinned}"


def test_the_pins_are_inside_the_ranges_and_cover_every_requirement():
    pinned = pins()
    for requirement in requirements():
        name = _name(requirement.name)
        assert name in pinned, f"{requirement.name} has no pin for Python {sys.version_info[:2]}: run .ci/pin"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} is outside pyproject.toml's {requirement}: run .ci/pin"
        )
    # The same pin installs PyTorch's CPU or CUDA build (a local tag such as +cpu would match only one).
    assert pinned["torch"] == "2.13.0"
