"""`nbdev-export` for this book: `make export` and tests/test_export.py run it.

nbdev 3 writes a notebook's `#| default_exp` module afresh but only *appends* the cells
of `#| export other.module` to a module that must already exist (it is meant for adding
to another notebook's module). Chapter 3 exports several new modules, each owned by that
one notebook, so every module is written afresh here: exporting twice gives the same
files, and a fresh checkout exports without a prior src/.

A module's docstring is the string that opens its first exported cell; nbdev would put
it below `__all__`, where it is no docstring, so it is moved to the top. `__all__` is
wrapped to the line length of the rest of the code. A package's `__init__.py` (exported
from a chapter like any module) lists the names it re-exports in its `__all__`.

nbdev also writes a documentation index (`_modidx.py`) and an `llms.txt` for a docs
site this book does not have; both are switched off."""

import ast
import functools
import re
import textwrap

import nbdev.doclinks as doclinks
from nbdev.maker import ModuleMaker

ALL = re.compile(r"\n\n# %% auto #0\n__all__ = .*?\]\n", re.S)


def docstring_first(text):
    "`text` with the docstring of its first exported cell moved above `__all__`."
    match = ALL.search(text)
    cell = re.search(r"\n# %% [^\n]*\n", text[match.end() :]) if match else None
    if cell is None:
        return text
    start = match.end() + cell.end()
    tree = ast.parse(text[start:])
    first = tree.body[0] if tree.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
        return text
    if not isinstance(first.value.value, str):
        return text
    lines = text[start:].splitlines(keepends=True)
    doc = "".join(lines[: first.end_lineno])
    rest = "".join(lines[first.end_lineno :]).lstrip("\n")
    head = text[: match.start()]
    return f"{head}\n\n{doc}{text[match.start() : start]}{rest}"


def wrap_all(text):
    "`text` with its `__all__` list wrapped at 88 characters."

    def wrap(match):
        names = ast.literal_eval(match.group(1))
        lines = textwrap.wrap(
            str(names), 88, initial_indent="__all__ = ", subsequent_indent=" " * 11
        )
        return "\n".join(lines)

    return re.sub(r"__all__ = (\[.*?\])", wrap, text, count=1, flags=re.S)


def reexports(text):
    "`text` of an `__init__.py` whose `__all__` lists the names its imports re-export."
    tree = ast.parse(text)
    names = [
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    return re.sub(r"__all__ = \[\]", f"__all__ = {names}", text, count=1)


class FreshModuleMaker(ModuleMaker):
    "A ModuleMaker that always writes its module from scratch, its docstring on top."

    def __init__(self, dest, name, nb_path, is_new=True, **kwargs):
        super().__init__(dest, name, nb_path, is_new=True, **kwargs)

    def make(self, *args, **kwargs):
        super().make(*args, **kwargs)
        text = docstring_first(self.fname.read_text())
        if self.fname.name == "__init__.py":
            text = reexports(text)
        self.fname.write_text(wrap_all(text))


if __name__ == "__main__":
    doclinks.nb_export = functools.partial(
        doclinks.nb_export, mod_maker=FreshModuleMaker
    )
    doclinks._build_modidx = doclinks.update_llms_txt = lambda *args, **kwargs: None
    doclinks.nbdev_export()
