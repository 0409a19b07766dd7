"""`make bench` end to end, in its --quick mode: the page is written, with every
section and no CPU figure called a GPU one; and Gymnasium stays out of the package."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    "benchmarks/bench.py as a module (it is a script beside the package, not in it)."
    spec = importlib.util.spec_from_file_location(
        "bench", ROOT / "benchmarks" / "bench.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_bench_writes_the_page(tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "benchmarks.md"
    try:
        assert load_bench().main(["--quick", "--out", str(out)]) == 0
        assert torch.get_num_threads() == 1  # the throughput table puts back threads
    finally:
        torch.set_num_threads(threads)
    page = out.read_text()
    headings = ("# Benchmarks", "## 1. Environment throughput", "## 2. Time to solve")
    for heading in (*headings, "## 3. Token task", "## GPU"):
        assert heading in page
    assert "`python benchmarks/bench.py`" in page
    section1 = page.split("## 1.")[1].split("## 2.")[0]
    rates, ratios = section1.split("Ratios to Gymnasium:")
    multi = os.cpu_count() > 1  # then the compiled step runs on 1 thread and all cores
    for table, columns in ((rates, 6 if multi else 5), (ratios, 4 if multi else 3)):
        rows = [line.split(" | ") for line in table.splitlines() if line[2:3].isdigit()]
        assert [r[0] for r in rows] == ["| 1", "| 64"]
        assert all(len(r) == columns for r in rows)
    assert (f"compiled, {os.cpu_count()} threads / Gymnasium" in section1) == multi
    if not torch.cuda.is_available():
        assert "Not measured yet: no GPU was available" in page


def test_the_package_never_imports_gymnasium():
    modules = "plainrl, plainrl.cli, plainrl.runs, plainrl.generate, plainrl.envs.fused"
    code = f"import sys, {modules}; assert 'gymnasium' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert not (ROOT / "src" / "plainrl" / "bench.py").exists()
