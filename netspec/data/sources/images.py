"""Image decoding with Pillow, into Caffe's layout: (C, H, W) uint8, colour as BGR.

Caffe decodes with OpenCV, whose colour order is BGR; netspec keeps that order so
that Caffe mean values (e.g. 104, 117, 123) and Caffe-trained weights still fit.
"""
from __future__ import annotations

import io
from typing import Optional

import numpy as np

MODES = {True: "RGB", False: "L"}


def decode(data, color: Optional[bool], size: Optional[tuple] = None) -> np.ndarray:
    """Decode a path or encoded bytes; ``color`` True/False forces 3/1 channels,
    None keeps the file's own (Caffe's ANYCOLOR); ``size`` = (height, width) resizes
    bilinearly like cv::resize.  Raises OSError/ValueError on a corrupt image."""
    from PIL import Image
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with Image.open(src) as img:
        img.load()
        if color is None:
            color = img.mode not in ("L", "1", "I", "I;16", "F")
        img = img.convert(MODES[color])
        if size and tuple(size) != (img.height, img.width):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        a = np.asarray(img, np.uint8)
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))


def image_size(path) -> tuple:
    """(channels, height, width) from the header only."""
    from PIL import Image
    with Image.open(path) as img:
        return (1 if img.mode in ("L", "1", "I", "I;16", "F") else 3, img.height, img.width)
