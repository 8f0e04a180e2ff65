"""Reliability under real use (issue 15): the non-finite guard, debug_info, a Python API that
follows module conversions, float64 training, and Ctrl-C/SIGTERM behind a closed pipe."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from netspec.cli.main import main
from netspec.solve.guard import NonFiniteError
from netspec.solve.solver import Solver, read_snapshot

from conftest import REPO
from test_solver import SHAPES, weights, write_solver

MODES = ["STANDARD", "JOINT", "RELAY", "MULTIWAY"]

# ip1 starts at exactly zero, so sq = sqrt(ip1) is finite (0) but its gradient is inf:
# the first non-finite value of an iteration is sq's bottom diff, in the backward pass.
TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "%s" std: 0.5 } } }
layer { name: "sq" type: "Power" bottom: "ip1" top: "sq" power_param { power: %s } }
layer { name: "ip2" type: "InnerProduct" bottom: "sq" top: "ip2"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def tiny_solver(tmp_path: Path, filler="constant", power="0.5", extra="") -> Path:
    (tmp_path / "tiny.prototxt").write_text(TINY % (filler, power))
    path = tmp_path / "tiny_solver.prototxt"
    path.write_text(f'net: "tiny.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 10\n'
                    f'random_seed: 3\nsolver_mode: CPU\nsnapshot_prefix: "{tmp_path / "tiny"}"\n{extra}')
    return path


def tiny_batch(nan: bool = False) -> list[dict]:
    data = torch.rand(4, 3) + 0.5
    if nan:
        data[1, 2] = float("nan")
    return [{"data": data, "label": torch.tensor([0.0, 1.0, 0.0, 1.0])}]


def quiet(path, **kw) -> Solver:
    lines = []
    s = Solver(path, log=lines.append, **kw)
    s.lines = lines
    return s


def finite(solver) -> bool:
    return all(torch.isfinite(v).all() for v in solver.module.state_dict().values() if v.is_floating_point())


# -- the non-finite guard -------------------------------------------------------------------

def test_a_nan_in_the_forward_names_the_first_layer_whose_output_is_nan(tmp_path):
    s = quiet(tiny_solver(tmp_path, filler="gaussian", power="1"))
    before = weights(s)
    with pytest.raises(NonFiniteError) as e:
        s.step(1, batches=tiny_batch(nan=True))
    d = e.value.diagnostics[0]
    assert d.code == "E0702"
    assert "iteration 0: non-finite loss (loss loss = nan)" in d.message
    assert "first non-finite output: layer 'ip1' (InnerProduct), top blob ip1" in d.message
    assert d.span.line == 4                        # points at ip1 in the prototxt
    assert all(torch.equal(v, weights(s)[k]) for k, v in before.items())   # no update happened


def test_an_inf_gradient_names_the_layer_whose_backward_made_it(tmp_path):
    s = quiet(tiny_solver(tmp_path))
    with pytest.raises(NonFiniteError) as e:
        s.step(1, batches=tiny_batch())
    msg = e.value.diagnostics[0].message
    assert "iteration 0: non-finite gradient" in msg
    assert "first non-finite gradient: layer 'sq' (Power), bottom blob ip1" in msg
    assert finite(s)


@pytest.mark.parametrize("mode", MODES)
def test_divergence_stops_in_every_mode_with_finite_weights_kept(tmp_path, mode):
    s = Solver(write_solver(tmp_path, mode, base_lr=1e8, max_iter=20), input_shapes=SHAPES,
               log=lambda _: None)
    with pytest.raises(NonFiniteError) as e:
        s.step(20)
    msg = e.value.diagnostics[0].message
    assert f"iteration {s.iter}: non-finite" in msg and "first non-finite" in msg and "layer '" in msg
    assert finite(s) or "weights" in msg       # the failing update was never applied


@pytest.mark.parametrize("mode", MODES)
def test_skip_drops_the_update_and_training_goes_on(tmp_path, mode):
    lines = []
    s = Solver(write_solver(tmp_path, mode, extra="nonfinite: SKIP\n"), input_shapes=SHAPES, log=lines.append)
    bad = {"data": torch.full((64, 1, 8, 8), float("nan")), "label": torch.zeros(64)}
    before = weights(s)
    rec = s.step(1, batches=[bad])[0]
    assert rec["skipped"] and math.isnan(rec["loss"])
    assert all(torch.equal(v, weights(s)[k]) for k, v in before.items())
    assert any("update dropped (nonfinite: SKIP)" in l for l in lines)
    good = {"data": torch.rand(64, 1, 8, 8), "label": torch.randint(0, 10, (64,)).float()}
    rec = s.step(1, batches=[good])[0]
    assert math.isfinite(rec["loss"]) and s.iter == 2
    assert any(not torch.equal(v, weights(s)[k]) for k, v in before.items())
    assert math.isfinite(s.history[-1]["smoothed_loss"])     # the skipped nan is not averaged in


def test_skip_drops_an_update_whose_gradient_is_inf(tmp_path):
    s = quiet(tiny_solver(tmp_path, extra="nonfinite: SKIP\n"))
    before = weights(s)
    s.step(2, batches=tiny_batch())
    assert all(torch.equal(v, weights(s)[k]) for k, v in before.items())
    assert sum("non-finite gradient in" in l for l in s.lines) == 2


def test_continue_trains_on_as_caffe_and_warns_once(tmp_path):
    s = quiet(tiny_solver(tmp_path, extra="nonfinite: CONTINUE\n"))
    s.step(3, batches=tiny_batch())
    assert not finite(s)
    assert sum("training continues (nonfinite: CONTINUE)" in l for l in s.lines) == 1


def test_cli_exits_1_and_keeps_the_last_good_snapshot(tmp_path, capsys):
    path = write_solver(tmp_path, "STANDARD", base_lr=1e8, max_iter=20, snapshot=1)
    code = main(["train", "--solver", str(path), "--input-shape", "data=64,1,8,8",
                 "--input-shape", "label=64"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error[E0702]" in err and "Traceback" not in err
    snaps = sorted(tmp_path.glob("snap_iter_*.netspec"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert snaps, "the snapshots before the failure are kept"
    last = read_snapshot(snaps[-1])
    assert all(torch.isfinite(v).all() for v in last["weights"].values())
    assert f"--snapshot {snaps[-1]}" in err           # the help names the resume command


def test_debug_info_prints_caffes_lines_and_changes_nothing(tmp_path):
    plain = quiet(tiny_solver(tmp_path, filler="gaussian", power="1"))
    debug = quiet(tiny_solver(tmp_path, filler="gaussian", power="1", extra="debug_info: true\n"))
    batch = tiny_batch()
    w1, b1 = debug.executor.params["ip1/0"].detach().clone(), debug.executor.params["ip1/1"].detach().clone()
    plain.step(2, batches=batch)
    debug.step(2, batches=batch)
    a, b = weights(plain), weights(debug)
    assert all(torch.equal(a[k], b[k]) for k in a)
    text = "\n".join(debug.lines)
    assert "    [Forward] Layer ip1, top blob ip1 data: " in text
    assert "    [Forward] Layer ip1, param blob 0 data: " in text
    assert "    [Backward] Layer ip2, bottom blob sq diff: " in text
    assert "    [Backward] Layer ip1, param blob 1 diff: " in text
    assert "    [Backward] All net params (data, diff): L1 norm = (" in text
    assert "    [Update] Layer ip2, param 0 data: " in text
    # Caffe's figure is asum / count of the blob, here ip1 = x W^T + b on the first iteration
    first = next(l for l in debug.lines if l.startswith("    [Forward] Layer ip1, top blob ip1 data: "))
    expected = float((batch[0]["data"] @ w1.T + b1).abs().mean())
    assert float(first.rsplit(" ", 1)[1]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["RELAY", "MULTIWAY"])
def test_debug_info_runs_one_backward_per_schedule_step(tmp_path, mode):
    lines = []
    s = Solver(write_solver(tmp_path, mode, extra="debug_info: true\n"), input_shapes=SHAPES, log=lines.append)
    s.step(1)
    steps = [l for l in lines if l.startswith("    [Backward] step ")]
    assert len(steps) == 4                      # one per loss of the digits net
    assert sum(l.startswith("    [Backward] All net params") for l in lines) == 4


# -- the Python API follows the live parameters -------------------------------------------

@pytest.mark.parametrize("convert", [lambda m: m.double(), lambda m: m.to(dtype=torch.float64),
                                     lambda m: m.to("cpu", torch.float64)])
@pytest.mark.parametrize("mode", ["STANDARD", "MULTIWAY"])
def test_converting_the_module_after_construction_trains_exactly_like_float64(tmp_path, mode, convert):
    path = write_solver(tmp_path, mode)
    ref = Solver(path, input_shapes=SHAPES, log=lambda _: None, dtype=torch.float64)
    ref.step(3)
    s = Solver(path, input_shapes=SHAPES, log=lambda _: None)
    s.step(1)
    convert(s.module)
    before = weights(s)
    s.step(2)
    after = weights(s)
    assert all(v.dtype == torch.float64 for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before), "training silently stopped"
    # the same three iterations, the first in float32: close to the all-float64 run
    assert all(torch.allclose(after[k], ref.module.state_dict()[k], rtol=1e-4, atol=1e-5) for k in after)
    assert all(t.dtype == torch.float64 for st in s.executor.state.values() for h in st.values()
               for t in h.values())


def test_float64_training_is_public_and_reads_params_and_grads_by_blob_name(tmp_path):
    s = Solver(write_solver(tmp_path, "STANDARD"), input_shapes=SHAPES, log=lambda _: None,
               dtype=torch.float64)
    assert s.executor.params["conv1/0"].dtype == torch.float64
    w0 = s.executor.params["conv1/0"].detach().clone()
    s.step(1)
    assert not torch.equal(w0, s.executor.params["conv1/0"])


def test_gradients_by_blob_name_are_the_diffs_the_update_used(tmp_path):
    s = quiet(tiny_solver(tmp_path, filler="gaussian", power="1"))   # plain SGD, lr 0.1, no momentum
    s.keep_gradients()
    w0 = s.params["ip2/0"].detach().clone()
    s.step(1, batches=tiny_batch())
    diff = s.gradients["shared"]["ip2/0"]
    assert torch.allclose(s.params["ip2/0"].detach(), w0 - 0.1 * diff, atol=1e-7)
    assert set(s.gradients["shared"]) == set(s.params)


def test_cli_dtype_float64(tmp_path, capsys):
    path = write_solver(tmp_path, "JOINT", max_iter=2, snapshot_after_train="true")
    assert main(["train", "--solver", str(path), "--dtype", "float64", "--input-shape", "data=64,1,8,8",
                 "--input-shape", "label=64"]) == 0
    snap = read_snapshot(tmp_path / "snap_iter_2.netspec")
    assert snap["weights"]["conv1.weight"].dtype == torch.float64


# -- signals behind a closed pipe -----------------------------------------------------------

def _wait_for(cond, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.2)
    return False


def _records(log: Path) -> int:
    return log.read_text().count('"kind": "train"') if log.exists() else 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_behind_head_writes_the_snapshot_and_resumes(tmp_path, sig):
    path = write_solver(tmp_path, "MULTIWAY", max_iter=100000, display=1)
    log, err = tmp_path / "train.jsonl", tmp_path / "err.txt"
    cmd = (f"{sys.executable} -m netspec train --solver {path} --log {log} "
           f"--input-shape data=64,1,8,8 --input-shape label=64 2>{err} | head -1")
    # a session of its own: the signal goes to the whole pipeline, as Ctrl-C in a terminal
    proc = subprocess.Popen(cmd, shell=True, cwd=tmp_path, env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE)
    try:
        first = proc.stdout.readline()          # head printed its one line and exits
        assert first.startswith(b"Solving")
        assert _wait_for(lambda: _records(log) >= 3), err.read_text()
        os.killpg(proc.pid, sig)
        proc.wait(timeout=120)
        assert _wait_for(lambda: not _group_alive(proc.pid))    # the shell may go before netspec
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = err.read_text()
    assert "Traceback" not in text and "BrokenPipe" not in text, text
    resume = text.strip().splitlines()[-1]
    assert f"{signal.Signals(sig).name}: stopped at iteration" in resume
    snap = resume.split("--snapshot ")[1]
    assert resume.endswith(f"netspec train --solver {path} --snapshot {snap}")
    done = read_snapshot(snap)["iter"]
    assert done >= 3
    s = Solver(path, input_shapes=SHAPES, log=lambda _: None)
    s.restore(snap)
    assert s.iter == done
    s.step(1)


def test_sigterm_exit_code_and_snapshot_with_stdout_closed(tmp_path):
    path = write_solver(tmp_path, "STANDARD", max_iter=100000, display=1)
    log = tmp_path / "train.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "netspec", "train", "--solver", str(path), "--log", str(log),
                             "--input-shape", "data=64,1,8,8", "--input-shape", "label=64"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()                         # the reader goes away (a dead `tee`)
    assert _wait_for(lambda: _records(log) >= 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert b"SIGTERM: stopped at iteration" in err and b"--snapshot " in err
    assert list(tmp_path.glob("snap_iter_*.netspec"))


def test_readme_long_runs_example(repo_cwd):
    text = (REPO / "README.md").read_text().split("\n### Long runs:", 1)[1].split("\n## ", 1)[0]
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope = {"__name__": "readme"}
    exec(compile(block, "README.md#long-runs", "exec"), scope)
    assert scope["w"].dtype == torch.float64 and scope["g"].shape == scope["w"].shape


# -- small things ---------------------------------------------------------------------------

def test_gpu_flag_does_not_swallow_the_file(capsys):
    code = main(["time", "--gpu", str(REPO / "models/digits/deep_plain.prototxt"), "--iterations", "1"])
    err = capsys.readouterr().err
    if torch.cuda.is_available():
        assert code == 0
    else:
        assert code == 1 and "E0801" in err and "E0802" not in err   # no CUDA, not a usage error


def test_syntax_error_grammar(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer { name: "a" type: "Data" transform_param { mirror mirror: true } }\n')
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "unexpected name 'mirror'" in err and "unexpected a " not in err


# -- memory ---------------------------------------------------------------------------------

def test_check_reports_the_memory_of_a_batch_as_caffe_counts_it(tmp_path, capsys):
    tiny_solver(tmp_path)
    assert main(["check", str(tmp_path / "tiny.prototxt"), "--phase", "TRAIN"]) == 0
    out = capsys.readouterr().out
    # tops: data 12 + label 4 + ip1 20 + sq 20 + ip2 8 + loss 1 = 65 floats; params 20 + 12
    assert "memory (TRAIN, batch 4): 776 B\n  data 260 B, params 128 B, grads 388 B\n" in out
    assert "as Caffe logs it: Memory required for data: 260" in out


def test_check_warns_when_a_batch_cannot_fit(tmp_path, capsys):
    net = tmp_path / "huge.prototxt"
    net.write_text('name: "huge"\nlayer { name: "data" type: "Input" top: "data" '
                   'input_param { shape { dim: 10000 dim: 1000 dim: 1000 dim: 1000 } } }\n')
    assert main(["check", str(net)]) == 0
    err = capsys.readouterr().err
    assert "warning[W0700]: net 'huge' needs about 36.4 TiB for one TEST batch, more than this machine has" in err


def test_an_allocation_failure_is_a_diagnostic_naming_the_layer(tmp_path, capsys):
    net = tmp_path / "wide.prototxt"
    net.write_text('name: "wide"\nlayer { name: "data" type: "Input" top: "data" '
                   'input_param { shape { dim: 2 dim: 4000 } } }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                   'inner_product_param { num_output: 4000000000 } }\n')
    assert main(["time", str(net), "--iterations", "1", "--warmup", "0"]) == 1
    err = capsys.readouterr().err
    assert "error[E0703]: out of memory in layer 'ip' (InnerProduct, wide.prototxt:3): it tried to allocate" in err
    assert "Traceback" not in err


# -- cases benchmarks/fuzz.py found -----------------------------------------------------------
# (the escape cases are in tests/gallery: syntax_bare_hex_escape, syntax_escape_out_of_range)

def test_convert_refuses_a_solver_file(capsys):
    assert main(["convert", str(REPO / "models/digits/solver_relay.prototxt")]) == 1
    err = capsys.readouterr().err
    assert "error[E0800]" in err and "is a solver file" in err and "Traceback" not in err


def test_a_caffemodel_with_a_non_utf8_layer_name_is_a_diagnostic():
    """benchmarks/fuzz.py: a byte flipped inside a layer name of an oracle .caffemodel."""
    from netspec.check import check_net, load
    from netspec.compile.module import compile_net
    from netspec.diagnostics import NetspecError
    from netspec.interop.caffemodel import load_caffemodel
    from netspec.lower import NetState
    case = REPO / "tests/gallery/fuzz/scale_bad_layer_name"
    _, src = load(case.with_suffix(".prototxt"))
    compiled = compile_net(check_net(src, NetState.of("TEST")), seed=0)
    with pytest.raises(NetspecError) as e:
        load_caffemodel(compiled, case.with_suffix(".caffemodel"))
    assert e.value.diagnostics[0].code == "E0700"
