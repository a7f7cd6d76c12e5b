"""Procedural phantom of a retinal fundus photograph with an exact vessel mask.

The phantom stands in for the DRIVE database (565x584 RGB fundus photographs
with manual vessel annotations).  Every sample is rendered from scratch with
numpy + OpenCV from a single integer seed:

* a circular field of view (FOV), black outside;
* an optic disc (bright, yellowish) left or right of the centre and a dark
  fovea roughly in the middle;
* several branching, tapering, smoothly curving vessel trees that grow out of
  the optic disc (two temporal arcades that bend around the macula, plus
  nasal trunks);
* a fundus-like colour model (reddish-orange background, vessels darkest in
  the green channel), low-frequency illumination, vignetting and noise.

Vessels are rasterised as anti-aliased thick line segments on a supersampled
canvas and averaged down to a per-pixel coverage ("vessel darkness") map in
``[0, 1]``.  The mask is exactly ``coverage >= 0.5`` inside the FOV, and the
same coverage map drives the darkening of the painted image, so mask and image
agree by construction.

Only numpy and cv2 are used; no global random state is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["PhantomSample", "render_phantom", "make_phantom_dataset"]

#: Reference geometry (DRIVE): all pixel lengths below are given at this size
#: and scaled with ``min(height, width) / _REF_SIZE``.
_REF_SIZE = 565.0
#: FOV diameter as a fraction of ``min(height, width)``.
_FOV_FRACTION = 0.92
#: Smallest image side that is accepted.
_MIN_SIDE = 16
#: Hard cap on the number of rasterised vessel segments (bounds render time).
_MAX_SEGMENTS = 40_000


@dataclass(frozen=True)
class PhantomSample:
    """One rendered phantom.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image.
        mask: ``(H, W)`` uint8 vessel mask with values in ``{0, 1}``.
        fov: ``(H, W)`` uint8 field-of-view mask with values in ``{0, 1}``.
        stem: identifier such as ``"phantom_0007"``.
    """

    image: np.ndarray
    mask: np.ndarray
    fov: np.ndarray
    stem: str


# --------------------------------------------------------------------------- #
# seeding helpers
# --------------------------------------------------------------------------- #
def _normalize_seed(seed: int) -> int:
    """Map any Python int (including negatives) onto a valid numpy seed."""
    return int(seed) % (1 << 64)


def _derive_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` of a dataset generated with ``seed``."""
    seq = np.random.SeedSequence([_normalize_seed(seed), int(index)])
    return int(seq.generate_state(1, dtype=np.uint64)[0])


def _stem(index: int) -> str:
    return f"phantom_{int(index):04d}"


# --------------------------------------------------------------------------- #
# geometry
# --------------------------------------------------------------------------- #
@dataclass
class _Layout:
    height: int
    width: int
    scale: float  # min(H, W) / 565
    cx: float
    cy: float
    radius: float  # FOV radius (px)
    side: int  # +1: optic disc right of centre, -1: left
    disc_x: float
    disc_y: float
    disc_r: float
    fovea_x: float
    fovea_y: float


def _make_layout(rng: np.random.Generator, height: int, width: int) -> _Layout:
    m = float(min(height, width))
    scale = m / _REF_SIZE
    radius = 0.5 * _FOV_FRACTION * m
    cx = (width - 1) / 2.0
    cy = (height - 1) / 2.0
    side = 1 if rng.random() < 0.5 else -1
    # optic disc: diameter ~ 1/7 of the FOV diameter
    disc_r = radius / 7.0 * rng.uniform(0.9, 1.1)
    disc_x = cx + side * radius * rng.uniform(0.52, 0.62)
    disc_y = cy + radius * rng.uniform(-0.08, 0.08)
    # fovea: ~2.5 disc diameters temporal to the disc, slightly below it
    dist = 2.0 * disc_r * rng.uniform(2.2, 2.6)
    fovea_x = disc_x - side * dist
    fovea_y = disc_y + radius * rng.uniform(0.0, 0.08)
    return _Layout(height, width, scale, cx, cy, radius, side,
                   disc_x, disc_y, disc_r, fovea_x, fovea_y)


# guide kinds
_G_ARCADE = 0  # follow a circle around the fovea (spiralling outwards)
_G_DISC = 1  # radial away from the optic disc
_G_FOVEA_OUT = 2  # radial away from the fovea
_G_FOVEA_IN = 3  # towards the fovea (stops at the avascular zone)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


