"""Rendering (pure functions of a product spec, a size and an rng)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vsearch.data.synth.config import SynthConfig
from vsearch.data.synth.world import _OCCLUDER_TONES, _OUTLINE, BRANDS, CATEGORIES, Category


def _box(coords, size: int, offset: float = 0.0) -> list[float]:
    return [offset + c * size for c in coords]


def _draw_op(draw: ImageDraw.ImageDraw, op: tuple, size: int) -> None:
    kind, fill = op[0], 255 * op[1]
    if kind == "poly":
        draw.polygon([(x * size, y * size) for x, y in op[2]], fill=fill)
    elif kind == "ellipse":
        draw.ellipse(_box(op[2], size), fill=fill)
    elif kind == "rect":
        draw.rectangle(_box(op[2], size), fill=fill)
    elif kind == "rrect":
        draw.rounded_rectangle(_box(op[2], size), radius=op[3] * size, fill=fill)
    elif kind == "pie":
        draw.pieslice(_box(op[2], size), op[3], op[4], fill=fill)
    elif kind == "arc":
        draw.arc(_box(op[2], size), op[3], op[4], fill=fill, width=max(1, round(op[5] * size)))
    else:  # pragma: no cover - the table above is the only input
        raise ValueError(f"unknown shape op {kind!r}")


def _silhouette(category: Category, size: int) -> np.ndarray:
    """Binary mask (size, size) uint8 {0, 255} of the category drawn in the unit square."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for op in category.shapes:
        _draw_op(draw, op, size)
    return np.asarray(img)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _cell_hash(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random floats in [0, 1) per integer lattice cell."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float32) / 65536.0


def _pattern_ink(pattern: str, u: np.ndarray, v: np.ndarray, freq: float, phase: float, salt: int) -> np.ndarray:
    """Ink coverage in {0, 1} (float32) of ``pattern`` at pattern coordinates (u, v).

    One unit of (u, v) is one product width; ``freq`` is cycles per unit.
    """
    if pattern == "solid":
        return np.ones_like(u, dtype=np.float32)
    x, y = u * freq + phase, v * freq + phase * 0.7
    if pattern == "stripes":
        ink = _frac(y) < 0.5
    elif pattern == "diagonal":
        ink = _frac((x + y) / math.sqrt(2)) < 0.45
    elif pattern == "checker":
        ink = (np.floor(x) + np.floor(y)) % 2 == 0
    elif pattern == "polka_dots":
        row = np.floor(y)
        xs = x + 0.5 * (row % 2)
        ink = (_frac(xs) - 0.5) ** 2 + (_frac(y) - 0.5) ** 2 < 0.27**2
    elif pattern == "zebra":
        t = y + 0.35 * np.sin(2 * np.pi * (0.55 * x + phase)) + 0.12 * np.sin(2 * np.pi * (1.3 * x + 0.4 * y))
        width = 0.42 + 0.12 * np.sin(2 * np.pi * (0.8 * x + 0.3 * y + phase))
        ink = _frac(t) < width
    elif pattern == "zigzag":
        tri = 2 * np.abs(_frac(x * 0.9) - 0.5)
        ink = _frac(y + 0.7 * tri) < 0.45
    elif pattern == "crosses":
        row = np.floor(y)
        a, b = _frac(x + 0.5 * (row % 2)) - 0.5, _frac(y) - 0.5
        ink = ((np.abs(a) < 0.09) & (np.abs(b) < 0.32)) | ((np.abs(b) < 0.09) & (np.abs(a) < 0.32))
    elif pattern == "grid":
        ink = (_frac(x) < 0.16) | (_frac(y) < 0.16)
    elif pattern == "leopard":
        ci, cj = np.floor(x), np.floor(y)
        ink = np.zeros(u.shape, dtype=bool)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                i, j = ci + di, cj + dj
                cx = i + 0.2 + 0.6 * _cell_hash(i, j, salt)
                cy = j + 0.2 + 0.6 * _cell_hash(i, j, salt + 1)
                r = 0.22 + 0.14 * _cell_hash(i, j, salt + 2)
                d = np.sqrt((x - cx) ** 2 + 1.4 * (y - cy) ** 2)
                ink |= (d < r) & (d > 0.45 * r)  # rosette: a ring with a hollow centre
    else:  # pragma: no cover - the table above is the only input
        raise ValueError(f"unknown pattern {pattern!r}")
    return ink.astype(np.float32)


def _fill(pattern: str, u: np.ndarray, v: np.ndarray, spec: dict) -> np.ndarray:
    """(H, W, 3) float32 colours of a product's pattern at pattern coordinates (u, v)."""
    ink = _pattern_ink(pattern, u, v, spec["freq"], spec["phase"], spec["salt"])[..., None]
    return ink * np.asarray(spec["rgb"], np.float32) + (1 - ink) * np.asarray(spec["base"], np.float32)


def _draw_glyph(draw: ImageDraw.ImageDraw, glyph: str, cx: float, cy: float, r: float, fill) -> None:
    if glyph == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif glyph == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(1, round(r * 0.45)))
    elif glyph == "square":
        draw.rectangle([cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=fill)
    elif glyph == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill)
    elif glyph == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif glyph == "cross":
        w = 0.35 * r
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    elif glyph == "bar":
        draw.rectangle([cx - r, cy - 0.35 * r, cx + r, cy + 0.35 * r], fill=fill)
    elif glyph == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        draw.polygon(pts, fill=fill)
    else:  # pragma: no cover
        raise ValueError(f"unknown glyph {glyph!r}")


