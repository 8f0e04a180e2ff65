"""Weights and snapshot files, the one home of their reading and writing.

``blobproto`` (BlobProto <-> numpy; a leaf that layers and data transforms use),
``caffemodel`` (reading ``.caffemodel[.h5]`` and copying by layer name; every tool's
``load_weights_file``), ``export`` (writing Caffe's ``.caffemodel``), ``snapshot``
(Caffe's ``.solverstate[.h5]``) and ``weights`` (netspec's own ``.netspec`` files).
Nothing here imports ``netspec.solve``: the solver calls these modules.
"""
