"""Serve MathJax from the book itself (book/_static/mathjax, vendored by `make book`) so pages render offline.

Without the vendored copy (no Node on the machine) the book falls back to Sphinx's default CDN and says so."""
from pathlib import Path

from sphinx.util import logging

LOCAL = "mathjax/tex-chtml.js"
logger = logging.getLogger(__name__)


def use_local_copy(app, config):
    static = Path(app.confdir) / "book" / "_static"
    if (static / LOCAL).exists():
        config.mathjax_path = LOCAL
    else:
        logger.info("note: no local MathJax in book/_static/mathjax (npm was not found); pages load it from the CDN")


def setup(app):
    app.connect("config-inited", use_local_copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
