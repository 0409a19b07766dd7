"""What readers see: each rendered page, loaded from disk by headless Chromium, offline.

`make test` builds the book first (book/_build/html). One Chromium, driven over the
DevTools protocol (on a pipe, no extra package), opens each page in a 1400-pixel window,
waits for MathJax and the fonts, and opens every folded block (hidden code, solutions):
- MathJax typesets every equation from the book's own copy (no CDN can be reached here);
- no cell shows an error and every image exists;
- no code block scrolls sideways and every table fits the page or wraps;
- every Chinese character is drawn with the book's own CJK font (book/_static/cjk.css),
  never a fallback box, so the page reads the same on a machine without CJK fonts."""

import fcntl
import json
import os
import shutil
import subprocess
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"
PAGES = sorted((HTML / "chapters").glob("*.html")) + sorted(
    (HTML / "book").glob("*.html")
)
WIDTH = 1400  # the window the no-sideways-scroll checks use, in CSS pixels
CJK_FONT = "Noto Sans SC"  # the family book/_static/cjk.css serves
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: a CDN load would fail
    "--remote-debugging-pipe",
]

# Runs in the page once it has loaded: waits for MathJax and the fonts, opens every
# <details>, and measures. Elements holding Chinese text get data-cjk="i", so that the
# fonts used can be asked for each of them.
MEASURE = r"""
(async () => {
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  if (document.querySelector('script[src*="tex-chtml"], script[src*="mathjax"]')) {
    for (let i = 0; i < 400 && !(window.MathJax && MathJax.startup
                                 && MathJax.startup.promise); i++) await sleep(25);
    if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  }
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  void document.body.offsetHeight;
  await sleep(50);
  await document.fonts.ready;
  const article = document.querySelector("article") || document.body;
  const right = article.getBoundingClientRect().right;
  const code = [...document.querySelectorAll("div.highlight pre")]
    .filter((pre) => pre.scrollWidth > pre.clientWidth)
    .map((pre) => ({
      scroll: pre.scrollWidth, client: pre.clientWidth,
      line: pre.innerText.split("\n")
        .reduce((a, b) => (b.length > a.length ? b : a), ""),
    }));
  const tables = [...article.querySelectorAll("table")]
    .filter((t) => {
      const box = t.parentElement;
      return box.scrollWidth > box.clientWidth + 1
        || t.getBoundingClientRect().right > right + 1;
    })
    .map((t) => ({
      width: Math.round(t.getBoundingClientRect().width),
      text: t.innerText.slice(0, 60),
    }));
  const CJK = new RegExp("[\u2e80-\u2fdf\u3000-\u303f\u3400-\u4dbf"
                         + "\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]", "g");
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const counts = new Map();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const n = (node.data.match(CJK) || []).length;
    const el = node.parentElement;
    if (!n || !el || el.closest("script, style, noscript, mjx-assistive-mml")) continue;
    if (!el.getClientRects().length) continue;  // not rendered (display: none)
    const seen = counts.get(el) || { n: 0, text: "" };
    const text = (seen.text + node.data).trim().slice(0, 40);
    counts.set(el, { n: seen.n + n, text });
  }
  const cjk = [...counts].map(([el, c], i) => {
    el.setAttribute("data-cjk", String(i));
    return { i, n: c.n, text: c.text };
  });
  return { code, tables, cjk, dom: document.documentElement.outerHTML };
})()
"""


class DevTools:
    "Headless Chromium and the DevTools protocol over --remote-debugging-pipe."

    def __init__(self, exe, profile):
        to_browser, self.commands = os.pipe()
        self.replies, from_browser = os.pipe()

        def wire_pipes():
            # the protocol's fixed descriptors: the browser reads fd 3 and writes fd 4
            high_in = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_pipes,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self.last_id = 0
        self.pending = b""
        self.events = []

    def _read(self):
        while b"\0" not in self.pending:
            chunk = os.read(self.replies, 1 << 20)
            assert chunk, "Chromium closed the DevTools pipe"
            self.pending += chunk
        message, self.pending = self.pending.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, params=None, session=None):
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.last_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method, session):
        while True:
            for k, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    del self.events[: k + 1]
                    return event
            self.events.append(self._read())

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        os.close(self.commands)
        os.close(self.replies)


