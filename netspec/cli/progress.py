"""A tqdm progress bar for ``netspec train`` when stdout is a terminal.

Log lines go through ``tqdm.write`` so they scroll above the bar instead of tearing it;
when stdout is a pipe or file the log is printed plainly and no bar is drawn.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def training_progress(solver, stream=None):
    """Attach a bar (iterations done of ``max_iter``, smoothed loss) to ``solver`` while the
    block runs; a no-op unless ``stream`` (default stdout) is a terminal."""
    stream = stream or sys.stdout
    if not stream.isatty() or _rank() != 0:     # one bar per job, drawn by rank 0
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=solver.param.max_iter, initial=solver.iter, unit="iter", file=stream,
               dynamic_ncols=True, leave=True)
    plain_log = solver.log
    solver.log = lambda line: tqdm.write(line, file=stream)

    def advance(rec: dict) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{rec['smoothed_loss']:.4g}", lr=f"{rec['lr']:.3g}", refresh=False)

    solver.listeners.append(advance)
    try:
        yield bar
    finally:
        solver.listeners.remove(advance)
        solver.log = plain_log
        bar.close()


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
