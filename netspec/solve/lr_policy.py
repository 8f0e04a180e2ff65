"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``), bit-faithful in float32.

Caffe computes the rate as ``Dtype`` (float32) from float proto fields; ``pow`` with an
integer exponent promotes to double, while ``pow(float, float)`` and ``exp(float)`` are
the C library's ``powf``/``expf`` (``inv``, ``poly``, ``sigmoid``).  Those are not
correctly rounded (glibc's powf errs up to 0.82 ulp), so rounding the double result to
float is 1 ulp off Caffe at some iterations: the C library's own functions are called
here, as Caffe calls them.  Where the C library cannot be loaded, the double result
rounded to float stands in (equal to Caffe except at those rare iterations).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

_f32 = np.float32


def _libm_float_function(name: str):
    """``name`` (``powf``, ``expf``) from the C math library, or None where unavailable."""
    for lib in (ctypes.util.find_library("m"), ctypes.util.find_library("c"), "msvcrt"):
        try:
            fn = getattr(ctypes.CDLL(lib), name)
        except (OSError, AttributeError, TypeError):
            continue
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float] * (2 if name == "powf" else 1)
        return fn
    return None


_POWF, _EXPF = _libm_float_function("powf"), _libm_float_function("expf")


def powf(x, y) -> np.float32:
    """C's ``powf``: float32 ``x ** y`` as Caffe's ``pow(Dtype, Dtype)`` computes it."""
    if _POWF is not None:
        return _f32(_POWF(float(_f32(x)), float(_f32(y))))
    return _f32(math.pow(float(_f32(x)), float(_f32(y))))


def expf(x) -> np.float32:
    """C's ``expf``: float32 ``exp(x)`` as Caffe's ``exp(Dtype)`` computes it."""
    if _EXPF is not None:
        return _f32(_EXPF(float(_f32(x))))
    return _f32(math.exp(float(_f32(x))))


def _base(p) -> np.float32:
    return _f32(p.base_lr)


def _fixed(p, it):
    return _base(p)


def _step(p, it):
    return _f32(float(_base(p)) * float(_f32(p.gamma)) ** step_index(p, it))


def _exp(p, it):
    return _f32(float(_base(p)) * float(_f32(p.gamma)) ** it)


def _inv(p, it):
    # base_lr * pow(Dtype(1) + gamma * iter, -power): every operand float32, pow is powf
    base = _f32(1) + _f32(p.gamma) * _f32(it)
    return _base(p) * powf(base, -_f32(p.power))


def _multistep(p, it):
    return _f32(float(_base(p)) * float(_f32(p.gamma)) ** step_index(p, it))


def _poly(p, it):
    frac = _f32(1) - _f32(it) / _f32(p.max_iter)
    return _base(p) * powf(frac, _f32(p.power))


def _sigmoid(p, it):
    z = -_f32(p.gamma) * (_f32(it) - _f32(p.stepsize))
    return _base(p) * (_f32(1) / (_f32(1) + expf(z)))


POLICIES = {"fixed": _fixed, "step": _step, "exp": _exp, "inv": _inv,
            "multistep": _multistep, "poly": _poly, "sigmoid": _sigmoid}


def policy_name(param) -> str:
    """The solver's ``lr_policy`` (Caffe's proto default is 'fixed' when absent)."""
    return param.lr_policy or "fixed"


def learning_rate(param, it: int) -> float:
    """The rate Caffe's ``GetLearningRate`` returns at iteration ``it`` (before lr_mult).

    ``param`` is a ``SolverParameter`` already checked by ``netspec.check.solver``.
    """
    return float(POLICIES[policy_name(param)](param, int(it)))


def step_index(param, it: int) -> int:
    """Caffe's ``current_step_`` at iteration ``it``: the number of rate drops so far.

    ``step``: ``it // stepsize``.  ``multistep``: Caffe advances ``current_step_`` by at
    most one per iteration when ``it >= stepvalue[current_step_]``, so repeated step
    values drop on consecutive iterations; this replays that without looping over ``it``.
    Other policies have no discrete steps (0).
    """
    policy = policy_name(param)
    if policy == "step":
        return it // param.stepsize
    if policy != "multistep":
        return 0
    step, last = 0, -1
    for value in param.stepvalue:
        at = max(value, last + 1)
        if at > it:
            break
        step, last = step + 1, at
    return step


def lr_dropped(param, it: int) -> bool:
    """Whether a step/multistep policy moves to its next step at iteration ``it``.

    Continuous policies (exp, inv, poly, sigmoid) change every iteration and have no
    drops; ``lr_changed`` tells whether the value itself differs from the previous one.
    """
    return it > 0 and step_index(param, it) != step_index(param, it - 1)


def lr_changed(param, it: int) -> bool:
    """Whether the rate at ``it`` differs from the rate at ``it - 1``."""
    return it > 0 and learning_rate(param, it) != learning_rate(param, it - 1)
