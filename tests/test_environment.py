"""environment.yml (the conda route) and pyproject.toml (the pip route) pin the same packages."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | {r for reqs in project["optional-dependencies"].values() for r in reqs}


def environment_pins():
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip = lines.index("  - pip:")
    items = [re.sub(r"^\s*-\s*", "", l) for l in lines[pip + 1:] if l.strip().startswith("-")]
    assert "-e ." in items, "environment.yml must install the package itself (-e .)"
    return {i for i in items if i != "-e ."}


def test_same_packages_and_pins():
    ours, conda = pyproject_pins(), environment_pins()
    assert ours == conda, f"only in pyproject.toml: {sorted(ours - conda)}; only in environment.yml: {sorted(conda - ours)}"


def test_every_dependency_is_pinned():
    assert all("==" in r for r in pyproject_pins()), "pin every dependency exactly (torch==2.13.0 above all)"


def test_python_version_agrees():
    assert "python=3.11" in (ROOT / "environment.yml").read_text()
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.11"