@dataclass
class _Vessel:
    """State of one vessel waiting to be grown."""

    x: float
    y: float
    theta: float  # heading (rad, image coordinates: y points down)
    width: float  # px
    length: float  # length budget (px)
    guide: int  # one of the _G_* constants
    steer: float  # how strongly the heading is pulled towards the guide
    contrast: float  # relative darkness (veins 1.0, arteries lighter)
    depth: int  # 0 for trunks
    rot: float = 1.0  # arcade only: rotation sense around the fovea (+1/-1)
    spiral: float = 0.03  # arcade only: outward drift per unit of arc
    sweep: float = math.pi  # arcade only: angle swept before it stops hugging the macula


def _grow_vessels(rng: np.random.Generator, lay: _Layout) -> list[tuple[float, float, float, float, float, float]]:
    """Grow all vessel trees; returns segments ``(x0, y0, x1, y1, width, contrast)``."""
    s = lay.scale
    R = lay.radius
    w_min = max(1.0, 1.15 * s)  # terminal vessel width (px)
    step = max(0.6, 2.4 * s)  # segment length (px)
    faz = 0.07 * R  # foveal avascular zone radius
    limit2 = (1.02 * R) ** 2  # vessels stop just outside the FOV
    fx, fy = lay.fovea_x, lay.fovea_y
    dx0, dy0 = lay.disc_x, lay.disc_y
    disc_r2 = (1.1 * lay.disc_r) ** 2  # no branching on the disc itself
    # branching / length constants (pixels at the reference size, scaled)
    len_per_width = 60.0  # child length budget (px) per px of width
    branch_gap = 14.0 * s  # mean spacing of branch points on a 1-px-wide vessel
    trunk_gap = 30.0 * s  # mean spacing of branch points on a trunk

    def gap(w: float, depth: int) -> float:
        base = trunk_gap if depth == 0 else branch_gap * math.sqrt(w / s)
        return base * rng.uniform(0.5, 1.5)

    stack: list[_Vessel] = []

    # ---- trunks -------------------------------------------------------------
    for v in (-1.0, 1.0):  # -1: superior (up), +1: inferior (down)
        # temporal arcade: a vein (dark, wide) and an artery (lighter, narrower)
        order = 1.0 if rng.random() < 0.5 else -1.0
        for k, (contrast, w0) in enumerate(((1.0, 8.0), (0.78, 6.3))):
            w = max(w0 * s * rng.uniform(0.9, 1.1), (1.7 - 0.2 * k) * w_min)
            ox = lay.disc_x + order * (0.12 if k == 0 else -0.12) * lay.disc_r
            ox += rng.uniform(-0.05, 0.05) * lay.disc_r
            # start slightly past the disc centre so both arcades join smoothly
            oy = lay.disc_y - v * rng.uniform(0.05, 0.15) * lay.disc_r
            # rotation sense around the fovea that leaves the disc in direction v
            rx, ry = ox - fx, oy - fy
            tx, ty = -ry, rx  # perpendicular of (p - f)
            rot = 1.0 if ty * v > 0 else -1.0
            theta = math.atan2(rot * ty, rot * tx) + rng.normal(0.0, 0.1)
            stack.append(_Vessel(
                ox, oy, theta, w, 4.5 * R, _G_ARCADE, rng.uniform(0.07, 0.11), contrast, 0,
                rot=rot,
                spiral=0.03 + (0.01 + 0.09 * k) * order + rng.uniform(-0.01, 0.01),
                sweep=rng.uniform(2.2, 2.8),
            ))
        # nasal trunks
        for contrast, w0 in ((0.95, 5.5), (0.75, 4.6)):
            if rng.random() < 0.25:
                continue
            w = max(w0 * s * rng.uniform(0.85, 1.1), 1.3 * w_min)
            ang = math.atan2(v * rng.uniform(0.25, 1.4), float(lay.side))
            stack.append(_Vessel(lay.disc_x, lay.disc_y + v * 0.2 * lay.disc_r, ang, w,
                                 1.6 * R, _G_DISC, 0.03, contrast, 0))
    # one or two small vessels leaving the disc towards the macula
    for _ in range(int(rng.integers(1, 3))):
        w = max(3.0 * s * rng.uniform(0.8, 1.2), 1.1 * w_min)
        ang = math.atan2(fy - lay.disc_y + rng.normal(0, 0.4 * lay.disc_r), fx - lay.disc_x)
        stack.append(_Vessel(lay.disc_x, lay.disc_y, ang + rng.normal(0, 0.25), w,
                             len_per_width * w * 1.5, _G_FOVEA_IN, 0.03, 0.85, 1))

    # ---- growth ------------------------------------------------------------
    segments: list[tuple[float, float, float, float, float, float]] = []
    while stack and len(segments) < _MAX_SEGMENTS:
        ves = stack.pop()
        x, y, theta, w, guide, steer = ves.x, ves.y, ves.theta, ves.width, ves.guide, ves.steer
        if w < w_min:
            continue
        # exponential taper: the width reaches ~w_min at the end of the budget
        decay = math.log(max(w / (0.97 * w_min), 1.0001)) / max(ves.length, step)
        curv = 0.0
        wig = 0.006 + 0.022 / max(w / s, 1.0)  # thinner vessels are more tortuous
        travelled = 0.0
        swept = 0.0
        prev_ang = math.atan2(y - fy, x - fx)
        next_branch = gap(w, ves.depth)
        branch_side = 1.0 if rng.random() < 0.5 else -1.0
        while w >= w_min and len(segments) < _MAX_SEGMENTS:
            # direction the vessel is pulled towards
            if guide == _G_ARCADE:
                rx, ry = x - fx, y - fy
                rn = math.hypot(rx, ry) + 1e-9
                ux, uy = rx / rn, ry / rn
                gx = -ves.rot * uy + ves.spiral * ux
                gy = ves.rot * ux + ves.spiral * uy
                # feed-forward: turn with the guiding circle (no outward lag)
                theta += ves.rot * step / rn
                ang = math.atan2(ry, rx)
                swept += abs(_wrap(ang - prev_ang))
                prev_ang = ang
                if swept > ves.sweep:  # past the macula: head for the periphery
                    guide, steer = _G_FOVEA_OUT, 0.02
            elif guide == _G_DISC:
                gx, gy = x - dx0, y - dy0
            elif guide == _G_FOVEA_OUT:
                gx, gy = x - fx, y - fy
            else:
                gx, gy = fx - x, fy - y
            target = math.atan2(gy, gx)
            curv = 0.9 * curv + rng.normal(0.0, wig)
            theta = theta + curv + steer * _wrap(target - theta)
            nx = x + step * math.cos(theta)
            ny = y + step * math.sin(theta)
            segments.append((x, y, nx, ny, w, ves.contrast))
            x, y = nx, ny
            travelled += step
            w *= math.exp(-decay * step)
            if (x - lay.cx) ** 2 + (y - lay.cy) ** 2 > limit2 or travelled > ves.length:
                break
            if (guide == _G_FOVEA_IN or ves.depth > 0) and math.hypot(x - fx, y - fy) < faz:
                break
            # branching
            next_branch -= step
            if next_branch > 0.0 or w <= 1.35 * w_min or (x - dx0) ** 2 + (y - dy0) ** 2 <= disc_r2:
                continue
            if rng.random() < (0.08 if ves.depth == 0 else 0.25):
                ratio = rng.uniform(0.7, 0.9)  # near-symmetric bifurcation
            elif ves.depth == 0:
                ratio = rng.uniform(0.3, 0.6)  # side branch of a trunk
            else:
                ratio = rng.uniform(0.35, 0.7)  # side branch
            wc = max(w * ratio, w_min * 1.02)
            # Murray's law: w^3 = wp^3 + wc^3
            wp = max(max(w ** 3 - wc ** 3, 0.0) ** (1.0 / 3.0), w_min * 1.01)
            if rng.random() < 0.7:
                branch_side = -branch_side
            ang_c = theta + branch_side * rng.uniform(0.45, 1.2) * (1.1 - 0.4 * ratio)
            theta -= branch_side * rng.uniform(0.05, 0.25) * ratio  # parent deflects
            # child guidance: away from the disc (nasal), else outwards from the
            # fovea or into the macula depending on where it points
            if guide == _G_DISC:
                cg = _G_DISC
            else:
                inward = math.cos(ang_c) * (fx - x) + math.sin(ang_c) * (fy - y) > 0.0
                cg = _G_FOVEA_IN if inward else _G_FOVEA_OUT
            c_len = max(len_per_width * wc * rng.uniform(0.6, 1.3), 3.0 * step)
            if cg == _G_FOVEA_IN and ves.depth == 0 and swept > 0.6:
                # macular branches of the arcades reach towards the fovea
                c_len = max(c_len, rng.uniform(0.4, 0.8) * math.hypot(fx - x, fy - y))
            stack.append(_Vessel(x, y, ang_c, wc, c_len, cg, rng.uniform(0.01, 0.04),
                                 ves.contrast * rng.uniform(0.9, 1.0), ves.depth + 1))
            w = wp
            next_branch = gap(w, ves.depth)
    return segments


