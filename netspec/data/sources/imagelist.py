"""ImageData: ``source`` is a list file of ``path label`` lines (split at the last
space, as Caffe does), paths relative to ``root_folder``; images are decoded with
Pillow, resized to ``new_height`` x ``new_width`` when given, grey or colour by
``is_color``."""
from __future__ import annotations

import numpy as np

from .base import Source
from .images import decode

SOURCE = ("image_data_param", "source")


class ImageListSource(Source):
    param = "image_data_param"

    def __init__(self, lp, phase, site):
        super().__init__(lp, phase, site)
        self.listing = site.resolve(self.p.source, SOURCE, "image list")
        self.root = self._root()
        self.items = self._parse()
        if not self.items:
            raise site.error("E0104", f"image list '{self.listing}' names no image", SOURCE)
        size = (self.p.new_height, self.p.new_width)
        if bool(size[0]) != bool(size[1]):
            raise site.error("E0501", "new_height and new_width must be given together",
                             ("image_data_param", "new_height"))
        self.size = size if size[0] else None

    def _root(self) -> str:
        root = self.p.root_folder
        if not root:
            return ""
        found = self.site.resolve(root, ("image_data_param", "root_folder"), "root_folder")
        return str(found) + ("/" if root.endswith("/") else "")

    def _parse(self) -> list[tuple[str, int, int]]:
        items = []
        try:
            lines = self.listing.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise self.site.error("E0104", f"cannot read image list '{self.listing}': {e}", SOURCE) from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            path, _, label = line.rstrip().rpartition(" ")
            try:
                items.append((path, int(label), n))
            except ValueError:
                raise self.site.error("E0701", f"line {n} of '{self.listing}' is not 'path label' "
                                      f"with an integer label: '{line.strip()}'", SOURCE) from None
        return items

    def __len__(self) -> int:
        return len(self.items)

    def path(self, i: int) -> str:
        # Caffe concatenates root_folder and the listed path as strings
        return self.root + self.items[i][0]

    def describe(self, i: int) -> str:
        return f"image '{self.path(i)}' (line {self.items[i][2]} of '{self.listing}')"

    def read(self, i: int) -> list[np.ndarray]:
        try:
            img = decode(self.path(i), self.p.is_color, self.size)
        except FileNotFoundError:
            raise self.site.error("E0104", f"{self.describe(i)} does not exist", SOURCE) from None
        except (OSError, ValueError) as e:
            raise self.error(f"cannot decode {self.describe(i)}: {e}", SOURCE) from None
        return [img, np.float32(self.items[i][1])][:len(self.tops)]

    def labels(self):
        return np.asarray([label for _, label, _ in self.items])
