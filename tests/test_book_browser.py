"""What readers see: every rendered page, loaded from disk by headless Chromium with no network.

`make test` builds the book first (book/_build/html). MathJax must come from the book's own copy: the browser
cannot reach a CDN here, so typeset equations prove the local copy works."""
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"
PAGES = sorted((HTML / "chapters").glob("*.html")) + sorted((HTML / "book").glob("*.html"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: a CDN load would fail
         "--virtual-time-budget=20000", "--dump-dom"]


class Page(HTMLParser):
    "The parts of a dumped DOM the checks need: math containers, errors, images, and the visible text."
    def __init__(self):
        super().__init__()
        self.display_math = self.mathjax_display = self.merror = 0
        self.images, self.error_outputs, self.text = [], 0, []
        self.skip = 0  # depth inside <script>, <style>, <pre>, <code>

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag in ("script", "style", "pre", "code", "mjx-assistive-mml"): self.skip += 1
        if tag == "div" and "math" in cls: self.display_math += 1
        if tag == "mjx-container" and a.get("display") == "true": self.mathjax_display += 1
        if tag == "mjx-merror" or "merror" in cls: self.merror += 1
        if tag == "img" and a.get("src"): self.images.append(a["src"])
        if "traceback" in cls or ("output" in cls and "error" in cls): self.error_outputs += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style", "pre", "code", "mjx-assistive-mml"): self.skip = max(0, self.skip - 1)

    def handle_data(self, data):
        if not self.skip: self.text.append(data)


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Chromium not found: `make test` installs Debian's chromium package"
    return exe


def test_book_was_built():
    assert (HTML / "index.html").exists(), "no rendered book: run `make book` (make test builds it first)"
    assert PAGES, "no chapter pages in book/_build/html"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(HTML).as_posix() for p in PAGES])
def test_page_renders(page, chromium, tmp_path):
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path}", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "</html>" in dom, f"Chromium returned no DOM for {page.name}"
    parsed = Page(); parsed.feed(dom)
    text = "".join(parsed.text)
    assert parsed.mathjax_display >= parsed.display_math, (
        f"{page.name}: {parsed.display_math} display equations but only {parsed.mathjax_display} typeset by MathJax")
    assert "\\tag{" not in text and "$$" not in text, f"{page.name}: raw TeX left in the page text"
    assert parsed.merror == 0, f"{page.name}: {parsed.merror} MathJax TeX errors"
    assert parsed.error_outputs == 0, f"{page.name}: a cell shows an error"
    for src in parsed.images:
        url = urlparse(src)
        if url.scheme in ("http", "https", "data"): continue
        target = Path(unquote(url.path)) if url.scheme == "file" else (page.parent / unquote(url.path)).resolve()
        assert target.exists(), f"{page.name}: image {src} is missing"
