"""`make bench` end to end, in its --quick mode: the page and its figures are written,
with every section, peers that are not installed said to be so, and no CPU figure
called a GPU one; `make gpu-check` refuses without CUDA; and no peer is imported by
the package."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    "benchmarks/<name>.py as a module (a script beside the package, not in it)."
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_page(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    threads = torch.get_num_threads()
    try:
        assert load("bench.py").main(["--quick", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_quick_bench_writes_every_section_and_both_figures(quick_page):
    page = quick_page.read_text()
    headings = ["# Benchmarks", "## 1. CartPole throughput", "## 2. Time to solve"]
    headings += ["## 3. The language-model engine against TRL", "## GPU"]
    for heading in headings:
        assert heading in page
    assert "`python benchmarks/bench.py`" in page and "quick mode" in page
    for png in re.findall(r":::\{figure\} (\S+)", page):
        assert (quick_page.parent / png).read_bytes()[:4] == b"\x89PNG"
    assert len(re.findall(r"^:alt: \S", page, re.M)) == 2  # both figures, alt text
    if not torch.cuda.is_available():
        assert "Not measured: no GPU has run `make gpu-check`" in page


def test_peers_that_are_missing_are_said_so_and_the_rest_measured(quick_page):
    bench = load("bench.py")
    page = quick_page.read_text()
    section1 = page.split("## 1.")[1].split("## 2.")[0]
    header = next(line for line in section1.splitlines() if line.startswith("| copies"))
    said = re.search(r"Not installed, so not measured: (.*)\.", section1)
    missing = said.group(1).split(", ") if said else []
    for module, column in (("gymnasium", "Gymnasium step"), ("envpool", "EnvPool step"),
                           ("gymnax", "gymnax rollout")):  # fmt: skip
        assert (column in header) == bench.installed(module)
        assert (bench.PEERS[module] in missing) != bench.installed(module)
    assert "plainrl rollout" in header and "plainrl step" in header
    assert ("TRL is not installed" in page) != bench.installed("trl")


def test_gpu_check_refuses_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: `make gpu-check` measures")
    out = tmp_path / "rows.md"
    assert load("gpu_check.py").main(["--out", str(out)]) == 2
    assert not out.exists()  # nothing written: no CPU figure as a GPU one


def test_the_package_never_imports_a_peer():
    # (not accelerate: transformers imports it whenever it is installed)
    peers = ["gymnasium", "gymnax", "jax", "envpool", "trl", "datasets"]
    modules = "plainrl, plainrl.cli, plainrl.runs, plainrl.hf, plainrl.envs.fused"
    code = f"import sys, {modules}; print([p for p in {peers} if p in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    assert not (ROOT / "src" / "plainrl" / "bench.py").exists()