def _render_sprite(spec: dict, size: int) -> Image.Image:
    """The product alone as an RGBA image (size, size): the unit square mapped to the image.

    Deterministic in (spec, size): a product looks the same in the catalog and in the street.
    """
    category = CATEGORIES[spec["category"]]
    mask = _silhouette(category, size)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(coords, coords)
    rgb = _fill(spec["pattern"], u, v, spec)
    rgb *= (1.06 - 0.12 * u)[..., None]  # soft side light so the object reads as 3D
    # Outline: the silhouette minus its erosion, so the shape reads on any background.
    k = max(3, 2 * round(size / 96) + 1)
    inner = np.asarray(Image.fromarray(mask).filter(ImageFilter.MinFilter(k)))
    edge = (mask > 0) & (inner == 0)
    rgb[edge] = _OUTLINE
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for op in category.details:
        if op[0] == "line":
            draw.line([(x * size, y * size) for x, y in op[1]], fill=_OUTLINE, width=max(1, round(op[2] * size)))
        elif op[0] == "rrect_line":
            draw.rounded_rectangle(_box(op[1], size), radius=op[2] * size, outline=_OUTLINE,
                                   width=max(1, round(op[3] * size)))
    brand = BRANDS[spec["brand"]]
    ax, ay = category.logo_anchors[brand.anchor % len(category.logo_anchors)]
    r = 0.075 * size
    draw.ellipse([ax * size - r, ay * size - r, ax * size + r, ay * size + r], fill=brand.badge, outline=_OUTLINE,
                 width=max(1, round(size / 128)))
    glyph_fill = (255, 255, 255) if sum(brand.badge) < 200 else (20, 20, 20)
    _draw_glyph(draw, brand.glyph, ax * size, ay * size, 0.6 * r, glyph_fill)
    img.putalpha(Image.fromarray(mask))
    return img


def render_catalog_image(spec: dict, cfg: SynthConfig) -> Image.Image:
    """The clean catalog render: the product centred at a fixed scale on white, RGB (image_size, image_size)."""
    canvas = cfg.image_size * cfg.supersample
    obj = round(canvas * cfg.catalog_object_scale)
    bg = Image.new("RGB", (canvas, canvas), (255, 255, 255))
    sprite = _render_sprite(spec, obj)
    off = (canvas - obj) // 2
    bg.paste(sprite, (off, off), sprite)
    return bg.resize((cfg.image_size, cfg.image_size), Image.Resampling.BOX)


def _pick_distractor(world: dict, spec: dict, rng: np.random.Generator, cfg: SynthConfig) -> int | None:
    """Index of another-category product; often sharing the query's pattern or colour (the trap)."""
    cats, pats, cols = world["categories"], world["patterns"], world["colours"]
    other = cats != spec["category"]
    roll, p_pattern, p_colour = rng.random(), cfg.distractor_same_pattern_prob, cfg.distractor_same_colour_prob
    if roll < p_pattern and spec["pattern"] != "solid":
        pool = np.flatnonzero(other & (pats == spec["pattern_index"]))
    elif roll < p_pattern + (1 - p_pattern) * p_colour:  # a solid product's "same pattern" lands here too
        pool = np.flatnonzero(other & (cols == spec["colour_index"]))
    else:
        pool = np.flatnonzero(other)
    if len(pool) == 0:
        pool = np.flatnonzero(other)
    if len(pool) == 0:
        return None
    return int(pool[rng.integers(len(pool))])


