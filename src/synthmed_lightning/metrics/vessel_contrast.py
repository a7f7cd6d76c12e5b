"""How dark a fundus image's vessels are against their own background, and how rough that background is.

A painter can put every vessel of its mask in the right place and still teach a segmenter the wrong
thing: if its thin vessels are fainter than a photograph's, a U-Net trained on its paintings learns
to ignore faint lines; if its background is smoother, it never learns what background clutter looks
like. Both show here, on the green channel (where vessels have the most contrast in fundus images):

* the local background is the green channel averaged over the nearby non-vessel pixels of the FOV
  (a Gaussian of `sigma` px, normalised by the weight of the pixels it averaged;
  `data.vessel_profile.local_background`, which also gives paintings the photographs' contrast);
* a vessel pixel's contrast is ``1 - pixel / background``: 0 for a vessel that is not drawn, about
  0.05 for a thin and 0.15 for a thick vessel in a DRIVE photograph;
* background roughness is the standard deviation of ``pixel / background - 1`` over the
  non-vessel pixels: the texture, noise and reflections that are left after the slow illumination.

Thin vessels are those at most 2 px wide (the pixels a 3 x 3 opening removes), as in the study's
painter fidelity.
"""

from __future__ import annotations

import numpy as np

from synthmed_lightning.data.vessel_profile import local_background, thin_vessels

__all__ = ["mean_vessel_contrast", "thin_vessels", "vessel_contrast"]


def vessel_contrast(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, sigma: float = 6.0) -> dict[str, float]:
    """{"contrast_thin", "contrast_thick": median contrast of thin / thick vessel pixels,
    "background_roughness": std of the background's relative deviation} of one (H, W, 3) RGB image
    with its (H, W) vessel mask and FOV. A class with no pixel gives NaN."""
    if image.ndim != 3 or image.shape[:2] != mask.shape or mask.shape != fov.shape:
        raise ValueError(f"vessel_contrast: image {image.shape}, mask {mask.shape} and fov {fov.shape} "
                         "must be (H, W, 3), (H, W), (H, W)")
    green = image[..., 1].astype(np.float64)
    vessel = mask > 0
    background, measured, weight = local_background(green, mask, fov, sigma)
    relative = np.where(measured, green / np.where(measured, background, 1.0), 1.0)
    thin = thin_vessels(mask) & measured
    thick = vessel & measured & ~thin
    median = lambda values: float(np.median(values)) if values.size else float("nan")  # noqa: E731
    flat = (weight > 0) & measured
    return {"contrast_thin": median(1.0 - relative[thin]),
            "contrast_thick": median(1.0 - relative[thick]),
            "background_roughness": float(np.std(relative[flat] - 1.0)) if flat.any() else float("nan")}


def mean_vessel_contrast(images: list[np.ndarray], masks: list[np.ndarray], fovs: list[np.ndarray],
                         sigma: float = 6.0) -> dict[str, float | None]:
    """`vessel_contrast` averaged over images, with `contrast_thick_spread`: its standard deviation
    between images (how varied the set's vessels are; photographs vary more than paintings).
    None where no image has pixels of the class (so the figures stay valid JSON)."""
    per_image = [vessel_contrast(i, m, f, sigma) for i, m, f in zip(images, masks, fovs, strict=True)]

    finite = {key: np.array([p[key] for p in per_image]) for key in per_image[0]}
    finite = {key: values[np.isfinite(values)] for key, values in finite.items()}
    out = {key: float(values.mean()) if values.size else None for key, values in finite.items()}
    thick = finite["contrast_thick"]
    out["contrast_thick_spread"] = float(thick.std()) if thick.size else None
    return out
