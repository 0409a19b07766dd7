"""The set-up files agree.

environment.yml (the conda route) pins what pyproject.toml pins, its dependencies and
the extras `make venv` installs (dev, bench, hf; not `peers`, which `make bench`
installs); LICENSE and CITATION.cff match pyproject.toml and the package.
yaml comes with jupyter-book (the dev extra)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


# The extras `make venv` installs (the conda route's environment); `peers`, the
# benchmarks' other peers, is installed by `make bench` alone.
VENV_EXTRAS = ("dev", "bench", "hf")


def pyproject_pins(extras=VENV_EXTRAS):
    chosen = [PROJECT["optional-dependencies"][e] for e in extras]
    return set(PROJECT["dependencies"]) | {r for reqs in chosen for r in reqs}


def environment_pins():
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip = lines.index("  - pip:")
    items = [
        re.sub(r"^\s*-\s*", "", line)
        for line in lines[pip + 1 :]
        if line.strip().startswith("-")
    ]
    assert "-e ." in items, "environment.yml must install the package itself (-e .)"
    return {i for i in items if i != "-e ."}


def test_same_packages_and_pins():
    ours, conda = pyproject_pins(), environment_pins()
    only_ours, only_conda = sorted(ours - conda), sorted(conda - ours)
    assert ours == conda, (
        f"only in pyproject.toml: {only_ours}; only in environment.yml: {only_conda}"
    )


def test_the_extras_make_installs_are_pinned_in_both():
    assert {"dev", "bench", "hf"} <= set(PROJECT["optional-dependencies"])
    names = {re.split("[=<>]", r)[0] for r in environment_pins()}
    assert {"ruff", "gymnasium", "torch"} <= names


def test_make_venv_installs_those_extras_and_bench_the_peers():
    makefile = (ROOT / "Makefile").read_text()
    assert f'-e ".[{",".join(VENV_EXTRAS)}]"' in makefile
    assert '-e ".[dev,bench,hf,peers]"' in makefile and "GYMNAX := gymnax==" in makefile


def test_every_dependency_is_pinned():
    every = tuple(PROJECT["optional-dependencies"])
    assert all("==" in r for r in pyproject_pins(every)), (
        "pin every dependency exactly (torch==2.13.0 above all)"
    )


def test_python_version_agrees():
    assert "python=3.11" in (ROOT / "environment.yml").read_text()
    assert PROJECT["requires-python"] == ">=3.11"


def test_license_is_the_apache_license_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == "Apache-2.0"
    assert (
        "Apache License\n                           Version 2.0, January 2004" in text
    )
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Copyright 2026 the plainrl authors" in text


def test_citation_matches_the_package():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    init = (ROOT / "src" / "plainrl" / "__init__.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', init).group(1)
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == version
    assert cff["license"] == PROJECT["license"]
    assert cff["authors"] == [{"name": "the plainrl authors"}]
    assert str(cff["date-released"]) == "2026-12-01"
    assert cff["title"].startswith("plainrl")
