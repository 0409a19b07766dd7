# plainrl: `make book` renders the course, `make test` checks everything. Both set up .venv first.
SHELL := bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MATHJAX := book/_static/mathjax/tex-chtml.js
HTML := book/_build/html

.PHONY: venv book export test bench chromium clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# MathJax served from the book itself, so the pages render offline. Vendored from the npm registry's
# `mathjax` package; without Node the book falls back to the CDN (book/_ext/local_mathjax.py says so).
$(MATHJAX):
	@if command -v npm >/dev/null; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent mathjax@3.2.2 >/dev/null && tar xzf mathjax-3.2.2.tgz) && \
	  mkdir -p book/_static/mathjax/output/chtml && \
	  cp $$tmp/package/es5/tex-chtml.js book/_static/mathjax/ && \
	  cp -r $$tmp/package/es5/output/chtml/fonts book/_static/mathjax/output/chtml/ && rm -rf $$tmp; \
	else echo "note: npm not found, the book will load MathJax from its CDN"; fi

export: $(STAMP)
	$(BIN)/python tests/nbdev_export.py

book: $(STAMP) $(MATHJAX)
	$(BIN)/jupyter-book build . --path-output book
	@echo "open $(HTML)/index.html"

# The browser check needs Chromium: Debian's package, installed here when missing.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) $(MATHJAX) chromium
	rm -rf $(HTML)
	$(BIN)/jupyter-book build . --path-output book -W -n --keep-going
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests chapters --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -n 2 --dist loadfile

# Benchmarks against real peers, measured side by side in one run: writes book/benchmarks.md (chapter 8).
bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m plainrl.bench --out book/benchmarks.md

clean:
	rm -rf book/_build book/_static/mathjax $(VENV)
