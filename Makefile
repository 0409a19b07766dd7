# plainrl: `make book` renders the course, `make test` checks everything. Both set up .venv first.
#   make book TORCH=cpu     the CPU-only torch wheel (no CUDA libraries); see TORCH below
#   make lab                the notebooks in JupyterLab, from .venv
#   make clean              remove .venv and the built book: the next make starts over
SHELL := bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MATHJAX := book/_static/mathjax/tex-chtml.js
CJKFONT := book/_static/fonts/noto-sans-sc-chinese-simplified-400-normal.woff2
HTML := book/_build/html

# Which build of torch==2.13.0 goes into .venv:
#   pypi (default)  the registry's wheel: the CUDA build with its CUDA libraries on Linux (GPU or
#                   not), the CPU/MPS wheel on macOS
#   cuda            the same as pypi (on Linux the registry's wheel is the CUDA build)
#   cpu             the CPU-only wheel from PyTorch's CPU index
#   cuXXX           that CUDA build from PyTorch's cuXXX index, e.g. TORCH=cu128
# torch is installed first from that index, then the rest with a constraint that keeps it.
TORCH ?= pypi
TORCH_VERSION := 2.13.0
TORCH_INDEX := https://download.pytorch.org/whl
ifeq ($(filter pypi cuda cpu cu%,$(TORCH)),)
$(error TORCH=$(TORCH): expected pypi (the default), cuda, cpu or cuXXX such as cu128)
endif
ifeq ($(shell uname -s)-$(filter cu%,$(TORCH)),Darwin-$(TORCH))
$(error TORCH=$(TORCH): PyTorch has no CUDA builds for macOS; use TORCH=pypi (CPU and MPS))
endif
TORCH_BUILD := $(if $(filter cuda,$(TORCH)),pypi,$(TORCH))
TORCH_PIN := $(VENV)/torch-constraint.txt

# The stamp records the interpreter and the torch build; .venv is rebuilt from scratch when it was
# made by another Python or with another build, or is broken (tools/venv_state.sh says why).
WANT := python $(shell $(PYTHON) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) torch $(TORCH_BUILD)
REBUILD := $(shell bash tools/venv_state.sh $(VENV) '$(WANT)')
# The prerequisites checked up front: `make test` needs more than the book does.
GOAL := $(if $(filter test,$(MAKECMDGOALS)),test,$(if $(filter lab,$(MAKECMDGOALS)),lab,book))

.PHONY: venv prereqs book export lint test lab bench peers gpu-check sweep clean FORCE

venv: prereqs $(STAMP)

prereqs:
	@bash tools/prereqs.sh $(GOAL) $(PYTHON)

$(STAMP): pyproject.toml $(if $(REBUILD),FORCE) | prereqs
	$(if $(REBUILD),@echo "rebuilding $(VENV): $(REBUILD)" && rm -rf $(VENV))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(TORCH_BUILD),pypi)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench,hf]"
else
	$(BIN)/python -m pip install torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX)/$(TORCH_BUILD)
	$(BIN)/python -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench,hf]" --constraint $(TORCH_PIN)
endif
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	echo "$(WANT)" > $(STAMP)

# MathJax served from the book itself, so the pages render offline. Vendored from the npm registry's
# `mathjax` package; without Node the book falls back to the CDN (book/_ext/local_mathjax.py says so).
$(MATHJAX): | prereqs
	@if command -v npm >/dev/null; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent mathjax@3.2.2 >/dev/null && tar xzf mathjax-3.2.2.tgz) && \
	  mkdir -p book/_static/mathjax/output/chtml && \
	  cp $$tmp/package/es5/tex-chtml.js book/_static/mathjax/ && \
	  cp -r $$tmp/package/es5/output/chtml/fonts book/_static/mathjax/output/chtml/ && rm -rf $$tmp; \
	else echo "note: npm not found, the book will load MathJax from its CDN"; fi

