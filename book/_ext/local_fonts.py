"""Serve the book's CJK font (book/_static/fonts, vendored by `make book`) with book/_static/cjk.css.

Without the vendored font (no Node on the machine) the pages use the reader's own fonts and the build
says so; the browser test then fails on every page with Chinese text."""

from pathlib import Path

from sphinx.util import logging

FONT = "fonts/noto-sans-sc-chinese-simplified-400-normal.woff2"
CSS = "cjk.css"
logger = logging.getLogger(__name__)


def add_font_css(app):
    static = Path(app.confdir) / "book" / "_static"
    if (static / FONT).exists():
        app.add_css_file(CSS)
    else:
        logger.info(
            "note: no CJK font in book/_static/fonts (npm was not found); "
            "Chinese text needs a CJK font on the reader's machine"
        )


def setup(app):
    app.connect("builder-inited", add_font_css)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
