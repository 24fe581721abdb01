"""The look of every HTML page the package writes: one stylesheet and one escape rule.

The evaluation and gate reports, the data validation page, the drift summary and the A/B
analysis share them. Pages are self-contained (inline CSS, no scripts, no remote fetches),
so an artifact viewer or a file:// URL shows them as written; all text is escaped.
"""

from __future__ import annotations

import html


def escape(text: object) -> str:
    """``text`` as HTML text or a quoted attribute value."""
    return html.escape(str(text), quote=True)


def head(title: str) -> str:
    """A page's doctype, ``<head>`` (title, the stylesheet) and opening ``<body><main>``."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>")


CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  margin: 0; background: #f5f6f8; color: #1f2328; font-size: 14px; line-height: 1.4; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 3px solid #1f5fbf; margin-bottom: 18px; padding-bottom: 10px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 10px; }
.subtitle { color: #444c56; font-size: 15px; margin: 0 0 6px; }
.meta { color: #6e7781; font-size: 12.5px; }
.notes { background: #fff8e1; border-left: 4px solid #d4a72c; padding: 8px 14px 8px 30px; margin: 10px 0; }
.card { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 14px 16px; }
table.metrics { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.metrics th, table.metrics td { padding: 7px 10px; border-bottom: 1px solid #e6e9ed; text-align: right; white-space: nowrap; }
table.metrics th:first-child { text-align: left; }
table.metrics thead th { background: #f0f3f6; font-weight: 600; font-size: 13px; }
table.metrics td.best { background: #dafbe1; font-weight: 700; box-shadow: inset 0 0 0 2px #1a7f37; }
.ci { color: #6e7781; font-weight: 400; font-size: 12px; }
.arrow { color: #1f5fbf; font-size: 15px; }
.chip { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 7px; }
.legend { color: #6e7781; font-size: 12.5px; margin: 8px 0 0; }
.best-key { background: #dafbe1; outline: 2px solid #1a7f37; padding: 0 4px; }
svg.curves { display: block; margin: 0 auto; max-width: 100%; height: auto; font-family: inherit; }
svg .grid { stroke: #e6e9ed; } svg .axis { stroke: #57606a; }
svg .tick { font-size: 12px; fill: #57606a; } svg .label { font-size: 13px; fill: #1f2328; font-weight: 600; }
svg .legend-text { font-size: 13px; fill: #1f2328; }
.key { display: flex; gap: 18px; flex-wrap: wrap; font-size: 12.5px; color: #444c56; margin-bottom: 10px; }
.key span.sw { display: inline-block; width: 14px; height: 14px; vertical-align: -3px; margin-right: 5px; border-radius: 3px; }
.example { display: grid; grid-template-columns: 170px 1fr; gap: 16px; background: #fff;
  border: 1px solid #d8dee4; border-radius: 8px; padding: 12px 14px; margin-bottom: 14px; }
.query { font-size: 12px; }
.query-img { border-radius: 6px; border: 2px solid #1f2328; display: block; object-fit: contain; background: #fff; }
.qlabel { font-weight: 600; margin-top: 6px; word-break: break-word; }
.qtext { color: #8250df; margin-top: 3px; }
.truth { color: #1a7f37; margin-top: 3px; word-break: break-word; }
.true-caption { margin-top: 8px; color: #57606a; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; }
.true-img { margin-top: 2px; border: 3px solid #1a7f37; border-radius: 6px; object-fit: contain; background: #fff; }
.model-row { display: grid; grid-template-columns: 130px 1fr; gap: 8px; align-items: start; padding: 6px 0; border-top: 1px solid #eef1f4; }
.model-row:first-child { border-top: none; }
.model-name { font-weight: 600; border-left: 5px solid; padding-left: 8px; word-break: break-word; }
.status { display: block; font-weight: 400; font-size: 11.5px; }
.status.found { color: #1a7f37; } .status.missed { color: #cf222e; }
.items { display: flex; gap: 8px; flex-wrap: wrap; }
figure.item { margin: 0; width: 104px; font-size: 11px; }
.thumb { position: relative; width: 96px; height: 96px; border: 4px solid; border-radius: 6px;
  display: flex; align-items: center; justify-content: center; background: #fff; }
.thumb img { max-width: 88px; max-height: 88px; object-fit: contain; }
figure.hit .thumb { border-color: #1a7f37; }
figure.miss .thumb { border-color: #cf222e; border-style: dashed; }
figure.cross .thumb { box-shadow: 0 0 0 3px #f0883e; }
.mark { position: absolute; top: -8px; right: -8px; width: 20px; height: 20px; border-radius: 50%;
  color: #fff; font-weight: 700; font-size: 12px; display: flex; align-items: center; justify-content: center; }
.mark.ok { background: #1a7f37; } .mark.bad { background: #cf222e; }
figcaption { display: flex; flex-direction: column; margin-top: 4px; }
.pid { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; color: #57606a; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ptitle { overflow: hidden; display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; }
.pcat { color: #6e7781; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.flag { background: #f0883e; color: #fff; font-weight: 700; font-size: 10px; border-radius: 3px; padding: 0 4px; align-self: flex-start; margin-bottom: 2px; }
.empty { color: #6e7781; font-style: italic; }
.gate .verdict { font-size: 20px; font-weight: 800; margin: 0 0 4px; }
.verdict.blessed { color: #1a7f37; } .verdict.rejected { color: #cf222e; }
table.checks, table.comparison { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; font-size: 13px; }
table.checks th, table.checks td, table.comparison th, table.comparison td { padding: 6px 8px; border-bottom: 1px solid #e6e9ed; text-align: right; }
table.checks td:first-child, table.checks td.detail, table.checks th:first-child, table.checks th:last-child,
table.comparison th { text-align: left; }
table.checks td.detail { color: #57606a; font-size: 12px; }
tr.check.pass { background: #dafbe1; } tr.check.pass .status-cell { color: #1a7f37; font-weight: 700; }
tr.check.fail { background: #ffebe9; } tr.check.fail .status-cell { color: #cf222e; font-weight: 700; }
tr.check.skipped { background: #f0f3f6; color: #6e7781; }
td.cmp.better { color: #1a7f37; font-weight: 700; } td.cmp.worse { color: #cf222e; font-weight: 700; }
h3 { font-size: 16px; margin: 18px 0 8px; }
footer { color: #6e7781; font-size: 12px; margin-top: 28px; }
/* the validation, drift and A/B pages: plain tables of text, pass/fail badges */
.badge { display: inline-block; padding: 1px 8px; border-radius: 5px; font-weight: 600; font-size: 12px; }
.badge.pass { background: #dafbe1; color: #1a7f37; } .badge.fail { background: #ffebe9; color: #cf222e; }
table.plain { border-collapse: collapse; width: 100%; font-size: 13px; background: #fff; }
table.plain th, table.plain td { padding: 6px 8px; border-bottom: 1px solid #e6e9ed; text-align: left; vertical-align: top; }
table.plain thead th { background: #f0f3f6; font-weight: 600; }
table.plain td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.plain tr.drift { background: #ffebe9; } table.plain tr.ok { background: #dafbe1; }
ul.ex { margin: 0; padding-left: 16px; }
.muted { color: #6e7781; }
code { font-size: 12.5px; }
.verdict { font-size: 20px; font-weight: 800; margin: 0 0 4px; }
"""