class Page(HTMLParser):
    "The parts of a DOM the checks need: math, errors, images, and the visible text."

    def __init__(self):
        super().__init__()
        self.display_math = self.mathjax_display = self.merror = 0
        self.images, self.error_outputs, self.text = [], 0, []
        self.skip = 0  # depth inside <script>, <style>, <pre>, <code>

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag in ("script", "style", "pre", "code", "mjx-assistive-mml"):
            self.skip += 1
        if tag == "div" and "math" in cls:
            self.display_math += 1
        if tag == "mjx-container" and a.get("display") == "true":
            self.mathjax_display += 1
        if tag == "mjx-merror" or "merror" in cls:
            self.merror += 1
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        if "traceback" in cls or ("output" in cls and "error" in cls):
            self.error_outputs += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style", "pre", "code", "mjx-assistive-mml"):
            self.skip = max(0, self.skip - 1)

    def handle_data(self, data):
        if not self.skip:
            self.text.append(data)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Chromium not found: `make test` installs Debian's chromium package"
    tools = DevTools(exe, tmp_path_factory.mktemp("chromium"))
    yield tools
    tools.close()


@pytest.fixture(scope="module")
def rendered(browser):
    "Each page is loaded and measured once, whichever check asks first."

    @cache
    def load(page):
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attach = {"targetId": target, "flatten": True}
        session = browser.send("Target.attachToTarget", attach)["sessionId"]
        window = {
            "width": WIDTH,
            "height": 1000,
            "deviceScaleFactor": 1,
            "mobile": False,
        }
        browser.send("Emulation.setDeviceMetricsOverride", window, session)
        browser.send("Page.enable", session=session)
        browser.send("Page.navigate", {"url": page.as_uri()}, session)
        browser.wait_for("Page.loadEventFired", session)
        run = {"expression": MEASURE, "awaitPromise": True, "returnByValue": True}
        result = browser.send("Runtime.evaluate", run, session)
        assert "exceptionDetails" not in result, result.get("exceptionDetails")
        found = result["result"]["value"]
        browser.send("DOM.enable", session=session)
        browser.send("CSS.enable", session=session)
        root = browser.send("DOM.getDocument", {"depth": 0}, session)["root"]["nodeId"]
        for item in found["cjk"]:
            query = {"nodeId": root, "selector": f'[data-cjk="{item["i"]}"]'}
            node = browser.send("DOM.querySelector", query, session)["nodeId"]
            fonts = browser.send(
                "CSS.getPlatformFontsForNode", {"nodeId": node}, session
            )
            item["fonts"] = fonts["fonts"]
        browser.send("Target.closeTarget", {"targetId": target})
        return found

    return load


def test_book_was_built():
    assert (HTML / "index.html").exists(), (
        "no rendered book: run `make book` (make test builds it first)"
    )
    assert PAGES, "no chapter pages in book/_build/html"


IDS = [p.relative_to(HTML).as_posix() for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_page_renders(page, rendered):
    parsed = Page()
    parsed.feed(rendered(page)["dom"])
    text = "".join(parsed.text)
    assert parsed.mathjax_display >= parsed.display_math, (
        f"{page.name}: {parsed.display_math} display equations but only "
        f"{parsed.mathjax_display} typeset by MathJax"
    )
    assert "\\tag{" not in text and "$$" not in text, (
        f"{page.name}: raw TeX left in the page text"
    )
    assert parsed.merror == 0, f"{page.name}: {parsed.merror} MathJax TeX errors"
    assert parsed.error_outputs == 0, f"{page.name}: a cell shows an error"
    for src in parsed.images:
        url = urlparse(src)
        if url.scheme in ("http", "https", "data"):
            continue
        if url.scheme == "file":
            target = Path(unquote(url.path))
        else:
            target = (page.parent / unquote(url.path)).resolve()
        assert target.exists(), f"{page.name}: image {src} is missing"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_code_does_not_scroll_sideways(page, rendered):
    wide = rendered(page)["code"]
    lines = "\n".join(
        f"  {w['scroll']} > {w['client']} px: {w['line'][:90]}" for w in wide
    )
    assert not wide, (
        f"{page.name}: {len(wide)} code blocks scroll sideways at a {WIDTH}-pixel "
        f"window (widest line of each):\n{lines}"
    )


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_tables_fit(page, rendered):
    wide = rendered(page)["tables"]
    assert not wide, (
        f"{page.name}: tables wider than the page at {WIDTH} pixels: {wide}"
    )


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_chinese_is_drawn_with_the_books_font(page, rendered):
    "A CJK character no served font covers is drawn as a box (tofu) or some local font."
    bad = []
    for item in rendered(page)["cjk"]:
        ours = sum(
            f["glyphCount"]
            for f in item["fonts"]
            if f["familyName"].startswith(CJK_FONT) and f.get("isCustomFont")
        )
        if ours < item["n"]:
            used = [(f["familyName"], f["glyphCount"]) for f in item["fonts"]]
            bad.append(
                f"  {item['text']!r}: {item['n']} CJK characters, fonts used {used}"
            )
    assert not bad, (
        f"{page.name}: CJK text not drawn with the book's {CJK_FONT} webfont "
        "(book/_static/fonts, vendored by `make book`):\n" + "\n".join(bad[:10])
    )
