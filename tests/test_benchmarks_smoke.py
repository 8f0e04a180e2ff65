"""The benchmark suite in its CI-sized smoke mode, so it never rots (issue 8).

No timing is asserted.  What is asserted: the hand-written PyTorch nets compute what the
compiled ones compute (losses and every gradient, float64, identical weights), the schedule
and memory benchmarks run every BP mode, and the report is written.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_memory, bench_overhead, run  # noqa: E402
from benchmarks.bench_schedules import MODES, build_solvers, schedule_madds, schedule_time_model  # noqa: E402
from netspec.solve.solver import Solver  # noqa: E402

GOOGLENET = bench_overhead.googlenet_path()


@pytest.mark.parametrize("name, batch", [("resnet56", 2), ("digits", 3),
                                         pytest.param("googlenet", 1, marks=pytest.mark.skipif(
                                             not GOOGLENET.exists(), reason="no Caffe zoo"))])
def test_hand_written_nets_match_the_compiled_ones(name, batch):
    pair = bench_overhead.build_pair(name, batch)
    assert bench_overhead.check_equal(pair, tol=1e-9) <= 1e-9 * 1e3
    # and in float32 as timed, same weights: the objectives agree to float32 rounding
    torch.manual_seed(1)
    a = float(pair.netspec_step().detach())
    torch.manual_seed(1)
    b = float(pair.hand_step().detach())
    assert a == pytest.approx(b, rel=1e-4)


def test_check_equal_catches_a_different_weight():
    pair = bench_overhead.build_pair("digits", 2)
    with torch.no_grad():
        pair.hand.convs[4].weight.mul_(1.01)
    with pytest.raises(AssertionError):
        bench_overhead.check_equal(pair)


def test_cost_model_orders_the_modes_as_the_paper():
    solvers = build_solvers(2, n=2)
    cost = {name: schedule_madds(s) for name, s in solvers.items()}
    assert set(cost) == set(MODES)
    assert cost["JOINT"] == pytest.approx(cost["STANDARD"], rel=0.01)       # heads are tiny
    assert cost["STANDARD"] < cost["RELAY"] < cost["MULTIWAY"] < cost["MULTIWAY naive"]


def test_time_model_prices_each_backward_over_its_own_layers():
    """With every layer at 1 ms each way, the model counts layers; on the digits net by hand:
    exit k's backward runs conv1 up to its loss (not the data layer), the forward every layer
    (STANDARD: with the exit heads pruned)."""
    digits = ROOT / "models" / "digits"
    costs = {}
    for mode in ("standard", "multiway", "multiway_naive"):
        solver = Solver(digits / f"solver_{mode}.prototxt", log=lambda line: None)
        unit = {n.name: 1.0 for n in solver.net.graph.layers()}
        costs[mode] = schedule_time_model(solver, (unit, unit))
    heads = 3                                # pool, fc, loss
    scopes = [6 + heads, 12 + heads, 12 + 1 + 6 + heads, 12 + 1 + 12 + heads]   # exit1-3, main
    every_layer = 1 + 24 + 1 + 4 * heads     # data, conv+relu x 12, pool1, four heads
    assert costs["standard"] == (1 + 24 + 1 + heads) + scopes[-1]
    assert costs["multiway"] == every_layer + sum(scopes)
    # Naive MW-BP: one forward per loss, each over the data layer and that loss's scope
    assert costs["multiway_naive"] == sum(1 + s for s in scopes) + sum(scopes)


def test_live_storage_sees_torch_allocations_and_their_release():
    with bench_memory.LiveStorage() as live:
        x = torch.ones(1000)                 # 4,000 bytes
        y = x * 2                            # another 4,000
        x.add_(1)                            # in place: nothing new
        del x
    assert live.peak == 8000 and live.current == 4000
    del y
    assert live.current == 0


def test_smoke_suite_writes_the_report(tmp_path):
    out = tmp_path / "bench.md"
    run.main(["--smoke", "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# netspec benchmarks (SMOKE RUN")
    for title in run.TITLES.values():
        assert f"## {title}" in text
    for mode in MODES:
        assert f"| {mode} |" in text
    assert "python -m benchmarks.run --smoke" in text and "torch " in text
    if not torch.cuda.is_available():
        assert "Not measured in this run: no CUDA device" in text


def test_fused_batchnorm_scale_computes_what_the_separate_layers_compute(tmp_path):
    """The executor's BatchNorm + Scale fusion (found by the overhead benchmark) changes no
    number: outputs, gradients and Caffe's running sums match the unfused module in float64."""
    from benchmarks.common import compile_text
    from benchmarks.resnet56 import resnet_cifar
    from netspec.compile.module import compile_net
    net, _ = compile_text(resnet_cifar(1, 3))
    plain = compile_net(net, seed=0, dtype=torch.float64)
    fused = compile_net(net, seed=0, dtype=torch.float64, fuse=True)
    assert "self.conv1_bn(conv1, self.conv1_scale.weight, self.conv1_scale.bias)" in fused.generated.source
    assert "conv1_scale.weight" not in plain.generated.source.split("def forward")[1]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in plain.module.named_parameters():
            if "_scale." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    fused.module.load_state_dict(plain.module.state_dict())
    x = {"data": torch.randn(3, 3, 32, 32, generator=g, dtype=torch.float64),
         "label": torch.tensor([1.0, 4.0, 7.0])}
    for m in (plain.module, fused.module):
        m(**x)["loss"].backward()
    fused_params = dict(fused.module.named_parameters())
    for name, p in plain.module.named_parameters():
        torch.testing.assert_close(fused_params[name].grad, p.grad, rtol=1e-10, atol=1e-12)
    fused_bufs = dict(fused.module.named_buffers())
    for name, b in plain.module.named_buffers():
        torch.testing.assert_close(fused_bufs[name], b, rtol=1e-12, atol=1e-12)


def test_gpu_path_runs_on_the_cpu_as_a_dry_run():
    """bench_gpu's variants (fp32, bf16 autocast, channels_last) and report, minus CUDA events."""
    from benchmarks import bench_gpu
    res = bench_gpu.measure(1, 1, torch.device("cpu"), use_compile=False, nets={"digits": 2})
    assert {r["variant"] for r in res["rows"]} == {"fp32", "bf16", "bf16 + channels_last"}
    assert "| digits | 2 | bf16 + channels_last |" in bench_gpu.markdown(res)
