"""src/plainrl is exactly what the chapter notebooks export: nobody edits it by hand."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "src" / "plainrl"


def exported_files(lib):
    return {
        p.relative_to(lib).as_posix()
        for p in lib.rglob("*.py")
        if "__pycache__" not in p.parts
    }


def test_src_matches_notebooks(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(
        ROOT / "chapters",
        tmp_path / "chapters",
        ignore=shutil.ignore_patterns(".ipynb_checkpoints"),
    )
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "nbdev_export.py")],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    fresh = tmp_path / "src" / "plainrl"
    ours, theirs = exported_files(LIB), exported_files(fresh)
    only_here = sorted(ours - theirs)
    missing = sorted(theirs - ours)
    differ = sorted(
        f for f in ours & theirs if not filecmp.cmp(LIB / f, fresh / f, shallow=False)
    )
    assert not (only_here or missing or differ), (
        "src/plainrl is out of sync with the notebooks; run `make export` and commit.\n"
        f"  not exported by any notebook: {only_here}\n"
        f"  exported but missing: {missing}\n"
        f"  different: {differ}"
    )
