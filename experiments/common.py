"""Shared helpers of the digits experiments: temp solver/net copies with overrides.

The bundled solver files name their net relatively (``net: "deep_plain.prototxt"``)
and the net names its data lists relatively (``source: "train.txt"``).  The
experiments write edited copies into a temporary folder, so every path in a copy
is made absolute first; the bundled files themselves are never modified.
"""
from __future__ import annotations

import re
from pathlib import Path

from netspec.fileio import write_atomic  # noqa: F401  (the experiments write through it)

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits"
MODES = {  # table name -> bundled solver file
    "STANDARD": "solver_standard.prototxt",
    "JOINT": "solver_joint.prototxt",
    "RELAY": "solver_relay.prototxt",
    "MULTIWAY": "solver_multiway.prototxt",
    "MULTIWAY naive": "solver_multiway_naive.prototxt",
    "MW-BP/Relay hybrid": "solver_multiway_hybrid.prototxt",   # MULTIWAY with the Relay scopes
}
# the bundled JOINT/RELAY solvers as shipped (every exit at the net's loss_weight 0.3), to
# compare against the MW-BP paper's same-weighting protocol that the MODES rows follow
CONSTANT_WEIGHT = {"JOINT 0.3": "solver_joint.prototxt", "RELAY 0.3": "solver_relay.prototxt"}
SOLVER_FILES = {**MODES, **CONSTANT_WEIGHT}
EXITS = ("exit1", "exit2", "exit3", "main")
# the bundled solvers' budget (they all share it): the experiments' default
SOLVER_ITERS = int(re.search(r"^max_iter: (\d+)", (DIGITS / MODES["MULTIWAY"]).read_text(), re.M).group(1))
SAME_WEIGHTING = "loss_weight_schedule { type: MULTIWAY_POWER nu: 2 }\n"   # as the MULTIWAY solvers


def set_field(text: str, field: str, value: str) -> str:
    """Replace the top-level ``field: ...`` line of a solver text, or append it when absent."""
    pattern = re.compile(rf"^{field}:.*$", re.M)
    line = f"{field}: {value}"
    return pattern.sub(line, text, count=1) if pattern.search(text) else text + f"\n{line}\n"


def solver_net(mode: str) -> Path:
    """The net file that ``mode``'s bundled solver names (each mode's copy of the digits net)."""
    text = (DIGITS / SOLVER_FILES[mode]).read_text()
    return DIGITS / re.search(r'^net: "([^"]+)"', text, re.M).group(1)


def net_copy(workdir: Path, init: str = "msra", net: Path = DIGITS / "deep_plain.prototxt",
             freeze_trunk: bool = False) -> Path:
    """A copy of the digits net with absolute data-list paths, optionally re-initialised.

    ``init="gaussian"`` swaps every msra and xavier filler for CNDS's ``gaussian std: 0.01``
    (the setting the CNDS paper trains its plain nets with).  ``freeze_trunk`` sets
    every convolution's ``lr_mult`` to 0, so only the classifiers learn: the MW-BP
    paper's protocol for the intermediate exits of a STANDARD-trained net (Table 6,
    footnote 3: "we fix the parameters of all layers and only train the outputs").
    """
    text = net.read_text()
    text = re.sub(r'source: "([^"/]+)"', lambda m: f'source: "{net.parent / m.group(1)}"', text)
    if init == "gaussian":    # every learnable layer, the classifiers' xavier included
        text = text.replace('type: "msra"', 'type: "gaussian" std: 0.01')
        text = text.replace('type: "xavier"', 'type: "gaussian" std: 0.01')
    elif init != "msra":
        raise ValueError(f"unknown init '{init}' (valid: msra, gaussian)")
    if freeze_trunk:  # only the convolutions declare param { lr_mult } in the digits net
        text = re.sub(r"lr_mult: [0-9.]+", "lr_mult: 0", text)
    out = workdir / f"{net.stem}_{init}{'_frozen' if freeze_trunk else ''}.prototxt"
    write_atomic(out, text)
    return out


def solver_copy(workdir: Path, mode: str, seed: int, max_iter: int, net: Path,
                test_interval: int | None = None, tag: str = "", same_weighting: bool = False) -> Path:
    """A copy of ``mode``'s bundled solver with the given seed, budget and (absolute) net.

    ``test_interval`` defaults to the budget, so ``step(max_iter)`` runs no test in
    between and the caller tests once, at the end.  ``same_weighting`` gives every mode
    with auxiliary losses the MULTIWAY solvers' loss weighting (MW-BP sec. 5.1: "we apply
    the same weighting scheme of multiple losses to all the methods"); the bundled JOINT
    and RELAY solvers otherwise keep the net's constant 0.3.
    """
    test_interval = test_interval or max(1, max_iter)
    text = (DIGITS / SOLVER_FILES[mode]).read_text()
    if same_weighting and mode in MODES and mode != "STANDARD" and "loss_weight_schedule" not in text:
        text += SAME_WEIGHTING
    for field, value in (("net", f'"{net}"'), ("random_seed", str(seed)),
                         ("max_iter", str(max_iter)), ("test_interval", str(test_interval)),
                         ("display", "0")):
        text = set_field(text, field, value)
    out = workdir / f"solver_{re.sub(r'[^a-z0-9]+', '_', mode.lower())}{tag}_{seed}.prototxt"
    write_atomic(out, text)
    return out
