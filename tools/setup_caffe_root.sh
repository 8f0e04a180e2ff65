#!/bin/sh
# Build a root file system with real BVLC Caffe (CPU) and pycaffe, for
# benchmarks/caffe_crosscheck.py and tests/test_real_caffe.py.
#
#   sudo sh tools/setup_caffe_root.sh [ROOT]        # default /tmp/caffe-focal; about 5 minutes
#
# Debian no longer packages Caffe; Ubuntu 20.04 (focal) still does: caffe-cpu
# 1.0.0+git20180821.99bd997, i.e. BVLC Caffe 1.0 plus its 2018 master fixes, with Python 3.8's
# pycaffe.  OpenBLAS replaces the reference BLAS the package would otherwise link (a 5-10x
# slower Caffe).  Needs root (debootstrap, chroot) and archive.ubuntu.com.
set -eu
ROOT=${1:-/tmp/caffe-focal}
MIRROR=${MIRROR:-http://archive.ubuntu.com/ubuntu}
command -v debootstrap >/dev/null || apt-get install -y debootstrap
[ -x "$ROOT/usr/bin/python3" ] || debootstrap --no-check-gpg --variant=minbase --components=main,universe focal "$ROOT" "$MIRROR"
chroot "$ROOT" apt-get update
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends caffe-cpu libopenblas0-pthread
chroot "$ROOT" sh -c 'caffe --version && python3 -c "import caffe"'
echo "Caffe is ready in $ROOT: NETSPEC_CAFFE_ROOT=$ROOT python benchmarks/caffe_crosscheck.py"
