"""The world: categories, patterns, colours, brands."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """A silhouette: drawing ops in unit coordinates (0..1, y down), outline details, logo spots."""

    name: str
    synonyms: tuple[str, ...]
    shapes: tuple[tuple, ...]
    details: tuple[tuple, ...]
    logo_anchors: tuple[tuple[float, float], ...]


def _profile(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A vertically symmetric outline from (y, half_width) pairs, centred at x = 0.5."""
    right = [(0.5 + w, y) for y, w in points]
    left = [(0.5 - w, y) for y, w in reversed(points)]
    return right + left


# Ops: ("poly", fill, pts) ("ellipse", fill, box) ("rect", fill, box) ("rrect", fill, box, r)
# ("pie", fill, box, start, end) ("arc", fill, box, start, end, width); fill 1 adds, 0 cuts.
CATEGORIES: tuple[Category, ...] = (
    Category(
        "mug", ("mug", "coffee mug", "cup"),
        shapes=(("ellipse", 1, (0.52, 0.34, 0.88, 0.72)), ("ellipse", 0, (0.6, 0.43, 0.8, 0.63)),
                ("rrect", 1, (0.16, 0.24, 0.66, 0.86), 0.06)),
        details=(("line", ((0.16, 0.3), (0.66, 0.3)), 0.02),),
        logo_anchors=((0.29, 0.45), (0.41, 0.72), (0.53, 0.45)),
    ),
    Category(
        "t-shirt", ("t-shirt", "tee", "tshirt"),
        shapes=(("poly", 1, ((0.3, 0.14), (0.42, 0.14), (0.5, 0.22), (0.58, 0.14), (0.7, 0.14), (0.93, 0.34),
                             (0.8, 0.48), (0.72, 0.4), (0.72, 0.88), (0.28, 0.88), (0.28, 0.4), (0.2, 0.48),
                             (0.07, 0.34))),),
        details=(("line", ((0.42, 0.14), (0.5, 0.22), (0.58, 0.14)), 0.03),),
        logo_anchors=((0.38, 0.45), (0.5, 0.72), (0.62, 0.45)),
    ),
    Category(
        "bag", ("handbag", "bag", "tote"),
        shapes=(("ellipse", 1, (0.28, 0.14, 0.72, 0.66)), ("ellipse", 0, (0.35, 0.22, 0.65, 0.62)),
                ("poly", 1, ((0.2, 0.44), (0.8, 0.44), (0.9, 0.88), (0.1, 0.88)))),
        details=(("line", ((0.2, 0.52), (0.8, 0.52)), 0.02),),
        logo_anchors=((0.28, 0.66), (0.5, 0.76), (0.72, 0.66)),
    ),
    Category(
        "shoe", ("shoe", "sneaker", "trainer"),
        shapes=(("poly", 1, ((0.08, 0.56), (0.12, 0.42), (0.36, 0.4), (0.44, 0.26), (0.62, 0.24), (0.66, 0.44),
                             (0.86, 0.54), (0.94, 0.66), (0.93, 0.76), (0.08, 0.76))),),
        details=(("line", ((0.08, 0.69), (0.94, 0.69)), 0.03), ("line", ((0.44, 0.3), (0.56, 0.48)), 0.02)),
        logo_anchors=((0.24, 0.56), (0.55, 0.38), (0.78, 0.61)),
    ),
    Category(
        "hat", ("hat", "sun hat", "fedora"),
        shapes=(("ellipse", 1, (0.05, 0.58, 0.95, 0.8)),
                ("poly", 1, ((0.28, 0.68), (0.32, 0.34), (0.68, 0.34), (0.72, 0.68))),
                ("ellipse", 1, (0.32, 0.22, 0.68, 0.44))),
        details=(("line", ((0.29, 0.58), (0.71, 0.58)), 0.03),),
        logo_anchors=((0.42, 0.44), (0.58, 0.44), (0.17, 0.69)),
    ),
    Category(
        "bottle", ("bottle", "water bottle", "flask"),
        shapes=(("rect", 1, (0.41, 0.05, 0.59, 0.14)), ("rect", 1, (0.43, 0.12, 0.57, 0.3)),
                ("poly", 1, ((0.43, 0.28), (0.57, 0.28), (0.7, 0.42), (0.3, 0.42))),
                ("rrect", 1, (0.3, 0.4, 0.7, 0.93), 0.05)),
        details=(("line", ((0.41, 0.14), (0.59, 0.14)), 0.02),),
        logo_anchors=((0.41, 0.55), (0.5, 0.78), (0.59, 0.55)),
    ),
    Category(
        "lamp", ("lamp", "table lamp", "desk lamp"),
        shapes=(("poly", 1, ((0.36, 0.1), (0.64, 0.1), (0.82, 0.46), (0.18, 0.46))),
                ("rect", 1, (0.46, 0.44, 0.54, 0.82)),
                ("ellipse", 1, (0.26, 0.78, 0.74, 0.92))),
        details=(("line", ((0.2, 0.42), (0.8, 0.42)), 0.02),),
        logo_anchors=((0.5, 0.22), (0.33, 0.36), (0.67, 0.36)),
    ),
    Category(
        "chair", ("chair", "seat", "dining chair"),
        shapes=(("rrect", 1, (0.26, 0.08, 0.74, 0.52), 0.05), ("rect", 1, (0.2, 0.5, 0.8, 0.62)),
                ("rect", 1, (0.22, 0.6, 0.3, 0.94)), ("rect", 1, (0.7, 0.6, 0.78, 0.94)),
                ("rect", 1, (0.36, 0.6, 0.42, 0.86)), ("rect", 1, (0.58, 0.6, 0.64, 0.86))),
        details=(("line", ((0.2, 0.5), (0.8, 0.5)), 0.025),),
        logo_anchors=((0.37, 0.22), (0.63, 0.22), (0.5, 0.39)),
    ),
    Category(
        "umbrella", ("umbrella", "parasol", "brolly"),
        shapes=(("pie", 1, (0.06, 0.1, 0.94, 0.98), 180, 360),
                ("ellipse", 0, (0.06, 0.49, 0.28, 0.6)), ("ellipse", 0, (0.28, 0.49, 0.5, 0.6)),
                ("ellipse", 0, (0.5, 0.49, 0.72, 0.6)), ("ellipse", 0, (0.72, 0.49, 0.94, 0.6)),
                ("rect", 1, (0.48, 0.5, 0.52, 0.84)), ("arc", 1, (0.36, 0.76, 0.52, 0.92), 0, 180, 0.04)),
        details=(("line", ((0.5, 0.1), (0.5, 0.52)), 0.02), ("line", ((0.5, 0.1), (0.28, 0.52)), 0.015),
                 ("line", ((0.5, 0.1), (0.72, 0.52)), 0.015)),
        logo_anchors=((0.26, 0.4), (0.62, 0.26), (0.8, 0.42)),
    ),
    Category(
        "dress", ("dress", "sundress", "frock"),
        shapes=(("poly", 1, ((0.38, 0.08), (0.44, 0.08), (0.46, 0.2), (0.54, 0.2), (0.56, 0.08), (0.62, 0.08),
                             (0.64, 0.36), (0.58, 0.44), (0.86, 0.92), (0.14, 0.92), (0.42, 0.44), (0.36, 0.36))),),
        details=(("line", ((0.42, 0.44), (0.58, 0.44)), 0.025),),
        logo_anchors=((0.5, 0.31), (0.36, 0.8), (0.64, 0.8)),
    ),
    Category(
        "vase", ("vase", "flower vase", "urn"),
        shapes=(("poly", 1, tuple(_profile([(0.06, 0.15), (0.12, 0.12), (0.26, 0.08), (0.36, 0.14), (0.48, 0.24),
                                            (0.62, 0.27), (0.76, 0.22), (0.88, 0.14), (0.94, 0.13)]))),),
        details=(("line", ((0.35, 0.12), (0.65, 0.12)), 0.02),),
        logo_anchors=((0.38, 0.58), (0.62, 0.58), (0.5, 0.8)),
    ),
    Category(
        "backpack", ("backpack", "rucksack", "daypack"),
        shapes=(("arc", 1, (0.38, 0.05, 0.62, 0.3), 180, 360, 0.05), ("rrect", 1, (0.2, 0.16, 0.8, 0.92), 0.14)),
        details=(("rrect_line", (0.3, 0.58, 0.7, 0.86), 0.05, 0.02), ("line", ((0.3, 0.66), (0.7, 0.66)), 0.015)),
        logo_anchors=((0.34, 0.32), (0.66, 0.32), (0.5, 0.76)),
    ),
)


