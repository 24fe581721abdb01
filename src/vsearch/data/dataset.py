"""Datasets that yield dict batches keyed by tower, a unique-product batch sampler, a collator.

Images are decoded with PIL (no torchvision on CPU: shared NOTES) into uint8 tensors; the
collator normalises them and tokenizes the texts, so one dataset serves every tower set.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from vsearch import schema
from vsearch.schema import DataError


def decode_image(data_dir: str | os.PathLike, uri: str, size: int, *, manifest: str = "", row: int | None = None) -> torch.Tensor:
    """Read and decode one image to a (3, size, size) uint8 tensor (RGB, bilinear resize).

    Goes through the input boundary: ``schema.resolve_uri`` + ``schema.read_uri_bytes``
    (allowed location, regular file, size cap) and ``image_to_rgb`` (pixel cap, modes).

    Raises:
        DataError: refused, missing, empty, too large or undecodable file; the message names
            file, row and rule.
    """
    from PIL import Image

    path = schema.resolve_uri(data_dir, uri, manifest=manifest, row=row)
    where = f"{manifest or data_dir}, row {row}: {path}" if row is not None else path
    rgb = image_to_rgb(schema.read_uri_bytes(path, where), where)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def image_to_rgb(raw: bytes, where: str, *, max_pixels: int = schema.MAX_IMAGE_PIXELS):
    """Decode image bytes to an 8-bit RGB PIL image, refusing what would lose content.

    The pixel count is read from the header and checked against ``max_pixels`` before any
    pixel is decoded; then a full decode (truncated files fail) and ``to_rgb``.

    Raises:
        DataError with kind "empty", "too_large" or "undecodable".
    """
    from PIL import Image, UnidentifiedImageError

    if not raw:
        raise DataError(where, "image file is empty (0 bytes)", kind="empty")
    try:
        with warnings.catch_warnings():  # PIL warns from 89 Mpx; our own cap below is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as err:
        raise DataError(where, "image has too many pixels", detail=str(err)[:160], kind="too_large") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(where, "image cannot be decoded", detail=f"{type(err).__name__}: {err}"[:200], kind="undecodable") from err
    # Not closed: a closed PIL image drops its pixels; the bytes are in memory anyway.
    width, height = img.size
    if width * height > max_pixels:
        raise DataError(where, "image has too many pixels", detail=f"{width}x{height} px, limit {max_pixels}", kind="too_large")
    try:
        img.load()
        return to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(where, "image cannot be decoded", detail=f"{type(err).__name__}: {err}"[:200], kind="undecodable") from err


def to_rgb(img):
    """A loaded PIL image -> 8-bit RGB without losing its content.

    16-bit greyscale is scaled to 8 bits (a plain convert clips it to white); transparency
    (RGBA, LA, a palette with a transparent index) is composited onto white (a plain convert
    shows whatever colour hides under alpha 0); CMYK and the rest through PIL's conversion.

    Raises:
        ValueError: a mode that cannot be converted faithfully (float or 32-bit integer pixels).
    """
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        pixels = np.asarray(img).astype(np.int64)
        if mode == "I" and pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ValueError("image mode I with values outside 16 bits is not supported")
        return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise ValueError("image mode F (floating-point pixels) is not supported")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info) or (
        mode in ("L", "RGB") and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


class ImageStore:
    """Decodes images on demand, optionally caching the uint8 tensors (small presets)."""

    def __init__(self, data_dir: str | os.PathLike, size: int, cache: bool = True):
        self.data_dir, self.size, self.cache = str(data_dir), size, cache
        self._cache: dict[str, torch.Tensor] = {}

    def get(self, uri: str, *, manifest: str = "", row: int | None = None) -> torch.Tensor:
        if self.cache and uri in self._cache:
            return self._cache[uri]
        image = decode_image(self.data_dir, uri, self.size, manifest=manifest, row=row)
        if self.cache:
            self._cache[uri] = image
        return image

    def preload(self, uris: Sequence[str], manifest: str = "") -> None:
        """Decode every URI now so bad images fail before training starts."""
        for row, uri in enumerate(uris):
            self.get(uri, manifest=manifest, row=row)


@dataclass
class PairRecord:
    query_image_uri: str
    product_image_uri: str
    title: str
    query_text: str
    product_index: int
    row: int
    engagement: bool = True  # False for mined reformulation rows (vsearch.data.reformulations)


class EngagementDataset(Dataset):
    """(query image, clicked product image, title, query text) per engagement row.

    The title is the interaction's own ``title`` column when present (point in time), else
    the catalog's.

    Items are dicts: ``query_image`` and ``product_image`` (3, S, S) uint8, ``product_text``
    and ``query_text`` str, ``product_index`` int (dense id of the product, for the sampler).
    """

    def __init__(self, data_dir: str | os.PathLike, catalog: pd.DataFrame, interactions: pd.DataFrame, image_size: int, cache: bool = True):
        products = catalog.set_index("product_id")
        # A point-in-time training set (vsearch features build-training-set) carries per click
        # the title the product had then; otherwise the catalog's current title is used.
        pit_title = "title" in interactions.columns
        product_ids = sorted(interactions["product_id"].unique())
        index = {pid: i for i, pid in enumerate(product_ids)}
        self.records = [
            PairRecord(
                query_image_uri=r.query_image_uri,
                product_image_uri=products.at[r.product_id, "image_uri"],
                title=r.title if pit_title else products.at[r.product_id, "title"],
                query_text=r.query_text,
                product_index=index[r.product_id],
                row=int(r.Index),
                engagement=bool(getattr(r, "engagement", True)),
            )
            for r in interactions.itertuples()
        ]
        self.product_index = np.array([r.product_index for r in self.records], dtype=np.int64)
        self._products = products
        self._product_ids = [interactions.at[r.row, "product_id"] for r in self.records]
        self.images = ImageStore(data_dir, image_size, cache)
        self.data_dir = str(data_dir)

    def __len__(self) -> int:
        return len(self.records)

    def groups(self, column: str) -> np.ndarray:
        """(N,) int group id per row from a catalog attribute column (for hard negatives)."""
        if column not in self._products.columns:
            raise DataError(schema.CATALOG_FILE, f"batch grouping column '{column}' is not in the catalog")
        values = self._products.loc[self._product_ids, column].astype(str).to_numpy()
        return np.unique(values, return_inverse=True)[1]

    def preload(self) -> None:
        for r in self.records:
            self.images.get(r.query_image_uri, manifest=schema.INTERACTIONS_FILE, row=r.row)
            self.images.get(r.product_image_uri, manifest=schema.CATALOG_FILE)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        return {
            schema.QUERY_IMAGE: self.images.get(r.query_image_uri, manifest=schema.INTERACTIONS_FILE, row=r.row),
            schema.PRODUCT_IMAGE: self.images.get(r.product_image_uri, manifest=schema.CATALOG_FILE),
            schema.PRODUCT_TEXT: r.title,
            schema.QUERY_TEXT: r.query_text,
            "product_index": r.product_index,
            "engagement": r.engagement,
        }


class UniqueProductBatchSampler(Sampler[list[int]]):
    """Global batches in which no product appears twice (so in-batch negatives are true ones).

    The order depends only on (seed, epoch); each rank takes its contiguous slice of every
    global batch, so the global batch is the same whatever the world size. ``start_batch``
    skips batches already consumed in this epoch (exact resume).
    """

    def __init__(
        self,
        product_index: np.ndarray,
        global_batch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        groups: np.ndarray | None = None,
        groups_per_batch: int = 0,
    ):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} must be divisible by world size {world_size}")
        self.product_index = np.asarray(product_index)
        self.global_batch, self.seed, self.rank, self.world_size = global_batch, seed, rank, world_size
        self.epoch, self.start_batch = 0, 0
        # Hard negatives: with groups (e.g. a pattern id per row) each batch is drawn from
        # about `groups_per_batch` groups, so in-batch negatives share that attribute.
        self.groups = None if groups is None or groups_per_batch <= 0 else np.asarray(groups)
        self.groups_per_batch = groups_per_batch
        n_products = len(np.unique(self.product_index))
        if n_products < global_batch:
            raise ValueError(f"batch size {global_batch} exceeds the {n_products} distinct training products")
        self._len = len(self._fill_batches(np.random.default_rng([seed, 0, 0])))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _global_batches(self, epoch: int) -> list[list[int]]:
        """Exactly ``len(self)`` batches for every epoch (greedy filling varies in count:
        a short epoch is topped up from another shuffle, a long one truncated)."""
        batches: list[list[int]] = []
        stream = 0
        while len(batches) < self._len:
            batches += self._fill_batches(np.random.default_rng([self.seed, epoch, stream]))
            stream += 1
        return batches[: self._len]

    def _fill_batches(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(len(self.product_index))
        if self.groups is not None:
            # Group-contiguous blocks of batch/groups_per_batch rows, blocks shuffled.
            order = order[np.argsort(self.groups[order], kind="stable")]
            size = max(1, self.global_batch // self.groups_per_batch)
            blocks = [order[i : i + size] for i in range(0, len(order), size)]
            order = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        batches: list[list[int]] = []
        open_batches: list[tuple[list[int], set[int]]] = []
        for i in order:
            pid = int(self.product_index[i])
            # First open batch that lacks this product; a new one if none does.
            for members, seen in open_batches:
                if pid not in seen:
                    members.append(int(i))
                    seen.add(pid)
                    if len(members) == self.global_batch:
                        batches.append(members)
                        open_batches.remove((members, seen))
                    break
            else:
                open_batches.append(([int(i)], {pid}))
        return batches  # incomplete batches are dropped (drop_last)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.global_batch // self.world_size
        for batch in self._global_batches(self.epoch)[self.start_batch :]:
            yield batch[self.rank * per_rank : (self.rank + 1) * per_rank]


class Collator:
    """Stack images (normalised float) and tokenize texts for the towers asked for.

    Output keys: ``query_image``/``product_image`` (B, 3, S, S) float; ``product_text`` and
    ``query_text`` dicts of ``input_ids``/``attention_mask`` (B, T); ``query_text_valid``
    (B,) bool (False for empty query texts); ``product_index`` (B,) long.
    """

    def __init__(
        self,
        towers: Sequence[str],
        tokenizer=None,
        max_length: int = 32,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        augment: dict | None = None,
    ):
        self.towers = list(towers)
        self.augment = {k: v for k, v in (augment or {}).items() if v is not None}
        self.tokenizer, self.max_length = tokenizer, max_length
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        if any(t in schema.TEXT_TOWERS for t in self.towers) and tokenizer is None:
            raise ValueError("text towers need a tokenizer")

    def normalize(self, images: torch.Tensor, augment=None) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> float normalised with the model's mean/std (augmented first)."""
        images = images.float() / 255.0
        if augment is not None:
            images = augment(images).clamp(0.0, 1.0)
        return (images - self.mean) / self.std

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def __call__(self, items: list[dict]) -> dict:
        batch: dict = {"product_index": torch.tensor([it["product_index"] for it in items], dtype=torch.long)}
        for tower in self.towers:
            if tower in schema.IMAGE_TOWERS:
                batch[tower] = self.normalize(torch.stack([it[tower] for it in items]), self.augment.get(tower))
            else:
                texts = [it[tower] for it in items]
                batch[tower] = self.tokenize(texts)
                if tower == schema.QUERY_TEXT:
                    batch[f"{tower}_valid"] = torch.tensor([bool(t.strip()) for t in texts])
        if schema.QUERY_IMAGE in self.towers and not all(it.get("engagement", True) for it in items):
            # Mined reformulation rows: the photo shows a sibling of the target, so terms that
            # pair the photo with the target itself skip them (the fused query keeps them).
            batch[f"{schema.QUERY_IMAGE}_valid"] = torch.tensor([bool(it.get("engagement", True)) for it in items])
        return batch
