"""One rank of tests/test_distributed.py's 2-rank job, started with torchrun's environment
variables: ``dist_worker.py OUT ITERS SOLVER[@OPTION,...] ...`` trains each solver ITERS
iterations, runs its first test net, and rank 0 saves the weights, logged losses and test
outputs per solver to OUT.  Options: ``sync`` (SyncBN), ``bucket=MB`` (all-reduce bucket
size), ``nooverlap`` (RELAY/MULTIWAY reduce after each backward, not from gradient hooks),
``float64`` (train in float64), ``count`` (count DDP's bucket all-reduces with a comm hook),
``fails`` (the solver must be refused: its diagnostic is saved instead), ``stops`` (training
must stop with a diagnostic, which is saved instead).  Besides the
weights, each result holds the reducer's bucket counts (``launched``, ``early``: launched
from a gradient hook while the backward ran); ``live_ddp_after_shutdown`` counts the DDP
wrappers still alive once ``shutdown()`` has returned."""
import gc
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from netspec.diagnostics import NetspecError
from netspec.solve.distributed import DistributedSolver, init_from_env, shutdown


def train(ctx, path: str, options: list[str], iters: int) -> dict:
    bucket = [float(o.split("=")[1]) for o in options if o.startswith("bucket=")]
    try:
        solver = DistributedSolver(ctx, path, sync_bn="sync" in options, log=lambda _: None,
                                   overlap="nooverlap" not in options,
                                   dtype=torch.float64 if "float64" in options else None,
                                   **({"bucket_mb": bucket[0]} if bucket else {}))
    except NetspecError as e:
        if "fails" not in options:
            raise
        return {"error": e.diagnostics[0].message}
    calls = []
    if "count" in options:
        def counting(state, bucket):
            calls.append(bucket.index())          # as DDP's default hook: average, not sum
            work = dist.all_reduce(bucket.buffer().div_(ctx.world), async_op=True)
            return work.get_future().then(lambda f: f.value()[0])
        solver.executor.ddp.register_comm_hook(None, counting)
    try:
        solver.step(iters)
    except NetspecError as e:
        if "stops" not in options:
            raise
        return {"error": e.diagnostics[0].message}
    reducer = solver.executor.reducer
    return {"weights": {k: v.detach().clone() for k, v in solver.module.state_dict().items()},
            "losses": [r["losses"] for r in solver.history],
            "test": solver.test(0)["outputs"] if solver.tests else {},
            "launched": reducer.launched, "early": reducer.early, "ddp_calls": calls}


def main(out: str, iters: int, specs: list[str]) -> None:
    ctx = init_from_env(specs[0].split("@")[0], "cpu", 60.0)
    result = {}
    for spec in specs:
        path, _, options = spec.partition("@")
        result[spec] = train(ctx, path, options.split(","), iters)
    shutdown()
    # a DDP wrapper alive after shutdown keeps the process group for interpreter teardown,
    # where gloo's threads abort the exit ("terminate called without an active exception")
    result["live_ddp_after_shutdown"] = sum(isinstance(o, DistributedDataParallel)
                                            for o in gc.get_objects())
    if ctx.rank == 0:
        torch.save(result, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
