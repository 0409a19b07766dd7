"`make bench` end to end, in its --quick mode: the page is written, with every section and no CPU figure called a GPU one."
import os

import torch

from plainrl.bench import main


def test_quick_bench_writes_the_page(tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "benchmarks.md"
    try:
        assert main(["--quick", "--out", str(out)]) == 0
        assert torch.get_num_threads() == 1  # as --threads says: the throughput table puts back what it changes
    finally: torch.set_num_threads(threads)
    page = out.read_text()
    for heading in ("# Benchmarks", "## 1. Environment throughput", "## 2. Time to solve", "## 3. Token task", "## GPU"):
        assert heading in page
    section1 = page.split("## 1.")[1].split("## 2.")[0]
    rows = [line.split(" | ") for line in section1.splitlines() if line[2:3].isdigit()]  # the table's data rows
    multi = os.cpu_count() > 1  # then the compiled step is measured on one thread and on all cores
    assert [r[0] for r in rows] == ["| 1", "| 64"] and all(len(r) == (9 if multi else 7) for r in rows)
    assert (f"compiled, {os.cpu_count()} threads / Gymnasium" in section1) == multi
    if not torch.cuda.is_available(): assert "Not measured yet: no GPU was available" in page
