"""One image of a vessel dataset, as every reader returns it."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    """A decoded fundus image with its vessel mask and field of view (FOV).

    image: (H, W, 3) uint8 RGB.  mask, fov: (H, W) uint8 in {0, 1}.
    `mask` is None for unlabelled images (the pseudo-label route).
    """

    image: np.ndarray
    mask: np.ndarray | None
    fov: np.ndarray
    stem: str

    @property
    def fov_diameter(self) -> float:
        """Horizontal extent of the FOV in pixels: the scale of the camera (DRIVE ~540)."""
        return fov_diameter(self.fov)


def fov_diameter(fov: np.ndarray) -> float:
    columns = np.flatnonzero(fov.any(axis=0))
    if columns.size == 0:
        return float(fov.shape[1])
    return float(columns[-1] - columns[0] + 1)
