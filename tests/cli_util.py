"""Small real inputs shared by the CLI, API and tools-script tests: a two-exit net on the
bundled digits (HDF5Data, TRAIN and TEST phases) and a solver that trains it briefly."""
from pathlib import Path

from conftest import REPO

DIGITS = REPO / "models" / "digits"

TINY_NET = """name: "tiny"
layer {{ name: "digits" type: "HDF5Data" top: "data" top: "label" include {{ phase: TRAIN }}
  hdf5_data_param {{ source: "{digits}/train.txt" batch_size: 16 shuffle: true }} }}
layer {{ name: "digits" type: "HDF5Data" top: "data" top: "label" include {{ phase: TEST }}
  hdf5_data_param {{ source: "{digits}/test.txt" batch_size: 33 shuffle: false }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "aux_fc" type: "InnerProduct" bottom: "conv1" top: "aux_fc"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux_fc" bottom: "label" top: "aux_loss"
  loss_weight: 0.3 }}
layer {{ name: "aux_accuracy" type: "Accuracy" bottom: "aux_fc" bottom: "label" top: "aux_accuracy"
  include {{ phase: TEST }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
"""

TINY_SOLVER = """net: "{net}"
test_iter: 1
test_interval: 2
test_initialization: false
base_lr: 0.05
momentum: 0.9
lr_policy: "fixed"
max_iter: 4
display: 1
snapshot: 0
snapshot_after_train: true
snapshot_prefix: "{prefix}"
random_seed: 3
solver_mode: CPU
bp_mode: {mode}
"""


def tiny_net(folder: Path) -> Path:
    """The two-exit digits net, written into ``folder``."""
    path = folder / "tiny.prototxt"
    path.write_text(TINY_NET.format(digits=DIGITS))
    return path


def tiny_solver(folder: Path, mode: str = "RELAY") -> Path:
    """A 4-iteration solver for :func:`tiny_net` that tests every 2 iterations and snapshots
    at the end (as ``folder/tiny_iter_4.netspec``)."""
    net = tiny_net(folder)
    path = folder / "solver.prototxt"
    path.write_text(TINY_SOLVER.format(net=net, prefix=folder / "tiny", mode=mode))
    return path
