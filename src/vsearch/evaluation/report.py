"""Self-contained HTML evaluation report, the page a reviewer reads before a rollout.

One file, no network: CSS inline, Recall@K curves as inline SVG, every image a downscaled
JPEG data URI. Every text that comes from data (titles, categories, ids, model names) is
passed through ``html.escape``.

Sections: header, gate verdict (optional: each check green/red, candidate vs champion),
metrics table (value with its 95% CI, direction arrow, best model per
column highlighted), Recall@K curves, retrieval examples (query, then each model's top 5,
correct / wrong / cross-category marked).
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from vsearch import artifacts
from vsearch.evaluation.metrics import METRIC_DIRECTIONS, METRIC_KEYS
from vsearch.html_page import escape as _e
from vsearch.html_page import head

TOP_N = 5  # results shown per model and example
QUERY_THUMB_PX = 128
RESULT_THUMB_PX = 88
_JPEG_QUALITY = 82

# Line colours of the models; green/red/orange are kept for correct/wrong/cross-category.
_MODEL_COLORS = ("#1f5fbf", "#8e44ad", "#138496", "#8c564b", "#c2185b", "#5f6b7a", "#7a8b00")


@dataclass
class RetrievedItem:
    """One retrieved catalog item.

    Attributes:
        product_id: catalog product id.
        image: local path of the product image.
        title: product title.
        category: product category.
        score: similarity to the query (higher = more similar).
        correct: whether this is the query's true product.
    """

    product_id: str
    image: str
    title: str
    category: str
    score: float
    correct: bool


@dataclass
class RetrievalExample:
    """One query and what each model retrieved for it.

    Attributes:
        query_image: local path of the query (street) photo.
        query_label: free text shown under the query, e.g. query id + true product title.
        true_product_id: id of the product the user clicked or bought.
        results: {model name: retrieved items, best first}; the first `TOP_N` are shown.
        query_text: optional text part of a multimodal query (e.g. "in red").
        true_category: category of the true product, used to flag cross-category results;
            when empty it is taken from a result whose product_id is the true one, if any.
        true_image: optional local path of the true product image, shown next to the query.
    """

    query_image: str
    query_label: str
    true_product_id: str
    results: dict[str, list[RetrievedItem]]
    query_text: str = ""
    true_category: str = ""
    true_image: str = ""


class _Thumbnails:
    """Downscaled JPEG data URIs, each image file encoded once per report."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], str] = {}

    def data_uri(self, path: str | os.PathLike, size: int) -> str:
        key = (os.fspath(path), size)
        if key not in self._cache:
            self._cache[key] = self._encode(key[0], size)
        return self._cache[key]

    @staticmethod
    def _encode(path: str, size: int) -> str:
        try:
            with Image.open(path) as image:
                image.load()
                if image.mode in ("RGBA", "LA", "P"):
                    # Transparent pixels would turn black in JPEG; flatten them onto white.
                    rgba = image.convert("RGBA")
                    image = Image.new("RGB", rgba.size, "white")
                    image.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    image = image.convert("RGB")
                image.thumbnail((size, size), Image.Resampling.LANCZOS)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
        except (OSError, ValueError) as exc:  # missing file, unreadable or corrupt image
            raise ValueError(f"report image {path!r} cannot be read: {exc}") from exc
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _model_order(metrics: Mapping, curves: Mapping, examples: Sequence[RetrievalExample]) -> list[str]:
    names: list[str] = []
    for group in (metrics.get("models", {}), curves, *(ex.results for ex in examples)):
        for name in group:
            if name not in names:
                names.append(name)
    return names


def _is_number(value: object) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _metric_columns(models: Mapping[str, Mapping]) -> list[str]:
    present = {key for m in models.values() for key, v in m.items() if key != "ci95" and _is_number(v)}
    return [k for k in METRIC_KEYS if k in present] + sorted(present - set(METRIC_KEYS))


def _best_models(models: Mapping[str, Mapping], column: str) -> set[str]:
    """Models with the best value of one column; empty when the direction is unknown."""
    direction = METRIC_DIRECTIONS.get(column)
    values = {name: float(m[column]) for name, m in models.items() if _is_number(m.get(column))}
    if direction not in ("higher", "lower") or len(values) < 2:
        return set()
    best = max(values.values()) if direction == "higher" else min(values.values())
    return {name for name, v in values.items() if v == best}


