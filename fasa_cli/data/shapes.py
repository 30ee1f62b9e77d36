"""The embedded dataset's visual vocabulary and the drawing of one image.

A class is a (colour, texture, shape) triple, so classes share parts: a rare
"blue striped star" shares its shape with frequent stars and its colour and texture
with other frequent classes. Masks are rasterized with pycocotools from the stored
polygon, so the polygon (or the RLE of its visible part) is exact for what is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

COLOURS = {
    "red": (215, 45, 45),
    "orange": (240, 140, 30),
    "yellow": (235, 215, 50),
    "green": (50, 170, 70),
    "cyan": (40, 195, 210),
    "blue": (45, 85, 215),
    "magenta": (205, 60, 195),
    "white": (235, 235, 235),
}
TEXTURES = ("solid", "striped", "dotted", "checkered")


def _regular(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _crescent() -> np.ndarray:
    # Outer unit circle from 40 to 320 degrees, back along a smaller circle centred at
    # (0.35, 0) that passes through both end points: a concave but simple polygon.
    a = np.deg2rad(np.linspace(40, 320, 20))
    outer = np.stack([np.cos(a), np.sin(a)], 1)
    end = outer[-1]
    centre = 0.35
    radius = np.hypot(end[0] - centre, end[1])
    start_angle = np.arctan2(end[1], end[0] - centre)
    b = np.linspace(start_angle, -2 * np.pi - start_angle, 16)[1:-1]  # the long way, through x < 0
    inner = np.stack([centre + radius * np.cos(b), radius * np.sin(b)], 1)
    return np.concatenate([outer, inner])


# Unit-size outlines centred on the origin (y down, as in images).
SHAPES = {
    "circle": _regular(24),
    "triangle": _regular(3) * [1.1, 1.1] + [0, 0.2],
    "square": np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]),
    "diamond": np.array([[0, -1.0], [0.6, 0], [0, 1.0], [-0.6, 0]]),
    "pentagon": _regular(5),
    "hexagon": _regular(6, 0.0),
    "star": _star(),
    "cross": np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
                       [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]),
    "crescent": _crescent(),
    "arrow": np.array([[-1, -0.28], [0.1, -0.28], [0.1, -0.7], [1, 0], [0.1, 0.7], [0.1, 0.28], [-1, 0.28]]),
}


@dataclass(frozen=True)
class ObjectClass:
    colour: str
    texture: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour}_{self.texture}_{self.shape}"


@dataclass(frozen=True)
class DrawParams:
    size: int                  # square image side in pixels
    radius: tuple[float, float]  # object radius range in pixels (log-uniform)
    extra_instance_rate: float   # Poisson mean of extra instances of a class in an image
    max_objects: int
    distractors: tuple[int, int]  # blobs that are no class, inclusive range
    min_visible: float = 0.4     # an object less visible than this is not drawn at all
    noise_sigma: float = 6.0


def choose_classes(rng: np.random.Generator, num_classes: int, vocab: tuple[int, int, int]) -> list[ObjectClass]:
    """`num_classes` distinct triples from a seeded sub-vocabulary of (shapes, colours,
    textures), so every shape, colour and texture is shared by several classes."""
    n_shapes, n_colours, n_textures = vocab
    shapes = rng.choice(list(SHAPES), n_shapes, replace=False)
    colours = rng.choice(list(COLOURS), n_colours, replace=False)
    textures = np.asarray(TEXTURES[:n_textures])
    combos = [(c, t, s) for s in shapes for c in colours for t in textures]
    if num_classes > len(combos):
        raise ValueError(f"vocabulary {vocab} has only {len(combos)} classes, {num_classes} asked")
    picked = rng.choice(len(combos), num_classes, replace=False)
    return sorted((ObjectClass(*map(str, combos[i])) for i in picked), key=lambda c: c.name)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small (g, g, ch) grid to (size, size, ch). Element-wise
    (no BLAS), so the pixels are the same on every machine."""
    g = grid.shape[0]
    pos = np.linspace(0, g - 1, size)
    lo = np.minimum(pos.astype(int), g - 2)
    w = (pos - lo)[:, None, None]
    rows = grid[lo] * (1 - w) + grid[lo + 1] * w              # (size, g, ch)
    w = w[None, :, :, 0]
    return rows[:, lo] * (1 - w) + rows[:, lo + 1] * w         # (size, size, ch)


