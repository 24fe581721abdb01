"""What a user brings to ``vsearch data import``: an image folder and CSV tables (unit and
integration tests of the importer build their sources here)."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 160, 30)}


def _picture(size: tuple[int, int], rgb: tuple, design: int, view: int) -> Image.Image:
    """A distinct image per (colour, design, view): a colour field with a design mark."""
    image = Image.new("RGB", size, rgb)
    x, y = 2 + 3 * design, 2 + 5 * view
    ImageDraw.Draw(image).rectangle((x, y, x + 8 + design, y + 6), fill=(250 - 20 * design, 240, 20 * view))
    return image


def write_csv(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a CSV with a header (the first row's keys)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_catalog_source(root: Path, n_designs: int = 6, queries_per_product: int = 2) -> dict:
    """An image folder and CSV tables as a user would have them: 3 colours per design
    (products ``p<design>-<colour>``, variant group column ``parent`` = ``d<design>``), street
    photos ``street/<product>-<q>.jpg`` clicked on their product.

    Returns:
        ``{"images", "catalog", "engagement"}``: paths.
    """
    images = root / "photos"
    (images / "catalog").mkdir(parents=True)
    (images / "street").mkdir()
    catalog, clicks = [], []
    for d in range(n_designs):
        for colour, rgb in COLOURS.items():
            pid = f"p{d}-{colour}"
            _picture((40, 40), rgb, d, 0).save(images / "catalog" / f"{pid}.png")
            catalog.append({"product_id": pid, "image_path": f"catalog/{pid}.png", "title": f"{colour} mug {d}",
                            "category": ["mug", "shirt"][d % 2], "colour": colour, "parent": f"d{d}"})
            for q in range(queries_per_product):
                _picture((48, 48), tuple(c // (q + 2) for c in rgb), d, q + 1).save(images / "street" / f"{pid}-{q}.jpg")
                clicks.append({"query_image_path": f"street/{pid}-{q}.jpg", "product_id": pid,
                               "timestamp": f"2026-0{1 + q}-1{d % 9}T10:00:00Z", "query_text": ""})
    return {"images": images, "catalog": write_csv(root / "catalog.csv", catalog),
            "engagement": write_csv(root / "clicks.csv", clicks)}


def write_reformulations(root: Path, designs: range, colour: str = "red", other: str = "blue") -> Path:
    """A reformulations CSV (the multimodal eval set): for each design, the street photo of its
    ``colour`` product (also clicked in the engagement log) with "in <other>" -> its ``other`` product."""
    rows = [{"query_image_path": f"street/p{d}-{colour}-0.jpg", "reformulation_text": f"in {other}",
             "product_id": f"p{d}-{other}"} for d in designs]
    return write_csv(root / "reformulations.csv", rows)