def _metrics_table(models: Mapping[str, Mapping], colors: Mapping[str, str]) -> str:
    if not models:
        return '<p class="empty">No metrics were provided.</p>'
    columns = _metric_columns(models)
    best = {column: _best_models(models, column) for column in columns}
    head = ["<th>model</th>"]
    for column in columns:
        direction = METRIC_DIRECTIONS.get(column)
        arrow = {"higher": "&uarr;", "lower": "&darr;"}.get(direction, "")
        hint = f"{direction} is better" if arrow else "direction not defined"
        head.append(
            f'<th title="{_e(hint)}">{_e(column)} <span class="arrow">{arrow}</span></th>'
        )
    rows = []
    for name, model_metrics in models.items():
        cells = [
            f'<th scope="row"><span class="chip" style="background:{colors[name]}"></span>{_e(name)}</th>'
        ]
        for column in columns:
            value = model_metrics.get(column)
            if not _is_number(value):
                cells.append(f'<td class="metric na" data-model="{_e(name)}" data-metric="{_e(column)}">&ndash;</td>')
                continue
            text = f"{float(value):.3f}"
            ci = (model_metrics.get("ci95") or {}).get(column)
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_number(x) for x in ci):
                text += f' <span class="ci">[{float(ci[0]):.3f}, {float(ci[1]):.3f}]</span>'
            classes = "metric best" if name in best[column] else "metric"
            cells.append(f'<td class="{classes}" data-model="{_e(name)}" data-metric="{_e(column)}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<table class="metrics"><thead><tr>' + "".join(head) + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
        '<p class="legend">Mean over queries with its 95% bootstrap interval (queries resampled) '
        "in brackets. &uarr; higher is better, &darr; lower is better; "
        '<span class="best-key">highlighted</span> = best model in that column.</p>'
    )


def _nice_step(span: float, max_ticks: int = 10) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if span / step <= max_ticks:
            return step
    return int(10 ** math.ceil(math.log10(max(span, 1.0))))


def _curves_svg(curves: Mapping[str, Mapping[int, float]], colors: Mapping[str, str]) -> str:
    points = {}
    for name, curve in curves.items():
        pts = sorted((int(k), float(v)) for k, v in curve.items() if _is_number(v))
        if pts:
            points[name] = pts
    if not points:
        return '<p class="empty">No Recall@K curves were provided.</p>'
    width, height = 720, 380
    left, right, top, bottom = 64, 190, 20, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    k_min = min(p[0][0] for p in points.values())
    k_max = max(p[-1][0] for p in points.values())
    k_span = max(k_max - k_min, 1)

    def x(k: float) -> float:
        return left + (k - k_min) / k_span * plot_w

    def y(v: float) -> float:
        return top + (1.0 - min(max(v, 0.0), 1.0)) * plot_h

    parts = [
        f'<svg class="curves" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="Recall at K per model">'
    ]
    for i in range(6):  # y grid at 0, 0.2, ..., 1.0
        v = i / 5
        parts.append(
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{v:.1f}</text>'
        )
    step = _nice_step(k_span)
    ticks = [k_min] + [k for k in range(step, k_max + 1, step) if k > k_min]
    for k in ticks:
        parts.append(
            f'<line x1="{x(k):.1f}" y1="{top + plot_h}" x2="{x(k):.1f}" y2="{top + plot_h + 5}" class="axis"/>'
            f'<text x="{x(k):.1f}" y="{top + plot_h + 20}" text-anchor="middle" class="tick">{k}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" text-anchor="middle" class="label">'
        "K (number of retrieved items)</text>"
        f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" class="label" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">Recall@K</text>'
    )
    for i, (name, pts) in enumerate(points.items()):
        color = colors[name]
        coords = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in pts)
        parts.append(
            f'<polyline class="curve" data-model="{_e(name)}" points="{coords}" fill="none" '
            f'stroke="{color}" stroke-width="2.2"><title>{_e(name)}</title></polyline>'
        )
        for k, v in pts:
            if k in (1, 5, 10):
                parts.append(
                    f'<circle cx="{x(k):.1f}" cy="{y(v):.1f}" r="3.2" fill="{color}">'
                    f"<title>{_e(name)}: Recall@{k} = {v:.3f}</title></circle>"
                )
        ly = top + 14 + 22 * i
        lx = left + plot_w + 16
        parts.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{color}" stroke-width="3"/>'
            f'<text x="{lx + 28}" y="{ly + 4}" class="legend-text">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _true_category(example: RetrievalExample) -> str:
    if example.true_category:
        return example.true_category
    for items in example.results.values():
        for item in items:
            if item.product_id == example.true_product_id:
                return item.category
    return ""


