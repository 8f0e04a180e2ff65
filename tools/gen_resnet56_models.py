"""Write the ResNet-56 MW-BP port (models/resnet56/): the 4-exit net, its Relay BP copy, one solver per mode.

    python tools/gen_resnet56_models.py

The prototxt generator itself lives in ``benchmarks/resnet56.py`` (the benchmarks build
ResNets of other depths and batch sizes from the same code, so there is one source of
truth); this script is the ``tools/gen_*_models.py`` entry point that writes the shipped
files from it.  The port follows MW-BP (Guo et al. 2020): He et al.'s CIFAR ResNet-56
(16/32/64 channels, 27 basic blocks, Caffe BatchNorm + Scale), exits after weight layers
15, 25, 35 and 45 (residual blocks 7, 12, 17, 22), each global average pooling +
InnerProduct(10) + SoftmaxWithLoss as in the paper's Fig. 1; Relay BP with c = 1 (every
layer hears only its two nearest losses, sec. 5.1), so loss k stops at the blob of exit
k-2.  Deviation: stage changes use Caffe-style 1x1 projection shortcuts (He et al.'s
option B) instead of the parameter-free zero-padding shortcut (option A) of the CIFAR
ResNets, which Caffe has no layer for (+2,560 convolution weights; `netspec check` counts
861,563 parameters with the four exits).
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))     # run from a checkout

from benchmarks.resnet56 import write_models  # noqa: E402

if __name__ == "__main__":
    # no options: --help prints the docstring instead of writing the files
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for path in write_models():
        print(f"wrote {path.relative_to(ROOT)}")