def _background(rng: np.random.Generator, p: DrawParams) -> np.ndarray:
    """Muted, low-frequency coloured clutter plus distractor blobs and sticks."""
    size = p.size
    base = rng.uniform(45, 125) + rng.uniform(-18, 18, 3)
    img = base + _upsample(rng.normal(0, 22, (5, 5, 3)), size)
    for _ in range(rng.integers(p.distractors[0], p.distractors[1] + 1)):
        grey = rng.uniform(50, 170)
        colour = 0.6 * grey + 0.4 * rng.uniform(30, 220, 3)  # desaturated: never a class colour
        cx, cy = rng.uniform(0, size, 2)
        scale = rng.uniform(*p.radius) * 0.8
        # Work in a window around the distractor: every part of it lies within `reach`.
        reach = 3.5 * scale + 3
        y0, y1 = int(max(cy - reach, 0)), int(min(cy + reach, size - 1)) + 1
        x0, x1 = int(max(cx - reach, 0)), int(min(cx + reach, size - 1)) + 1
        yy, xx = np.ogrid[y0:y1, x0:x1]
        if rng.random() < 0.7:  # blob: union of a few ellipses
            blob = np.zeros((y1 - y0, x1 - x0), bool)
            for _ in range(rng.integers(2, 5)):
                ox, oy = np.clip(rng.normal(0, 0.6 * scale, 2), -2.4 * scale, 2.4 * scale)
                ax, ay = rng.uniform(0.4, 1.0, 2) * scale
                blob |= ((xx - cx - ox) / ax) ** 2 + ((yy - cy - oy) / ay) ** 2 <= 1
        else:  # stick: a thick line segment
            angle = rng.uniform(0, np.pi)
            d = np.array([np.cos(angle), np.sin(angle)])
            along = (xx - cx) * d[0] + (yy - cy) * d[1]
            across = -(xx - cx) * d[1] + (yy - cy) * d[0]
            blob = (np.abs(along) <= 1.5 * scale) & (np.abs(across) <= rng.uniform(1.0, 2.5))
        window = img[y0:y1, x0:x1]
        window[blob] = colour + rng.normal(0, 10, (int(blob.sum()), 3))
    return img


def _polygon(rng: np.random.Generator, shape: str, radius: float) -> np.ndarray:
    """The class outline, scaled, slightly stretched and rotated, relative to its centre."""
    angle = np.deg2rad(rng.uniform(-25, 25))
    x = SHAPES[shape][:, 0] * rng.uniform(0.88, 1.12) * radius
    y = SHAPES[shape][:, 1] * radius
    c, s = np.cos(angle), np.sin(angle)  # element-wise rotation: no BLAS rounding differences
    return np.stack([x * c - y * s, x * s + y * c], 1)