@dataclass(frozen=True)
class Pattern:
    """A fill pattern: ``frequency`` is cycles per product width; words name it in text."""

    name: str
    words: tuple[str, ...]
    frequency: float


PATTERNS: tuple[Pattern, ...] = (
    Pattern("solid", ("plain", "solid", "solid colour"), 1.0),
    Pattern("stripes", ("striped", "stripe", "breton stripe"), 5.0),
    Pattern("polka_dots", ("polka dot", "dotted", "spotty"), 4.5),
    Pattern("checker", ("checked", "checkerboard", "check"), 4.0),
    Pattern("zebra", ("zebra", "zebra print", "wavy stripe"), 4.0),
    Pattern("diagonal", ("diagonal stripe", "slanted stripe", "bias stripe"), 5.0),
    Pattern("zigzag", ("zigzag", "chevron", "zig-zag"), 4.5),
    Pattern("crosses", ("cross print", "plus print", "swiss cross"), 4.0),
    Pattern("grid", ("grid", "windowpane", "graph check"), 4.0),
    Pattern("leopard", ("leopard", "leopard print", "animal print"), 4.5),
)


@dataclass(frozen=True)
class Colour:
    """A named colour: RGB (0-255) and synonyms used in titles, queries and reformulations."""

    name: str
    rgb: tuple[int, int, int]
    synonyms: tuple[str, ...]


