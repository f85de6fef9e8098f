"""Code that runs inside SageMaker's PyTorch containers (training source dir and model code/).

Inside the containers these modules import each other flat (`import contract`), as SageMaker runs them
from their own folder. The rest of the repository imports the stdlib-only contract as `ml.contract`, and the
modules that import their siblings flat through `host_import`, so a host process holds one copy of each
(one `ApiException` class: cli/ catches what ml/imaging.py raises).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

# Standard library only, and little of it: the Lambda bundle ships this file (importlib comes with host_import).
_LOCK = threading.Lock()


class _Siblings:
    """A meta path finder and loader (importlib's protocol) that answers a flat `import contract` with the module
    `ml.contract` itself, not a second copy of the file."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> Any:
        from importlib.machinery import ModuleSpec

        if path is None and fullname in self.names:
            return ModuleSpec(fullname, self)  # type: ignore[arg-type]  # a Loader by protocol (create/exec)
        return None

    def create_module(self, spec: Any) -> ModuleType:
        import importlib

        module = importlib.import_module(f"{__name__}.{spec.name}")
        spec.loader_state = module.__spec__  # the import system sets __spec__ to the alias's: put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = module.__spec__.loader_state  # type: ignore[union-attr]  # set by create_module


def host_import(name: str) -> ModuleType:
    """`ml.<name>` for a host process (the CLI, tests, benchmarks), its flat imports bound to the ml.* modules.

    Flat names another copy already holds in sys.modules (a test that put ml/ on sys.path) are hidden during
    the import and put back after it; the aliases this import makes are removed, so a later flat import (a
    model's own code/ served in process) still finds its own files.
    """
    siblings = frozenset(p.stem for p in Path(__file__).parent.glob("*.py") if p.stem != "__init__")
    if name not in siblings:
        raise ImportError(f"ml has no module {name!r}")
    with _LOCK:
        import importlib

        hidden = {n: sys.modules.pop(n) for n in siblings if n in sys.modules}
        finder = _Siblings(siblings)
        sys.meta_path.insert(0, finder)
        try:
            return importlib.import_module(f"{__name__}.{name}")
        finally:
            sys.meta_path.remove(finder)
            for n in siblings:
                sys.modules.pop(n, None)
            sys.modules.update(hidden)