def _item_html(item: RetrievedItem, rank: int, true_category: str, thumbs: _Thumbnails) -> str:
    cross = bool(true_category) and item.category != true_category
    classes = ["item", "hit" if item.correct else "miss"] + (["cross"] if cross else [])
    mark = '<span class="mark ok">&#10003;</span>' if item.correct else '<span class="mark bad">&#10007;</span>'
    hover = f"#{rank} {item.product_id} | {item.title} | {item.category} | score {item.score:.3f}"
    flag = '<span class="flag" title="category differs from the true product">cross-category</span>' if cross else ""
    return (
        f'<figure class="{" ".join(classes)}" title="{_e(hover)}">'
        f'<div class="thumb"><img src="{thumbs.data_uri(item.image, RESULT_THUMB_PX)}" '
        f'alt="{_e(item.title)}" width="{RESULT_THUMB_PX}" height="{RESULT_THUMB_PX}">{mark}</div>'
        f"<figcaption>{flag}"
        f'<span class="pid">{rank}. {_e(item.product_id)}</span>'
        f'<span class="ptitle">{_e(item.title)}</span>'
        f'<span class="pcat">{_e(item.category)} &middot; {item.score:.3f}</span>'
        "</figcaption></figure>"
    )


def _example_html(
    index: int, example: RetrievalExample, models: Sequence[str], colors: Mapping[str, str], thumbs: _Thumbnails
) -> str:
    true_category = _true_category(example)
    query = [
        f'<img src="{thumbs.data_uri(example.query_image, QUERY_THUMB_PX)}" alt="query {index}" '
        f'width="{QUERY_THUMB_PX}" height="{QUERY_THUMB_PX}" class="query-img">',
        f'<div class="qlabel">{_e(example.query_label)}</div>',
    ]
    if example.query_text:
        query.append(f'<div class="qtext">+ text: &ldquo;{_e(example.query_text)}&rdquo;</div>')
    truth = f"true: {example.true_product_id}" + (f" ({true_category})" if true_category else "")
    query.append(f'<div class="truth">{_e(truth)}</div>')
    if example.true_image:
        query.append(
            '<div class="true-caption">true product</div>'
            f'<img src="{thumbs.data_uri(example.true_image, RESULT_THUMB_PX)}" alt="true product" '
            f'width="{RESULT_THUMB_PX}" height="{RESULT_THUMB_PX}" class="true-img" title="true product">'
        )
    rows = []
    for name in models:
        if name not in example.results:
            continue
        items = example.results[name][:TOP_N]
        found = any(item.correct for item in items)
        cells = "".join(_item_html(item, r, true_category, thumbs) for r, item in enumerate(items, 1))
        if not items:
            cells = '<span class="empty">no results</span>'
        status = "found" if found else "missed"
        rows.append(
            f'<div class="model-row"><div class="model-name" style="border-color:{colors[name]}">'
            f'{_e(name)}<span class="status {status}">{status} in top {TOP_N}</span></div>'
            f'<div class="items">{cells}</div></div>'
        )
    return (
        f'<section class="example"><div class="query">{"".join(query)}</div>'
        f'<div class="results">{"".join(rows)}</div></section>'
    )



def _fmt(value: object, digits: int = 4, signed: bool = False) -> str:
    if not _is_number(value):
        return "&ndash;"
    number = round(float(value), digits) + 0.0  # no "-0.0000"
    return f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"


def _lineage_line(lineage: Mapping) -> str:
    """Which code and which KFP run judged (a blessing from before lineage: nothing)."""
    if not lineage:
        return ""
    return ('<p class="legend lineage">code <code>' + _e(lineage.get("code_version") or "unknown")
            + "</code> &middot; run <code>" + _e(lineage.get("run_id") or "outside a pipeline run") + "</code></p>")


