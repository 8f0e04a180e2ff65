"""How much memory a net needs, and out-of-memory failures as diagnostics.

``estimate`` adds up what Caffe allocates for one batch: every top blob once (an in-place
top shares its bottom's memory), as Caffe logs "Memory required for data", plus the
learnable parameters and, in TRAIN, a diff for each (Caffe's Blob holds data and diff).
It is a lower bound for netspec: autograd may keep a few extra tensors alive.

``memory_error`` turns an allocator failure raised anywhere below a command into a
diagnostic naming the layer (read from the generated code's ``# file:line name (Type)``
comment on the failing line) and the size it tried to allocate.
"""
from __future__ import annotations

import linecache
import os
import re
import sys
from dataclasses import dataclass

from ..diagnostics import Diagnostic, NetspecError
from ..layers.base import count

FLOAT32 = 4


@dataclass
class MemoryEstimate:
    """Bytes one batch needs in one phase (float32)."""

    phase: str
    batch: int | None
    data: int            # activations: Caffe's "Memory required for data"
    params: int
    grads: int           # TRAIN: parameter diffs and activation diffs; TEST: 0
    unknown: int = 0     # blobs whose shape is unknown (not counted)

    @property
    def total(self) -> int:
        return self.data + self.params + self.grads


def estimate(net, itemsize: int = FLOAT32) -> MemoryEstimate:
    """The memory of one forward (TEST) or forward + backward (TRAIN) of ``net``."""
    seen: set[str] = set()
    data = unknown = 0
    batch = None
    for node in net.graph.layers():
        for blob in node.tops:
            if blob.name in seen:
                continue
            seen.add(blob.name)
            shape = net.shapes.get(blob)
            if shape is None:
                unknown += 1
                continue
            data += count(tuple(shape))
            if batch is None and node.impl.is_data and len(shape):
                batch = int(shape[0])
    params = net.total_params()
    train = net.state.phase_name == "TRAIN"
    grads = (params + data) if train else 0
    return MemoryEstimate(net.state.phase_name, batch, data * itemsize, params * itemsize,
                          grads * itemsize, unknown)


def human(n: float) -> str:
    """Bytes in B/KiB/MiB/GiB/TiB, three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def report_line(m: MemoryEstimate) -> str:
    """The total, its parts, then Caffe's own figure (bytes of top blobs), a short line each."""
    batch = f", batch {m.batch}" if m.batch is not None else ""
    grads = f", grads {human(m.grads)}" if m.phase == "TRAIN" else ""
    unknown = f"\n  ({m.unknown} blob(s) of unknown shape not counted)" if m.unknown else ""
    return (f"memory ({m.phase}{batch}): {human(m.total)}\n  data {human(m.data)}, "
            f"params {human(m.params)}{grads}\n  as Caffe logs it: Memory required for data: "
            f"{m.data}{unknown}")


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory(device: str) -> tuple[str, int | None]:
    """(what, bytes) of the memory ``device`` ('cpu' or 'cuda:N') offers."""
    if device.startswith("cuda"):
        import torch
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"GPU {device} ({props.name})", props.total_memory
    return "this machine", machine_memory()


def fit_warning(m: MemoryEstimate, label: str, device: str = "cpu", span=None) -> Diagnostic | None:
    """W0700 when one batch of ``label`` needs more than the device has."""
    what, have = device_memory(device)
    if have is None or m.total <= have:
        return None
    return Diagnostic("W0700", f"{label} needs about {human(m.total)} for one {m.phase} batch, more than "
                      f"{what} has ({human(have)})", span, severity="warning",
                      help=["reduce the batch size or the input shapes (--input-shape), "
                            "or run on a device with more memory"])


# -- out of memory at run time ------------------------------------------------------------

_WHERE = re.compile(r"#\s*(?P<file>[^\s:]+):(?P<line>\d+) (?P<layer>.+?) \((?P<type>[\w.]+)\)")
_TRIED = [re.compile(r"allocate (\d+) bytes"), re.compile(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]i?B)")]
_OOM = ("can't allocate memory", "out of memory", "Cannot allocate memory")


def is_oom(exc: BaseException) -> bool:
    """An allocation failure: MemoryError, torch's OutOfMemoryError (CUDA and other devices,
    whatever its message says) or a RuntimeError saying so (the CPU allocator)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")       # not imported here: a torch error needs torch loaded
    device_oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if device_oom is not None and isinstance(exc, device_oom):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in _OOM)


def failing_layer(exc: BaseException) -> tuple[str, str, str] | None:
    """(layer, type, file:line) of the innermost generated-code line in the traceback."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.startswith("<netspec-"):
            m = _WHERE.search(linecache.getline(name, tb.tb_lineno))
            if m:
                found = (m["layer"], m["type"], f"{m['file']}:{m['line']}")
        tb = tb.tb_next
    return found


def tried_size(exc: BaseException) -> str | None:
    text = str(exc)
    for pattern in _TRIED:
        m = pattern.search(text)
        if m:
            return human(int(m.group(1))) if m.group(1).isdigit() else m.group(1)
    return None


def memory_error(exc: BaseException) -> NetspecError | None:
    """E0703 for an allocation failure (None for any other exception)."""
    if not is_oom(exc):
        return None
    where = failing_layer(exc)
    size = tried_size(exc)
    msg = "out of memory"
    if where:
        msg += f" in layer '{where[0]}' ({where[1]}, {where[2]})"
    if size:
        msg += f": it tried to allocate {size}"
    return NetspecError([Diagnostic("E0703", msg, help=[
        "`netspec check FILE` prints the memory one batch needs per phase",
        "reduce the batch size or the input shapes, or use a device with more memory"])])