def _rasterize(poly: np.ndarray, size: int) -> np.ndarray:
    rle = mask_utils.frPyObjects([poly.ravel().tolist()], size, size)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def _paint(img: np.ndarray, mask: np.ndarray, cls: ObjectClass, centre: np.ndarray, radius: float,
           rng: np.random.Generator) -> None:
    """Fill `mask` with the class's colour and texture (texture scales with the object)."""
    ys, xs = np.nonzero(mask)
    dx, dy = xs - centre[0], ys - centre[1]
    angle = rng.uniform(0, np.pi)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    period = max(4.0, 0.55 * radius)
    if cls.texture == "striped":
        dark = np.floor(u / (period / 2)) % 2 == 0
    elif cls.texture == "dotted":
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        dark = du**2 + dv**2 <= (0.3 * period) ** 2
    elif cls.texture == "checkered":
        dark = (np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2 == 0
    else:
        dark = np.zeros(len(xs), bool)
    colour = np.asarray(COLOURS[cls.colour], float) * rng.uniform(0.85, 1.08) + rng.uniform(-12, 12, 3)
    shade = 1.0 + 0.12 * (dy / max(radius, 1.0))[:, None]  # light from above
    pixels = np.where(dark[:, None], 0.35 * colour, colour) * shade
    img[ys, xs] = pixels


def draw_image(rng: np.random.Generator, class_ids: np.ndarray, classes: list[ObjectClass],
               p: DrawParams) -> tuple[np.ndarray, list[dict]]:
    """Draw one image holding instances of `class_ids` (indices into `classes`).

    Returns the uint8 image and, per visible instance, a dict with class index,
    segmentation (exact polygon if fully visible, else compressed RLE of the visible
    part), bbox [x, y, w, h] and area. Later objects are drawn over earlier ones; an
    object less than `min_visible` visible is left out of both image and labels.
    """
    size = p.size
    img = _background(rng, p)
    per_class = 1 + rng.poisson(p.extra_instance_rate, len(class_ids))
    objects = np.repeat(class_ids, per_class)
    # At most max_objects, keeping one instance of every class first.
    first = np.r_[0, np.cumsum(per_class)[:-1]]
    order = np.r_[first, np.setdiff1d(np.arange(len(objects)), first)][: p.max_objects]
    objects = rng.permutation(objects[order])

    occupied = np.zeros((size, size), np.int32)
    placed = []  # (class, polygon, centre, radius, mask)
    for cls in objects:
        radius = float(np.exp(rng.uniform(*np.log(p.radius))))
        outline = _polygon(rng, classes[cls].shape, radius)
        lo, hi = outline.min(0), outline.max(0)
        span_lo, span_hi = 0.5 - lo, size - 0.5 - hi
        if np.any(span_hi <= span_lo):  # too large for the image: shrink to fit
            outline *= 0.9 * (size - 1) / (hi - lo).max()
            radius *= 0.9 * (size - 1) / (hi - lo).max()
            lo, hi = outline.min(0), outline.max(0)
            span_lo, span_hi = 0.5 - lo, size - 0.5 - hi
        # Best of a few candidate centres: the one overlapping placed objects least.
        candidates = rng.uniform(span_lo, span_hi, (4, 2))
        overlaps = [occupied[int(cy + lo[1]):int(cy + hi[1]) + 1, int(cx + lo[0]):int(cx + hi[0]) + 1].sum()
                    for cx, cy in candidates]
        centre = candidates[int(np.argmin(overlaps))]
        poly = np.round(outline + centre, 2)
        mask = _rasterize(poly, size)
        if not mask.any():
            continue
        occupied += mask
        placed.append((cls, poly, centre, radius, mask))

    # Visibility, back to front: what later objects cover is hidden.
    covered = np.zeros((size, size), bool)
    visible = [None] * len(placed)
    for i in range(len(placed) - 1, -1, -1):
        mask = placed[i][4]
        vis = mask & ~covered
        if vis.sum() >= max(p.min_visible * mask.sum(), 6):
            visible[i] = vis
            covered |= mask

    instances = []
    for (cls, poly, centre, radius, mask), vis in zip(placed, visible):
        if vis is None:
            continue
        _paint(img, mask, classes[cls], centre, radius, rng)
        rle = mask_utils.encode(np.asfortranarray(vis.astype(np.uint8)))
        if np.array_equal(vis, mask):
            segmentation = [poly.ravel().tolist()]
        else:
            segmentation = {"size": [size, size], "counts": rle["counts"].decode("ascii")}
        instances.append({
            "class_index": int(cls),
            "segmentation": segmentation,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": int(vis.sum()),
        })
    img += rng.normal(0, p.noise_sigma, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), instances