# A CJK webfont served from the book itself, so the Chinese terms render on a machine without CJK fonts:
# the simplified-Chinese subset of Noto Sans SC (regular weight, 1.1 MB, every character the book uses),
# vendored with its licence (OFL-1.1) from the npm registry's `@fontsource/noto-sans-sc` package.
# book/_static/cjk.css uses it for CJK characters only; without Node the pages use the reader's fonts
# (book/_ext/local_fonts.py says so).
FONTSOURCE := 5.3.0
$(CJKFONT): | prereqs
	@if command -v npm >/dev/null; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent @fontsource/noto-sans-sc@$(FONTSOURCE) >/dev/null && \
	    tar xzf fontsource-noto-sans-sc-$(FONTSOURCE).tgz package/LICENSE package/files/$(notdir $(CJKFONT))) && \
	  mkdir -p book/_static/fonts && cp $$tmp/package/files/$(notdir $(CJKFONT)) book/_static/fonts/ && \
	  cp $$tmp/package/LICENSE book/_static/fonts/LICENSE-noto-sans-sc.txt && rm -rf $$tmp; \
	else echo "note: npm not found, Chinese text will need a CJK font on the reader's machine"; fi

export: prereqs $(STAMP)
	$(BIN)/python tests/nbdev_export.py

book: prereqs $(STAMP) $(MATHJAX) $(CJKFONT)
	$(BIN)/jupyter-book build . --path-output book
	@echo "open $(HTML)/index.html"

# prereqs checks (or, as root, installs) Chromium for the browser check.
# Lint and format: ruff over the sources (the notebooks' code cells, the tests, the benchmarks),
# and lint over src/, which the notebooks generate (its formatting is the notebooks').
LINTED := chapters tests benchmarks

lint: prereqs $(STAMP)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED) src

test: prereqs $(STAMP) $(MATHJAX) $(CJKFONT) lint
	rm -rf $(HTML)
	$(BIN)/jupyter-book build . --path-output book -W -n --keep-going
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests chapters --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -n 2 --dist loadfile

# The notebooks in JupyterLab, with .venv's kernel (as root Jupyter wants --allow-root).
lab: prereqs $(STAMP)
	$(BIN)/jupyter lab chapters/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Benchmarks against real peers, measured side by side in one run: writes book/benchmarks.md and
# its figures (chapter 9). The peers (the `peers` extra, and gymnax without its stale pin of
# gymnasium) go into .venv here only; torch and gymnasium stay as pinned.
GYMNAX := gymnax==1.0.1
PEERS_STAMP := $(VENV)/.peers

$(PEERS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -c 'import importlib.metadata as m; print("torch==" + m.version("torch")); print("gymnasium==" + m.version("gymnasium"))' > $(VENV)/peers-constraint.txt
	$(BIN)/python -m pip install --quiet -e ".[dev,bench,hf,peers]" --constraint $(VENV)/peers-constraint.txt
	$(BIN)/python -m pip install --quiet --no-deps $(GYMNAX)
	touch $(PEERS_STAMP)

peers: prereqs $(PEERS_STAMP)

bench: prereqs $(PEERS_STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench.py --out book/benchmarks.md

# Chapter 8's full sweep (every variant over three seeds, about 15 minutes on one thread):
# writes chapters/results/verifier_sweep.json, which the chapter reads and plots.
sweep: prereqs $(STAMP)
	cd chapters && OMP_NUM_THREADS=1 ../$(BIN)/python -c \
	  'from plainrl.verifier import sweep; sweep("results/verifier_sweep.json")'

# On a machine with a CUDA GPU (at most 5 minutes): the CUDA-only tests, a short training run of
# each task on the GPU (bf16 for the transformer) and the benchmarks' GPU rows, written to
# benchmarks/gpu_rows.md (commit it: the page shows it, with the GPU named). Refuses without CUDA.
gpu-check: prereqs $(PEERS_STAMP)
	$(BIN)/python benchmarks/gpu_check.py --out benchmarks/gpu_rows.md

# Start over: the next make builds .venv and the book from scratch.
clean:
	rm -rf book/_build book/_static/mathjax book/_static/fonts $(VENV)
