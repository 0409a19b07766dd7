"""`nbdev-export` for this book: `make export` and tests/test_export.py run it.

nbdev 3 writes a notebook's `#| default_exp` module afresh but only *appends* the cells of `#| export other.module`
to a module that must already exist (it is meant for adding to another notebook's module). Chapter 3 exports
several new modules (`plainrl.trajectory` and `plainrl.envs.*`), each owned by that one notebook, so every module
is written afresh here: exporting twice gives the same files, and a fresh checkout exports without a prior src/.

nbdev also writes a documentation index (`_modidx.py`) and an `llms.txt` for a docs site this book does not
have; both are switched off."""
import functools

import nbdev.doclinks as doclinks
from nbdev.maker import ModuleMaker


class FreshModuleMaker(ModuleMaker):
    "A ModuleMaker that always writes its module from scratch (every module has exactly one notebook)."
    def __init__(self, dest, name, nb_path, is_new=True, **kwargs):
        super().__init__(dest, name, nb_path, is_new=True, **kwargs)


if __name__ == "__main__":
    doclinks.nb_export = functools.partial(doclinks.nb_export, mod_maker=FreshModuleMaker)
    doclinks._build_modidx = doclinks.update_llms_txt = lambda *args, **kwargs: None
    doclinks.nbdev_export()