def _gate_section(gate: Mapping) -> str:
    """The gate's verdict, each check green (pass) / red (fail) / grey (skipped), and the
    candidate-vs-champion (and vs baseline) comparison on every metric, paired on the same queries."""
    blessed = bool(gate.get("blessed"))
    cand = gate.get("candidate") or {}
    champ = gate.get("champion") or {}
    verdict = "BLESSED" if blessed else "NOT BLESSED"
    parts = [
        f'<div class="card gate"><p class="verdict {"blessed" if blessed else "rejected"}">{verdict}</p>',
        f'<p class="reason">{_e(gate.get("reason", ""))}</p>',
        '<p class="legend">candidate: <b>' + _e(cand.get("name", "?")) + "</b> "
        + _e(cand.get("version") or "") + " &middot; champion: <b>"
        + (_e(champ.get("name", "?")) + "</b> " + _e(champ.get("version") or "") if champ else "none yet</b>")
        + "</p>",
        _lineage_line(gate.get("lineage") or {}),
        '<table class="checks"><thead><tr><th>check</th><th>status</th><th>statistic</th>'
        "<th>threshold</th><th>candidate</th><th>reference</th><th>difference [95% CI]</th><th>detail</th></tr></thead><tbody>",
    ]
    for check in gate.get("checks", []):
        status = str(check.get("status", "fail"))
        ci = check.get("diff_ci")
        diff = _fmt(check.get("diff"), signed=True)
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_number(x) for x in ci):
            diff += f' <span class="ci">[{_fmt(ci[0], signed=True)}, {_fmt(ci[1], signed=True)}]</span>'
        parts.append(
            f'<tr class="check {_e(status)}" data-status="{_e(status)}" data-metric="{_e(check.get("metric", ""))}" '
            f'data-against="{_e(check.get("against", ""))}">'
            f'<td>{_e(check.get("name", ""))}</td><td class="status-cell">{_e(status.upper())}</td>'
            f'<td>{_fmt(check.get("statistic"), signed=True)}</td><td>{_fmt(check.get("threshold"), signed=True)}</td>'
            f'<td>{_fmt(check.get("candidate"))}</td><td>{_fmt(check.get("reference"))}</td><td>{diff}</td>'
            f'<td class="detail">{_e(check.get("detail", ""))}</td></tr>'
        )
    parts.append("</tbody></table></div>")
    for against, rows in (gate.get("comparisons") or {}).items():
        title = "Candidate vs champion" if against == "champion" else f"Candidate vs {against}"
        parts.append(
            f'<h3>{_e(title)}</h3><div class="card"><table class="comparison" data-against="{_e(against)}">'
            "<thead><tr><th>metric</th><th>candidate</th><th>" + _e(against)
            + "</th><th>difference (candidate &minus; reference) [paired 95% CI]</th><th>better?</th></tr></thead><tbody>"
        )
        for metric in [k for k in METRIC_KEYS if k in rows] + sorted(set(rows) - set(METRIC_KEYS)):
            row = rows[metric]
            direction = METRIC_DIRECTIONS.get(metric)
            diff, ci = row.get("diff"), row.get("diff_ci") or [None, None]
            verdict = "&ndash;"
            if direction in ("higher", "lower") and all(_is_number(x) for x in ci):
                sign = 1.0 if direction == "higher" else -1.0
                lo, hi = sorted((sign * float(ci[0]), sign * float(ci[1])))
                verdict = "better" if lo > 0 else "worse" if hi < 0 else "no significant difference"
            ci_text = f' <span class="ci">[{_fmt(ci[0], signed=True)}, {_fmt(ci[1], signed=True)}]</span>' if all(_is_number(x) for x in ci) else ""
            arrow = {"higher": "&uarr;", "lower": "&darr;"}.get(direction or "", "")
            parts.append(
                f'<tr data-metric="{_e(metric)}"><th scope="row">{_e(metric)} <span class="arrow">{arrow}</span></th>'
                f'<td>{_fmt(row.get("candidate"))}</td><td>{_fmt(row.get("reference"))}</td>'
                f'<td>{_fmt(diff, signed=True)}{ci_text}</td><td class="cmp {verdict.split()[0]}">{verdict}</td></tr>'
            )
        parts.append("</tbody></table></div>")
    return "".join(parts)


