"""Stage 5: checked net -> PyTorch module (via generated source) and backward schedule."""
from __future__ import annotations

import inspect
import re

from .. import runtime


def runtime_sources(names) -> str:
    """Source of the named runtime helpers and every helper they use, in dependency order."""
    ordered: list[str] = []
    def visit(name: str, seen=set()) -> None:
        if name in ordered:
            return
        src = inspect.getsource(getattr(runtime, name))
        for dep in sorted(set(re.findall(r"\b(\w+)\b", src)) & set(runtime.__all__) - {name}):
            visit(dep)
        ordered.append(name)
    for n in names:
        visit(n)
    return "\n\n".join(inspect.getsource(getattr(runtime, n)).rstrip() for n in ordered)