COLOURS: tuple[Colour, ...] = (
    Colour("red", (205, 30, 35), ("crimson", "scarlet")),
    Colour("blue", (35, 70, 195), ("navy", "cobalt")),
    Colour("green", (35, 150, 60), ("emerald", "forest green")),
    Colour("yellow", (242, 206, 30), ("mustard", "lemon")),
    Colour("orange", (242, 122, 20), ("tangerine", "amber")),
    Colour("purple", (120, 45, 160), ("violet", "plum")),
    Colour("pink", (240, 120, 172), ("rose", "fuchsia")),
    Colour("brown", (120, 70, 35), ("chocolate", "chestnut")),
    Colour("black", (25, 25, 28), ("jet black", "ebony")),
    Colour("teal", (20, 140, 140), ("turquoise", "aqua")),
    Colour("grey", (130, 130, 130), ("gray", "charcoal")),
)

# Pattern ink is the product colour over a base tone that contrasts with it.
_LIGHT_BASE = (238, 232, 218)
_DARK_BASE = (46, 46, 56)
_OUTLINE = (45, 45, 50)
# Flat occluders: skin tones (a hand), grey (a strap), off-white (paper).
_OCCLUDER_TONES = ((224, 172, 140), (141, 85, 56), (90, 90, 95), (200, 200, 195))


@dataclass(frozen=True)
class Brand:
    """An invented brand: its name, logo glyph, badge colour and which logo spot it uses."""

    name: str
    glyph: str
    badge: tuple[int, int, int]
    anchor: int


BRANDS: tuple[Brand, ...] = (
    Brand("Velora", "triangle", (255, 255, 255), 0),
    Brand("Quintex", "circle", (20, 20, 20), 1),
    Brand("Marlowe", "square", (225, 180, 40), 2),
    Brand("Zentri", "star", (255, 255, 255), 1),
    Brand("Okumi", "cross", (20, 20, 20), 2),
    Brand("Brisko", "diamond", (225, 180, 40), 0),
    Brand("Tavana", "ring", (255, 255, 255), 2),
    Brand("Lumeo", "bar", (20, 20, 20), 0),
)

_NOISE_WORDS = ("new", "premium", "classic", "2026", "free shipping", "sale", "best seller", "limited edition",
                "original", "gift idea", "hot", "official")
_REFORMULATIONS = ("in {c}", "same in {c}", "{c} one", "the {c} one", "this in {c}", "same but {c}",
                   "{c} version", "do you have it in {c}")


def _colour_base(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255
    return _DARK_BASE if luminance > 0.6 else _LIGHT_BASE
