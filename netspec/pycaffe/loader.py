"""Load ``python_param { module layer }`` as Caffe does: the module from ``sys.path``.

Beyond ``sys.path`` netspec also looks beside the net file and in its ``layers/``
subdirectory (where Caffe's own ``examples/pycaffe`` keeps its layer modules), so a net
that runs under Caffe with ``PYTHONPATH=.../layers`` checks without it.  Those directories
are on ``sys.path`` only while the module is imported.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from .finder import install


class LoadError(Exception):
    """A module or class that cannot be loaded; ``field`` is 'module' or 'layer'."""

    def __init__(self, message: str, field: str, help: list[str] | None = None):
        super().__init__(message)
        self.message, self.field, self.help = message, field, list(help or [])


@dataclass(frozen=True)
class Loaded:
    """A loaded layer class and the directory to add to ``sys.path`` to import it again
    (None when ``sys.path`` already finds it)."""

    cls: type
    extra_dir: str | None


def search_dirs(net_path: str | None) -> tuple[str, ...]:
    """Directories besides ``sys.path`` that hold a net's layer modules."""
    if not net_path:
        return ()
    here = Path(net_path).resolve().parent
    return tuple(str(d) for d in (here, here / "layers") if d.is_dir())


@contextlib.contextmanager
def _extra_path(dirs):
    added = [d for d in dirs if d not in sys.path]
    sys.path.extend(added)
    try:
        yield
    finally:
        for d in added:
            sys.path.remove(d)


def _import(name: str, dirs=()):
    try:
        with _extra_path(dirs):
            return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and not (name == e.name or name.startswith(e.name + ".")):
            raise LoadError(f"Python module '{name}' cannot be imported: it needs '{e.name}', "
                            "which is not installed", "module") from e
        return None
    except Exception as e:          # the module's own code failed
        raise LoadError(f"importing Python module '{name}' raised {type(e).__name__}: {e}",
                        "module") from e


def load_module(name: str, dirs=()):
    """Import ``name`` from ``sys.path``, then from ``dirs``; returns (module, extra dir or None)."""
    install()                       # `import caffe` in the module finds netspec's stand-in
    if not name:
        raise LoadError("python_param needs a module", "module",
                        ["the module name: the file name without .py, on PYTHONPATH or beside the net"])
    mod = _import(name) or _import(name, dirs)
    if mod is None:
        raise LoadError(f"no Python module '{name}' on sys.path or beside the net", "module",
                        ["Caffe imports python_param.module from PYTHONPATH: add its directory there",
                         "also searched: " + (", ".join(dirs) or "(no net directory)")])
    return mod, _extra_dir(name)


def _extra_dir(name: str) -> str | None:
    """The directory holding top-level module ``name``'s package, when sys.path lacks it."""
    top = sys.modules[name.split(".")[0]]
    file = getattr(top, "__file__", None)
    if file is None:
        return None
    f = Path(file).resolve()
    d = f.parent.parent if f.name == "__init__.py" else f.parent
    on_path = {str(Path(p or ".").resolve()) for p in sys.path if isinstance(p, str)}
    return None if str(d) in on_path else str(d)


def load_class(module: str, layer: str, dirs=()) -> Loaded:
    """The class ``layer`` of module ``module``; LoadError names what is wrong."""
    mod, extra = load_module(module, dirs)
    if not layer:
        raise LoadError("python_param needs a layer (the class name)", "layer")
    cls = getattr(mod, layer, None)
    if not isinstance(cls, type):
        classes = [k for k, v in vars(mod).items()
                   if isinstance(v, type) and v.__module__ == mod.__name__ and not k.startswith("_")]
        raise LoadError(f"module '{module}' has no class '{layer}'", "layer", _close(layer, classes) +
                        [f"classes defined in {mod.__file__}: {', '.join(classes) or 'none'}"])
    return Loaded(cls, extra)


def _close(word, choices) -> list[str]:
    from ..diagnostics import did_you_mean
    return did_you_mean(word, choices)
