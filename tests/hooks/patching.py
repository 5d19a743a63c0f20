"""What the test hooks of this folder share: patching a module right after its first import."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys


def after_import(name: str, patch) -> None:
    """Call `patch(module)` once the module `name` has been executed by its first import."""

    class Loader(importlib.abc.Loader):
        def __init__(self, real):
            self.real = real

        def create_module(self, spec):
            return self.real.create_module(spec)

        def exec_module(self, module):
            self.real.exec_module(module)
            patch(module)

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            spec.loader = Loader(spec.loader)
            return spec

    sys.meta_path.insert(0, Finder())