def _region_mask(rng: np.random.Generator, canvas: int, cfg: SynthConfig) -> tuple[np.ndarray, tuple[int, ...]]:
    """A random background region (rectangle, ellipse, quad or full-width band).

    Returns:
        (mask, box): float32 mask (h, w, 1) in [0, 1] cropped to ``box`` = (x0, y0, x1, y1).
    """
    img = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(img)
    lo, hi = cfg.distractor_region_size
    w, h = rng.uniform(lo, hi, size=2) * canvas
    cx, cy = rng.uniform(0, canvas, size=2)
    kind = rng.integers(4)
    if kind == 0:
        draw.rectangle([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=255)
    elif kind == 1:
        draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=255)
    elif kind == 2:
        ang = rng.uniform(0, 2 * np.pi)
        pts = []
        for k in range(4):
            a = ang + k * np.pi / 2 + rng.uniform(-0.3, 0.3)
            pts.append((cx + w / 2 * np.cos(a) * 1.3, cy + h / 2 * np.sin(a) * 1.3))
        draw.polygon(pts, fill=255)
    else:  # a band across the frame: a table top, a wall, a scarf
        if rng.random() < 0.5:
            draw.rectangle([0, cy - h / 3, canvas, cy + h / 3], fill=255)
        else:
            draw.rectangle([cx - w / 3, 0, cx + w / 3, canvas], fill=255)
    box = img.getbbox() or (0, 0, 1, 1)
    return np.asarray(img.crop(box), dtype=np.float32)[..., None] / 255.0, box


def _scene_fill(spec: dict, rng: np.random.Generator, box: tuple[int, int, int, int], unit_px: float) -> np.ndarray:
    """A product's pattern painted over ``box`` of the scene, at a scale close to the main product's.

    Returns:
        float32 (y1 - y0, x1 - x0, 3) colours; the pattern is anchored to the scene, not the box.
    """
    scale = unit_px * rng.uniform(0.8, 1.25)
    ang = rng.uniform(0, np.pi)
    x0, y0, x1, y1 = box
    xx, yy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    u = (np.cos(ang) * xx + np.sin(ang) * yy) / scale
    v = (-np.sin(ang) * xx + np.cos(ang) * yy) / scale
    return _fill(spec["pattern"], u, v, spec) * np.float32(rng.uniform(0.8, 1.05))


