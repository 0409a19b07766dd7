"""Every code block of README.md and book/intro.md runs as pasted.

- A ```python block runs in a fresh interpreter (the project's), in an empty temporary
  directory; a failure shows the block and its error. A block whose first line is
  `# not run by the tests: <reason>` (a GPU recipe that downloads a model) is skipped
  with that reason; its API is run on a tiny local model in chapter 10.
- A ```bash block runs line by line (a trailing backslash continues a line) with bash,
  in a temporary directory where `.venv` is the project's environment, so
  `.venv/bin/...` works as pasted and run directories land in the temporary directory.
  Not run: `make ...` lines (make sets up and checks everything; `make test` runs this
  file) and lines whose comment says `# not run by the tests: <reason>` (installs,
  downloads). A `plainrl train` line (not `--help`) runs with TINY_BUDGET appended to
  its train command (a line `train ...; sample ...` trains, then samples): it must
  parse its flags, train and write metrics.csv; exit 0 (solved) or 1 (the budget ran
  out) both pass.
- No line holds a placeholder (`...`, `<name>`): every value in a block is a real one.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "book" / "intro.md"]
SKIP = "# not run by the tests:"
TINY_BUDGET = ["--max-updates", "2"]
PLACEHOLDER = re.compile(r"\.\.\.|<[A-Za-z_][\w -]*>")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def blocks(language):
    "(doc, number, text) for every ```language block of the docs, numbered per doc."
    found = []
    for doc in DOCS:
        fenced = [m for m in FENCE.finditer(doc.read_text()) if m.group(1) == language]
        found += [(doc.relative_to(ROOT), i, m.group(2)) for i, m in enumerate(fenced)]
    return found


def command_lines(text):
    "The command lines of a bash block: continuations joined, comment lines dropped."
    lines, pending = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    return lines


def is_run(line):
    "False for make targets and for lines marked `# not run by the tests: <reason>`."
    return line.split()[0] != "make" and SKIP not in line


def code(line):
    "A shell line without its trailing comment (no command in the docs quotes a `#`)."
    return line.split(" #")[0].strip()


def bash_lines():
    "(doc, number, line) for every bash line the tests run."
    found = []
    for doc, i, text in blocks("bash"):
        found += [(doc, i, line) for line in command_lines(text) if is_run(line)]
    return found


def env():
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def run(command, cwd):
    return subprocess.run(
        command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600
    )


def test_the_docs_have_blocks_to_run():
    assert blocks("python"), "no ```python block in README.md or book/intro.md"
    assert bash_lines(), "no bash line of README.md or book/intro.md is run"


ALL = blocks("python") + blocks("bash")


@pytest.mark.parametrize("doc, i, text", ALL, ids=[f"{d}-{i}" for d, i, _ in ALL])
def test_no_placeholders(doc, i, text):
    for line in text.splitlines():
        assert not PLACEHOLDER.search(line), f"{doc}: a placeholder in {line!r}"


@pytest.mark.parametrize(
    "doc, i, text", blocks("python"), ids=[f"{d}-{i}" for d, i, _ in blocks("python")]
)
def test_python_block_runs(doc, i, text, tmp_path):
    if text.lstrip().startswith(SKIP):
        pytest.skip(text.lstrip().splitlines()[0][len(SKIP) :].strip())
    result = run([sys.executable, "-c", text], tmp_path)
    error = result.stderr[-3000:]
    assert result.returncode == 0, (
        f"{doc}, python block {i} fails:\n{text}\n---\n{error}"
    )


@pytest.mark.parametrize(
    "doc, i, line", bash_lines(), ids=[code(line) for _, _, line in bash_lines()]
)
def test_bash_line_runs(doc, i, line, tmp_path):
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the environment this test runs in
    command = code(line)
    trains = " train " in f" {command} " and "--help" not in command
    if trains:  # the budget goes to the train command of `train ...; sample ...`
        parts = command.split("; ")
        parts = [
            " ".join([p, *TINY_BUDGET]) if " train " in f" {p} " else p for p in parts
        ]
        command = "; ".join(parts)
    result = run(["bash", "-c", command], tmp_path)
    error = (
        f"{doc}: `{command}` fails:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
    if trains:
        assert result.returncode in (0, 1), error
        assert list(tmp_path.glob("runs/**/metrics.csv")), f"{error}\n(no metrics.csv)"
    else:
        assert result.returncode == 0, error