def _rasterize(segments, lay: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Return (coverage in [0, 1], per-pixel contrast weight) at image size."""
    h, w = lay.height, lay.width
    ss = int(np.clip(2400 // max(h, w), 2, 8))  # supersampling factor
    shift = 4
    off = (ss - 1) / 2.0  # pixel centres: x_ss = ss * x + (ss - 1) / 2
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    weight = np.zeros((h, w), np.float32)
    if segments:
        seg = np.asarray(segments, dtype=np.float64)
        # supersampled, fixed-point endpoints
        p0x = np.round((seg[:, 0] * ss + off) * (1 << shift)).astype(np.int64)
        p0y = np.round((seg[:, 1] * ss + off) * (1 << shift)).astype(np.int64)
        p1x = np.round((seg[:, 2] * ss + off) * (1 << shift)).astype(np.int64)
        p1y = np.round((seg[:, 3] * ss + off) * (1 << shift)).astype(np.int64)
        thick = np.maximum(np.round(seg[:, 4] * ss), 1).astype(np.int64)
        for i in range(len(seg)):
            cv2.line(canvas, (int(p0x[i]), int(p0y[i])), (int(p1x[i]), int(p1y[i])),
                     255, int(thick[i]), cv2.LINE_AA, shift)
        # contrast weight: thin vessels are fainter; wider segments drawn last
        wid = seg[:, 4] / max(lay.scale, 1e-6)  # width in reference px
        strength = seg[:, 5] * np.clip(0.55 + 0.45 * (wid - 1.0) / 4.0, 0.55, 1.0)
        order = np.argsort(seg[:, 4], kind="stable")
        q0x = np.round(seg[:, 0]).astype(np.int64)
        q0y = np.round(seg[:, 1]).astype(np.int64)
        q1x = np.round(seg[:, 2]).astype(np.int64)
        q1y = np.round(seg[:, 3]).astype(np.int64)
        tw = (np.ceil(seg[:, 4]) + 2).astype(np.int64)
        for i in order:
            cv2.line(weight, (int(q0x[i]), int(q0y[i])), (int(q1x[i]), int(q1y[i])),
                     float(strength[i]), int(tw[i]), cv2.LINE_8)
    cov = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return cov, weight


# --------------------------------------------------------------------------- #
# colour / appearance
# --------------------------------------------------------------------------- #
def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in roughly [-1, 1] with ~``cells`` bumps per side."""
    g = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = cv2.resize(g, (w + 2 * max(w // cells, 1), h + 2 * max(h // cells, 1)),
                     interpolation=cv2.INTER_CUBIC)
    oy = max(h // cells, 1)
    ox = max(w // cells, 1)
    field = big[oy:oy + h, ox:ox + w]
    return field / (np.abs(field).max() + 1e-6)


def _blurred_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    n = rng.standard_normal((h, w)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), max(sigma, 0.3))
    return n / (n.std() + 1e-6)


def _paint(rng: np.random.Generator, lay: _Layout, cov: np.ndarray, weight: np.ndarray,
           fov_soft: np.ndarray) -> np.ndarray:
    h, w = lay.height, lay.width
    R = lay.radius
    s = lay.scale
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # base reflectance (RGB in [0, 1]): reddish-orange fundus
    base = np.array([0.84, 0.40, 0.15], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    base[0] = min(base[0], 0.97)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base

    # choroidal texture (fine + coarse), mostly in red/green
    tex = 0.022 * _blurred_noise(rng, h, w, 1.5 * s) + 0.025 * _blurred_noise(rng, h, w, 12.0 * s)
    img *= 1.0 + tex[..., None] * np.array([0.8, 1.0, 1.0], np.float32)

    # macula / fovea: darker, more in green and blue
    d2f = (xx - lay.fovea_x) ** 2 + (yy - lay.fovea_y) ** 2
    fov_spot = np.exp(-d2f / (2.0 * (0.075 * R) ** 2))
    macula = np.exp(-d2f / (2.0 * (0.22 * R) ** 2))
    dark = 0.38 * fov_spot + 0.14 * macula
    img *= 1.0 - dark[..., None] * np.array([0.55, 1.0, 0.9], np.float32)

    # optic disc: bright yellowish blob with a brighter cup
    a = lay.disc_r * rng.uniform(0.92, 1.0)
    b = lay.disc_r * rng.uniform(1.0, 1.12)  # slightly taller than wide
    dd = np.sqrt(((xx - lay.disc_x) / a) ** 2 + ((yy - lay.disc_y) / b) ** 2)
    edge = max(0.12, 1.2 / max(lay.disc_r, 1e-3))
    disc = 1.0 / (1.0 + np.exp(np.clip((dd - 1.0) / edge, -30.0, 30.0)))
    halo = np.exp(-np.maximum(dd - 1.0, 0.0) ** 2 / 0.18) * (1.0 - disc)
    cup_dx = -lay.side * 0.2 * a
    dc = np.sqrt(((xx - lay.disc_x - cup_dx) / (0.5 * a)) ** 2 + ((yy - lay.disc_y) / (0.55 * b)) ** 2)
    cup = 1.0 / (1.0 + np.exp(np.clip((dc - 1.0) / 0.25, -30.0, 30.0)))
    disc_col = np.array([1.0, 0.86, 0.52], np.float32) * rng.uniform(0.93, 1.03, 3).astype(np.float32)
    cup_col = np.array([1.0, 0.95, 0.78], np.float32)
    dcol = disc_col[None, None] * (1.0 - cup[..., None]) + cup_col[None, None] * cup[..., None]
    alpha = 0.92 * disc + 0.25 * halo
    img = img * (1.0 - alpha[..., None]) + dcol * alpha[..., None]

    # vessels: absorption, strongest in green
    absorb = np.array([0.30, 0.60, 0.50], np.float32) * rng.uniform(0.92, 1.08)
    vd = cov * np.where(weight > 0.0, weight, 0.55)
    img *= 1.0 - vd[..., None] * absorb

    # illumination: low-frequency variation + vignetting
    illum = 1.0 + 0.12 * _smooth_field(rng, h, w, 3)
    r = np.sqrt((xx - lay.cx) ** 2 + (yy - lay.cy) ** 2) / R
    vig_amp = rng.uniform(0.35, 0.55)
    vig = 1.0 - vig_amp * np.clip(r, 0.0, 1.0) ** rng.uniform(2.2, 3.2)
    gain = rng.uniform(0.9, 1.05)
    img *= (illum * vig * gain)[..., None]

    # slight optical blur, FOV, sensor noise
    img = cv2.GaussianBlur(img, (0, 0), max(0.45 * s, 0.35))
    img *= fov_soft[..., None]
    img *= 255.0
    img += rng.normal(0.0, 1.8, img.shape).astype(np.float32) * fov_soft[..., None]
    img = np.clip(img, 0.0, 255.0)
    return np.round(img).astype(np.uint8)


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def render_phantom(seed: int, height: int = 584, width: int = 565, *, index: int = 0) -> PhantomSample:
    """One deterministic phantom: same (seed, height, width) -> identical arrays.

    Args:
        seed: any Python int (negative values are mapped into numpy's range).
        height: image height in pixels (>= 16).
        width: image width in pixels (>= 16).
        index: only used to build the stem ``phantom_{index:04d}``.

    Returns:
        A :class:`PhantomSample` with an RGB uint8 image, a {0, 1} vessel mask
        (``coverage >= 0.5`` inside the FOV) and a {0, 1} circular FOV mask.
    """
    height = int(height)
    width = int(width)
    if height < _MIN_SIDE or width < _MIN_SIDE:
        raise ValueError(f"phantom size must be at least {_MIN_SIDE}x{_MIN_SIDE}, got {height}x{width}")
    rng = np.random.default_rng(_normalize_seed(seed))
    lay = _make_layout(rng, height, width)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rr = np.sqrt((xx - lay.cx) ** 2 + (yy - lay.cy) ** 2)
    fov_bool = rr <= lay.radius
    fov_soft = np.clip(lay.radius + 0.5 - rr, 0.0, 1.0).astype(np.float32)
    fov_soft[~fov_bool] = 0.0

    segments = _grow_vessels(rng, lay)
    cov, weight = _rasterize(segments, lay)
    mask = ((cov >= 0.5) & fov_bool).astype(np.uint8)
    image = _paint(rng, lay, cov, weight, fov_soft)
    image[~fov_bool] = 0
    return PhantomSample(image=image, mask=mask, fov=fov_bool.astype(np.uint8), stem=_stem(index))


def make_phantom_dataset(count: int, seed: int = 0, height: int = 584, width: int = 565) -> list[PhantomSample]:
    """`count` phantoms; sample i uses a seed derived from (seed, i) so that datasets
    with different seeds differ and stems are phantom_0000, phantom_0001, ..."""
    count = int(count)
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    return [render_phantom(_derive_seed(seed, i), height, width, index=i) for i in range(count)]