def render_query_image(world: dict, spec: dict, rng: np.random.Generator, cfg: SynthConfig) -> Image.Image:
    """A street photo of the product: RGB (image_size, image_size), cluttered, moved, occluded, re-lit.

    Long because: the scene's steps share one seeded stream in a fixed order that pins the images.
    """
    canvas = cfg.image_size * cfg.supersample
    # Background: a muted, never-white tone with a linear gradient.
    base = rng.uniform(0.25, 0.75, size=3) * 255
    coords = np.linspace(-0.5, 0.5, canvas, dtype=np.float32)
    gx, gy = np.meshgrid(coords, coords)
    grad = 1 + rng.uniform(-0.25, 0.25) * gx + rng.uniform(-0.25, 0.25) * gy
    scene = (base[None, None, :] * grad[..., None]).astype(np.float32)

    obj = round(canvas * cfg.catalog_object_scale * rng.uniform(*cfg.query_scale_range))
    # Distractor regions: other products' patterns and colours in the background.
    for _ in range(int(rng.integers(cfg.distractor_regions[0], cfg.distractor_regions[1] + 1))):
        d = _pick_distractor(world, spec, rng, cfg)
        if d is None:
            break
        mask, (x0, y0, x1, y1) = _region_mask(rng, canvas, cfg)
        fill = _scene_fill(world["specs"][d], rng, (x0, y0, x1, y1), obj)
        scene[y0:y1, x0:x1] = scene[y0:y1, x0:x1] * (1 - mask) + fill * mask
    img = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8), "RGB")

    # Whole distractor products, smaller, behind the main one.
    for _ in range(int(rng.integers(cfg.distractor_objects[0], cfg.distractor_objects[1] + 1))):
        d = _pick_distractor(world, spec, rng, cfg)
        if d is None:
            break
        size = round(obj * rng.uniform(0.45, 0.7))
        sprite = _render_sprite(world["specs"][d], size)
        sprite = sprite.rotate(rng.uniform(-30, 30), Image.Resampling.BICUBIC, expand=True)
        x, y = rng.integers(-size // 3, canvas - 2 * size // 3, size=2)
        img.paste(sprite, (int(x), int(y)), sprite)

    # The product: random scale, rotation and position, mostly inside the frame.
    angle = rng.uniform(-cfg.query_rotation_max_deg, cfg.query_rotation_max_deg)
    sprite = _render_sprite(spec, obj).rotate(angle, Image.Resampling.BICUBIC, expand=True)
    sw, sh = sprite.size
    crop_x, crop_y = cfg.query_crop_max * sw, cfg.query_crop_max * sh
    x0 = rng.uniform(min(-crop_x, (canvas - sw) / 2), max(canvas - sw + crop_x, (canvas - sw) / 2))
    y0 = rng.uniform(min(-crop_y, (canvas - sh) / 2), max(canvas - sh + crop_y, (canvas - sh) / 2))
    img.paste(sprite, (round(x0), round(y0)), sprite)

    # Occluder: a hand, a strap, another thing, entering the product's box from one side.
    if rng.random() < cfg.occlusion_prob:
        frac = rng.uniform(0.1, max(0.1, cfg.occlusion_max))
        bx0, by0, bx1, by1 = x0 + 0.15 * sw, y0 + 0.15 * sh, x0 + 0.85 * sw, y0 + 0.85 * sh
        bw, bh = bx1 - bx0, by1 - by0
        side = rng.integers(4)
        t0, t1 = sorted(rng.uniform(0, 1, size=2))
        t0, t1 = min(t0, 0.5), max(t1, t0 + 0.4)
        if side == 0:
            box = [bx0 - canvas, by0 + t0 * bh, bx0 + frac * bw, by0 + t1 * bh]
        elif side == 1:
            box = [bx1 - frac * bw, by0 + t0 * bh, bx1 + canvas, by0 + t1 * bh]
        elif side == 2:
            box = [bx0 + t0 * bw, by0 - canvas, bx0 + t1 * bw, by0 + frac * bh]
        else:
            box = [bx0 + t0 * bw, by1 - frac * bh, bx0 + t1 * bw, by1 + canvas]
        occ = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(occ).rounded_rectangle(box, radius=0.3 * min(box[2] - box[0], box[3] - box[1]), fill=255)
        obox = occ.getbbox()
        if obox is not None:
            size = (obox[3] - obox[1], obox[2] - obox[0], 3)
            if rng.random() < 0.5:
                tone = np.asarray(_OCCLUDER_TONES[rng.integers(len(_OCCLUDER_TONES))], np.float32)
                fill = np.broadcast_to(tone * rng.uniform(0.85, 1.1), size)
            else:
                d = _pick_distractor(world, spec, rng, cfg)
                fill = _scene_fill(world["specs"][d], rng, obox, obj) if d is not None else np.full(size, 128.0)
            fill_img = Image.fromarray(np.clip(fill, 0, 255).astype(np.uint8), "RGB")
            img.paste(fill_img, obox[:2], occ.crop(obox))

    img = img.resize((cfg.image_size, cfg.image_size), Image.Resampling.BOX)
    blur = rng.uniform(0, cfg.blur_radius_max)
    if blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    # Lighting: contrast around the mean, brightness, colour cast, then sensor noise.
    arr = np.asarray(img, dtype=np.float32)
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(1 - cfg.contrast_jitter, 1 + cfg.contrast_jitter) + mean
    arr *= rng.uniform(1 - cfg.brightness_jitter, 1 + cfg.brightness_jitter)
    arr *= rng.uniform(1 - cfg.colour_cast, 1 + cfg.colour_cast, size=3)[None, None, :]
    arr += rng.normal(0, rng.uniform(0, cfg.noise_std_max), size=arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
