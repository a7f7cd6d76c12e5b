"""Image transforms: colour preprocessing, rescaling to a common FOV scale, training augmentation."""

from types import MappingProxyType

import albumentations as A
import cv2
import numpy as np

from synthmed_lightning.data.sample import Sample
from synthmed_lightning.errors import ConfigError

PREPROCESS_MODES = {"rgb": 3, "green": 1}
# The preprocessing of a run or checkpoint that names none (data.preprocess's defaults); read-only,
# copy it with dict(...) to change it.
DEFAULT_PREPROCESS = MappingProxyType({"mode": "rgb", "clahe": False})


def input_channels(mode: str) -> int:
    """Channels the network sees for a preprocessing mode (rgb: 3, green: 1)."""
    if mode not in PREPROCESS_MODES:
        raise ConfigError(f"data.preprocess.mode={mode!r}: expected one of {', '.join(PREPROCESS_MODES)}")
    return PREPROCESS_MODES[mode]


def preprocess(image: np.ndarray, mode: str = "rgb", clahe: bool = False) -> np.ndarray:
    """uint8 RGB -> uint8 (H, W, C): RGB, or the green channel where vessels contrast most.

    CLAHE equalises local contrast (on the green channel, or on LAB lightness for RGB),
    which evens out the illumination differences between cameras.
    """
    input_channels(mode)
    if mode == "green":
        out = image[..., 1:2].copy()
        if clahe:
            out = _clahe()(out[..., 0])[..., None]
        return out
    if clahe:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        lab[..., 0] = _clahe()(lab[..., 0])
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return image


def fov_depth(fov: np.ndarray) -> np.ndarray:
    """float32 map of how deep inside the field of view each pixel lies: its distance to the FOV's
    edge over the largest such distance (1 at the centre of a round FOV, 0 at its rim and outside).

    Stage II's position channel (`model.fov_depth`): a 256 px patch from the middle of the eye
    shows no FOV edge, so without it the painter cannot tell the macula from the mid-periphery.
    """
    inside = (np.asarray(fov) > 0).astype(np.uint8)
    distance = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    return (distance / max(float(distance.max()), 1.0)).astype(np.float32)


def _clahe():
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply


def to_tensor_layout(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) -> float32 (C, H, W) in [-1, 1], the range every network here expects."""
    return (image.astype(np.float32).transpose(2, 0, 1) / 127.5) - 1.0


def resize_sample(sample: Sample, scale: float) -> Sample:
    """Resample image, mask and FOV by `scale` (masks linearly, then thresholded, so thin vessels survive)."""
    if abs(scale - 1.0) < 1e-6:
        return sample
    h, w = sample.image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return Sample(
        image=cv2.resize(sample.image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR),
        mask=None if sample.mask is None else resize_binary(sample.mask, size),
        fov=resize_binary(sample.fov, size),
        stem=sample.stem,
    )


def resize_binary(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a {0,1} mask to (width, height)."""
    resized = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return (resized >= 0.5).astype(np.uint8)


def rotate_about_centre(array: np.ndarray, degrees: float, mask: np.ndarray,
                        interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """(H, W) `array` turned counter-clockwise (as displayed) by `degrees` about the centroid of the
    (H, W) bool `mask` (a FOV); what comes in from outside the image is 0."""
    rows, cols = np.nonzero(mask)
    turn = cv2.getRotationMatrix2D((float(cols.mean()), float(rows.mean())), float(degrees), 1.0)
    return cv2.warpAffine(array, turn, (array.shape[1], array.shape[0]), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


AUGMENTATIONS = ("default", "strong", "none")


def check_augmentation(name, setting: str = "data.augmentation") -> str:
    """`name` if it is one of AUGMENTATIONS, else a ConfigError naming `setting`."""
    if name not in AUGMENTATIONS:
        raise ConfigError(f"{setting}={name!r}: expected one of {', '.join(AUGMENTATIONS)}")
    return name


def training_augmentation(strength: str = "default", channels: int = 3) -> A.Compose:
    """Geometric + photometric augmentation applied to image, vessel mask and FOV together.
    `strong` widens the photometric part (illumination, contrast, colour, blur, sharpening, noise)
    beyond one camera's look: for a segmenter trained on synthetic images that must meet others."""
    if strength == "none":
        return A.Compose([])
    check_augmentation(strength)
    geometric = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(rotate=(-20, 20), scale=(0.9, 1.1), border_mode=cv2.BORDER_REFLECT_101, p=0.5),
    ]
    if strength == "default":
        colour = [A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=10, val_shift_limit=5, p=0.3)] if channels == 3 else []
        return A.Compose([*geometric, A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
                          A.RandomGamma(gamma_limit=(80, 120), p=0.3), *colour])
    colour = [A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=10, p=0.5)] if channels == 3 else []
    return A.Compose([
        *geometric,
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8),
        A.RandomGamma(gamma_limit=(60, 160), p=0.5),
        *colour,
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2)), A.Sharpen(alpha=(0.1, 0.3))], p=0.4),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.4),
    ])