def _render(
    metrics: Mapping,
    curves: Mapping[str, Mapping[int, float]],
    examples: Sequence[RetrievalExample],
    *,
    title: str,
    subtitle: str,
    notes: Iterable[str],
    generated_at: datetime,
    gate: Mapping | None = None,
) -> str:
    models_metrics: Mapping[str, Mapping] = metrics.get("models", {})
    names = _model_order(metrics, curves, examples)
    colors = {name: _MODEL_COLORS[i % len(_MODEL_COLORS)] for i, name in enumerate(names)}
    thumbs = _Thumbnails()
    notes = [n for n in notes if n]
    stamp = generated_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    parts = [
        head(title),
        f"<header><h1>{_e(title)}</h1>",
        f'<p class="subtitle">{_e(subtitle)}</p>' if subtitle else "",
        f'<div class="meta">Generated {_e(stamp)} &middot; {len(models_metrics)} model(s) &middot; '
        f"{len(examples)} retrieval example(s)</div></header>",
    ]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    if gate is not None:
        parts += ['<h2 id="gate">Gate</h2>', _gate_section(gate)]
    parts += [
        '<h2 id="metrics">Metrics</h2><div class="card">',
        _metrics_table(models_metrics, colors),
        '</div><h2 id="curves">Recall@K</h2><div class="card">',
        _curves_svg(curves, colors),
        f'</div><h2 id="examples">Retrieval examples (top {TOP_N} per model)</h2>',
        '<div class="key"><span><span class="sw" style="border:3px solid #1a7f37"></span>&#10003; true product</span>'
        '<span><span class="sw" style="border:3px dashed #cf222e"></span>&#10007; other product</span>'
        '<span><span class="sw" style="box-shadow:0 0 0 3px #f0883e"></span>cross-category '
        "(category differs from the true product's)</span>"
        "<span>hover an item for id, title, category and score</span></div>",
    ]
    if examples:
        parts += [_example_html(i, ex, names, colors, thumbs) for i, ex in enumerate(examples, 1)]
    else:
        parts.append('<p class="empty">No retrieval examples were provided.</p>')
    parts.append("<footer>Self-contained report: all images are embedded; no network access needed.</footer>")
    parts.append("</main></body></html>\n")
    return "\n".join(p for p in parts if p)


def write_report(
    path: str | os.PathLike,
    metrics: Mapping,
    curves: Mapping[str, Mapping[int, float]],
    examples: Sequence[RetrievalExample],
    *,
    title: str,
    subtitle: str = "",
    notes: Iterable[str] = (),
    generated_at: datetime | None = None,
    gate: Mapping | None = None,
) -> Path:
    """Write the evaluation report as one self-contained HTML file, atomically.

    Args:
        path: output .html path; parent folders are created.
        metrics: the ``metrics.json`` dict, ``{"models": {name: {metric: float, "ci95":
            {metric: [lo, hi]}}}}``; any models, any subset of metrics, ``ci95`` optional.
        curves: {model name: {K: Recall@K}} (see `metrics.recall_curve`); keys may be
            strings as read back from JSON.
        examples: retrieval examples; each model's first `TOP_N` results are shown.
        title: page title.
        subtitle: line under the title (e.g. dataset and model versions).
        notes: remarks listed under the header (e.g. caveats of the run).
        generated_at: timestamp printed in the header; default now (UTC).
        gate: optional blessing dict (``blessing.json`` of `vsearch.evaluation.gate`): adds
            the gate section (each check green/red) and the candidate-vs-champion comparison.

    Returns:
        The path written.

    Raises:
        ValueError: an image cannot be read (the message names the file). Nothing is
            written then and an existing report at ``path`` is left as it was.
    """
    path = Path(path)
    document = _render(
        metrics,
        curves,
        examples,
        title=title,
        subtitle=subtitle,
        notes=notes,
        generated_at=generated_at or datetime.now(timezone.utc),
        gate=gate,
    )
    with artifacts.staged_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)  # readable by others whatever the umask (an artifact viewer)
            handle.write(document)
            handle.flush()
            os.fsync(handle.fileno())
    return path
