"""Pure-torch helpers that generated code calls (Caffe semantics torch lacks).

Each helper is self-contained (it uses only ``torch``, ``nn``, ``F``, ``math``
and other helpers here), because ``netspec convert`` copies the source of the
helpers a net needs into the standalone file it writes.  Layer classes name
the helpers they use in ``Layer.runtime``.
"""
from .common import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .neurons import *  # noqa: F401,F403
from .recurrent import *  # noqa: F401,F403
from .vision import *  # noqa: F401,F403

from . import common as _c, losses as _l, neurons as _n, recurrent as _r, vision as _v

__all__ = sorted(set(_c.__all__) | set(_l.__all__) | set(_n.__all__) | set(_r.__all__) | set(_v.__all__))
