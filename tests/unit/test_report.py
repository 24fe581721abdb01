"""The HTML report is self-contained, escapes data, and shows the numbers and markers it was given."""

from __future__ import annotations

import base64
import io
import os
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest
from PIL import Image

from vsearch.evaluation.metrics import METRIC_KEYS
from vsearch.evaluation.report import TOP_N, RetrievalExample, RetrievedItem, write_report

MODELS = ("image_only", "three_tower", "four_tower")
EVIL_TITLE = '<script>alert("x")</script> Zebra mug & co'


class Page(HTMLParser):
    """Collects every start tag with its attributes, and the text inside each <td>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.cells: list[tuple[dict[str, str], str]] = []
        self.text: list[str] = []
        self._cell: tuple[dict[str, str], list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attrs))
        if tag == "td":
            self._cell = (attrs, [])

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append((self._cell[0], "".join(self._cell[1]).strip()))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[1].append(data)

    def with_class(self, name: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.tags if name in attrs.get("class", "").split()]


def parse(path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def png(path, color, size=(200, 160)):
    Image.new("RGB", size, color).save(path)
    return str(path)


def metric_values(base: float) -> dict:
    values = {key: round(base + 0.01 * i, 3) for i, key in enumerate(METRIC_KEYS)}
    return {**values, "ci95": {k: [round(v - 0.04, 3), round(v + 0.04, 3)] for k, v in values.items()}}


@pytest.fixture
def inputs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    query = png(images / "query.png", "gray")
    product = {pid: png(images / f"{pid}.png", color) for pid, color in
               [("p1", "red"), ("p2", "blue"), ("p3", "green"), ("p4", "yellow"), ("p5", "purple"), ("p6", "orange")]}
    categories = {"p1": "mug", "p2": "mug", "p3": "shirt", "p4": "mug", "p5": "bag", "p6": "mug"}

    def items(order: list[str]) -> list[RetrievedItem]:
        return [
            RetrievedItem(pid, product[pid], EVIL_TITLE if pid == "p3" else f"title {pid}", categories[pid],
                          1.0 - 0.1 * r, correct=(pid == "p1"))
            for r, pid in enumerate(order)
        ]

    examples = [
        RetrievalExample(  # all models, 6 results each (only TOP_N shown), target found by two
            query_image=query, query_label="q1 zebra mug", true_product_id="p1",
            results={
                "image_only": items(["p3", "p5", "p2", "p4", "p6", "p1"]),  # p1 at rank 6: not shown
                "three_tower": items(["p2", "p1", "p3", "p4", "p5"]),
                "four_tower": items(["p1", "p2", "p4", "p6", "p3"]),
            },
            true_category="mug",
        ),
        RetrievalExample(  # true category derived from the result that is the true product
            query_image=query, query_label=EVIL_TITLE, true_product_id="p1",
            results={"four_tower": items(["p1", "p5", "p3"])}, query_text="in red",
        ),
    ]
    metrics = {"models": {
        "image_only": metric_values(0.30),
        "three_tower": metric_values(0.40),
        "four_tower": metric_values(0.45),
    }}
    # Lower is better for the false-positive rate: make image_only worst there, three_tower best.
    metrics["models"]["image_only"]["cross_category_fp@10"] = 0.52
    metrics["models"]["three_tower"]["cross_category_fp@10"] = 0.21
    metrics["models"]["four_tower"]["cross_category_fp@10"] = 0.25
    metrics["models"]["four_tower"]["ci95"].pop("mrr")  # a CI may be missing
    del metrics["models"]["image_only"]["multimodal_recall@10"]  # and a whole metric
    del metrics["models"]["image_only"]["ci95"]["multimodal_recall@10"]
    curves = {name: {k: min(1.0, 0.2 + 0.1 * i + 0.015 * k) for k in range(1, 51)} for i, name in enumerate(MODELS)}
    return metrics, curves, examples


def write(tmp_path, inputs, **kwargs):
    metrics, curves, examples = inputs
    kwargs.setdefault("title", "Candidate four_tower vs baseline")
    return write_report(tmp_path / "out" / "report.html", metrics, curves, examples, **kwargs)


def test_report_is_self_contained(tmp_path, inputs):
    path = write(tmp_path, inputs, subtitle="synthetic street-to-shop, test split")
    raw = path.read_text(encoding="utf-8")
    page = parse(path)
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "action", "data"):
            value = attrs.get(name, "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:")), (tag, name, value)
        assert tag not in ("link", "script", "iframe"), tag
    assert "http://" not in raw and "https://" not in raw
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    # 2 queries + image_only 5 + three_tower 5 + four_tower 5 + second example 3
    assert len(images) == 2 + 3 * TOP_N + 3
    for src in images:
        assert src.startswith("data:image/jpeg;base64,")
        thumb = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert max(thumb.size) <= 128  # downscaled, not the 200 px original
    assert any(tag == "style" for tag, _ in page.tags)
    assert os.path.getsize(path) < 200_000


def test_metric_values_cis_and_best_highlight(tmp_path, inputs):
    page = parse(write(tmp_path, inputs))
    cells = {(a["data-model"], a["data-metric"]): (a["class"].split(), text) for a, text in page.cells}
    assert cells[("three_tower", "recall@1")][1] == "0.400 [0.360, 0.440]"
    assert cells[("image_only", "cross_category_fp@10")][1].startswith("0.520")
    assert cells[("four_tower", "mrr")][1] == "0.480"  # no CI given, value alone
    assert cells[("image_only", "multimodal_recall@10")][1] == "\u2013"  # missing metric
    best = {a["data-metric"]: a["data-model"] for a, _ in page.cells if "best" in a["class"].split()}
    assert best == {
        "recall@1": "four_tower", "recall@5": "four_tower", "recall@10": "four_tower", "mrr": "four_tower",
        "cross_category_fp@10": "three_tower",  # lower is better
        "multimodal_recall@10": "four_tower",
    }
    headers = "".join(page.text)
    assert "cross_category_fp@10 \u2193" in headers and "recall@1 \u2191" in headers


def test_correct_wrong_and_cross_category_markers(tmp_path, inputs):
    _, _, examples = inputs
    page = parse(write(tmp_path, inputs))
    shown = [item for ex in examples for items in ex.results.values() for item in items[:TOP_N]]
    assert len(page.with_class("hit")) == sum(item.correct for item in shown) == 3
    assert len(page.with_class("miss")) == sum(not item.correct for item in shown) == len(shown) - 3
    assert len(page.with_class("ok")) == 3  # the check marks
    # Cross-category: items whose category is not "mug" (p3 shirt, p5 bag), in both examples.
    expected_cross = sum(item.category != "mug" for item in shown)
    assert len(page.with_class("cross")) == expected_cross
    assert len(page.with_class("flag")) == expected_cross
    status = [a["class"] for a in page.with_class("status")]
    assert status.count("status missed") == 1  # image_only's true product is at rank 6


def test_recall_curves_are_inline_svg_with_axes(tmp_path, inputs):
    page = parse(write(tmp_path, inputs))
    lines = page.with_class("curve")
    assert [a["data-model"] for a in lines] == list(MODELS)
    assert len(lines[0]["points"].split()) == 50
    text = "".join(page.text)
    assert "Recall@K" in text and "K (number of retrieved items)" in text


def test_text_from_data_is_escaped(tmp_path, inputs):
    path = write(tmp_path, inputs, title=EVIL_TITLE, subtitle="<b>bold</b>", notes=["<img src=x>"])
    raw = path.read_text(encoding="utf-8")
    page = parse(path)
    assert not any(tag == "script" for tag, _ in page.tags)
    assert "<script>" not in raw and "<b>bold</b>" not in raw and "<img src=x>" not in raw
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Zebra mug &amp; co" in raw
    assert EVIL_TITLE in "".join(page.text)  # shown to the reviewer as text


def test_header_timestamp_and_notes(tmp_path, inputs):
    when = datetime(2025, 3, 4, 5, 6, tzinfo=timezone.utc)
    page = parse(write(tmp_path, inputs, subtitle="run 42", notes=["CPU demo", ""], generated_at=when))
    text = "".join(page.text)
    assert "2025-03-04 05:06 UTC" in text and "run 42" in text and "CPU demo" in text


def test_write_is_atomic_and_fails_on_missing_image(tmp_path, inputs):
    path = write(tmp_path, inputs)
    before = path.read_bytes()
    metrics, curves, examples = inputs
    examples[0].results["four_tower"][0].image = str(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="missing.png"):
        write_report(path, metrics, curves, examples, title="t")
    assert path.read_bytes() == before  # the old report is untouched
    assert sorted(os.listdir(path.parent)) == ["report.html"]  # no temp file left behind


def test_empty_inputs_still_render(tmp_path):
    path = write_report(tmp_path / "r.html", {"models": {}}, {}, [], title="nothing yet")
    text = "".join(parse(path).text)
    assert "No metrics were provided." in text and "No retrieval examples were provided." in text


def test_cross_category_uses_given_true_category(tmp_path):
    image = png(tmp_path / "a.png", "white")
    results = {"m": [RetrievedItem(f"x{i}", image, "t", cat, 0.5, False) for i, cat in enumerate(["bag", "mug", "bag"])]}
    example = RetrievalExample(image, "q", "not-retrieved", results, true_category="bag", true_image=image)
    page = parse(write_report(tmp_path / "r.html", {"models": {}}, {}, [example], title="t"))
    assert len(page.with_class("cross")) == 1  # only the mug
    assert len(page.with_class("true-img")) == 1
    # Without a true category and without the true product among the results, nothing is flagged.
    example.true_category = ""
    page = parse(write_report(tmp_path / "r.html", {"models": {}}, {}, [example], title="t"))
    assert page.with_class("cross") == []
