"""Write a ValidationResult as ``validation.json`` and a self-contained ``validation.html``.

The HTML page is ours, not GX Data Docs (those load CSS/JS from CDNs and render unstyled
offline): inline CSS, no scripts, no external resources; each check with pass/fail, counts
and offending examples (file, row, value, detail). When the result carries GX Data Docs
(built into ``DATA_DOCS_DIR`` next to the page), the page links their index relatively.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vsearch.html_page import escape, head
from vsearch.validation.validate import ValidationResult

JSON_FILE = "validation.json"
HTML_FILE = "validation.html"
DATA_DOCS_DIR = "gx_data_docs"

def _examples(check: dict) -> str:
    if not check["examples"]:
        return ""
    items = []
    for ex in check["examples"]:
        parts = []
        if ex.get("row") is not None:
            parts.append(f"row {ex['row']}")
        if ex.get("value") is not None:
            parts.append(f"<code>{escape(repr(ex['value']))}</code>")
        if ex.get("detail"):
            parts.append(f"<span class=muted>{escape(str(ex['detail']))}</span>")
        items.append("<li>" + " ".join(parts) + "</li>")
    more = (check.get("unexpected_count") or 0) - len(check["examples"])
    if more > 0:
        items.append(f"<li class=muted>... {more} more</li>")
    return "<ul class=ex>" + "".join(items) + "</ul>"


def _data_docs_note(result: ValidationResult, out_dir: Path | None) -> str:
    """A paragraph linking the GX Data Docs index (relative to the page), or saying why none."""
    if result.data_docs_error:
        return f"<p class=muted id=gx-data-docs>GX Data Docs could not be built: {escape(result.data_docs_error)}</p>"
    if result.data_docs is None:
        return ""
    index = Path(result.data_docs)
    href = index.as_uri() if index.is_absolute() else index.as_posix()
    if out_dir is not None and index.is_absolute():
        try:
            href = Path(os.path.relpath(index, Path(out_dir).resolve())).as_posix()
        except ValueError:  # another drive: keep the absolute file URI
            pass
    return (f"<p class=muted id=gx-data-docs>Great Expectations' own report: <a href='{escape(href)}'>GX Data Docs</a>"
            " (suites and validation results as GX renders them). It loads its CSS/JS from CDNs, so offline it shows"
            " unstyled; this page needs no network.</p>")


def render_html(result: ValidationResult, out_dir: str | os.PathLike | None = None) -> str:
    """The offline summary page (a complete HTML document, UTF-8).

    ``out_dir``: the folder the page is written to, so the GX Data Docs link is relative.
    """
    data = result.to_dict()
    stats = data["statistics"]
    verdict = "pass" if data["success"] else "fail"
    top = (
        head(f"vsearch data validation: {verdict.upper()}")
        + f"<h1>Data validation <span class='badge {verdict}' id=verdict>{verdict.upper()}</span></h1>"
        f"<p>Data folder <code>{escape(data['data_dir'])}</code>. {stats['checks']} checks, "
        f"<strong>{stats['failed']} failed</strong>. Rows: "
        + ", ".join(f"{escape(k)} {v}" for k, v in stats["rows"].items())
        + f". Images probed: {stats['images']} "
        + escape(json.dumps(stats["images_by_status"]))
        + f". {stats['seconds']} s.</p>"
        + _data_docs_note(result, None if out_dir is None else Path(out_dir))
    )
    body = []
    if data["failed"]:
        body.append("<h2>Failed</h2><ul id=failed>" + "".join(f"<li><code>{escape(line)}</code></li>" for line in data["failed"]) + "</ul>")
    manifests = list(dict.fromkeys(c["manifest"] for c in data["checks"]))
    for manifest in manifests:
        rows = []
        for c in (c for c in data["checks"] if c["manifest"] == manifest):
            status = "pass" if c["success"] else "fail"
            count = "" if c["unexpected_count"] is None else f"{c['unexpected_count']}"
            total = "" if c["element_count"] is None else f"{c['element_count']}"
            rows.append(
                f"<tr class=check data-rule='{escape(c['rule'])}' data-status={status}>"
                f"<td><span class='badge {status}'>{status.upper()}</span></td>"
                f"<td><code>{escape(c['rule'])}</code></td><td>{escape(c['description'])}"
                f"<br><span class=muted>{escape(c['expectation'])}</span></td>"
                f"<td class=num>{count}</td><td class=num>{total}</td><td>{_examples(c)}</td></tr>"
            )
        body.append(
            f"<h2>{escape(manifest)}</h2><table class=plain><thead><tr><th>status</th><th>rule</th><th>expectation</th>"
            f"<th>failing rows</th><th>rows</th><th>offending examples</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return top + "".join(body) + "</main></body></html>\n"


def write_report(result: ValidationResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``validation.json`` and ``validation.html`` into ``out_dir`` (which must exist).

    GX Data Docs are not written here: ``validate_dataset(..., data_docs_dir=out_dir /
    DATA_DOCS_DIR)`` builds them (it holds the GX context); this page links them.
    """
    out_dir = Path(out_dir)
    paths = {"json": out_dir / JSON_FILE, "html": out_dir / HTML_FILE}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    paths["html"].write_text(render_html(result, out_dir), encoding="utf-8")
    if result.data_docs is not None:
        paths["data_docs"] = Path(result.data_docs)
    return paths


def require_passed(validation_dir: str | os.PathLike, data_dir: str | os.PathLike) -> dict:
    """The ``validation.json`` of ``validation_dir`` when that validation passed.

    The stop of a pipeline run on invalid data: validation itself publishes its report and
    returns (a failed step publishes no outputs, so the report would never reach the UI);
    the steps after it call this before reading the data.

    Raises:
        DataError: no validation there, or it failed: names the first failing manifest (under
            ``data_dir``), its rule and row, and how many checks failed.
    """
    from vsearch.schema import DataError

    path = Path(validation_dir) / JSON_FILE
    result = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if result.get("success") is True:
        return result
    failed = [c for c in result.get("checks", []) if not c.get("success")]
    if not failed:
        raise DataError(path, "the dataset has no passing validation: run validate_data first")
    first = failed[0]
    row = next((ex["row"] for ex in first.get("examples", []) if ex.get("row") is not None), None)
    lines = result.get("failed") or [first["rule"]]
    raise DataError(Path(data_dir) / first["manifest"], first["rule"], row,
                    detail=f"no passing validation: {len(failed)} check(s) failed; first: {lines[0]} "
                           f"(the validation report has every check)")
