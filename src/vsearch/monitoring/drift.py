"""``vsearch drift``: compare a current window with the reference window (Evidently).

Checks (thresholds in ``configs/drift.yaml``); the window drifted if any fires:

* **embedding drift** on query-image and on product-image embeddings: Evidently's
  ``EmbeddingsDrift`` with a configurable method (default: a domain classifier trained to tell
  the windows apart; drift if its held-out ROC AUC exceeds the threshold);
* **feature drift**: Evidently ``ValueDrift`` per feature (query text length, image size,
  brightness, channel means; product title length, category mix, image size, brightness ...):
  drift if the test's p-value is below the threshold;
* **retrieval health**: the mean top-1 similarity may not drop, and the share of
  low-confidence queries (below the reference's threshold) may not rise, beyond the limits.

The decision of each embedding check is the Evidently drift method itself, called on the
windows; the HTML report renders the same metrics with Evidently (its t-SNE plot is drawn on
``plot_sample`` rows per side: it costs seconds, the decision milliseconds). Outputs in
``--out``: ``drift.json`` (every check with its score and threshold), ``index.html`` (the
verdict and every check) and Evidently's ``queries_report.html`` / ``products_report.html``;
published atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vsearch import artifacts, model_folder
from vsearch.html_page import escape, head
from vsearch.config import ConfigError, load_typed
from vsearch.monitoring.reference import EMB_PREFIX, HEALTH_COLUMN, build_snapshot, load_snapshot

DRIFT_FILE = "drift.json"
SUMMARY_HTML = "index.html"
# Evidently's report per window side; a KFP step publishes each as its own HTML output.
REPORT_HTML = {"queries": "queries_report.html", "products": "products_report.html"}
EXIT_DRIFT = 3
P_VALUE_METHODS = {"ks", "chi2_contingency", "chisquare", "z", "fisher_exact", "t_test", "mannw", "anderson", "cramer_von_mises", "g_test", "epps_singleton"}
DISTANCE_METHODS = {"wasserstein", "jensenshannon", "kl_div", "psi", "hellinger", "energy_dist", "TVD"}
EMBEDDING_METHODS = ("model", "mmd", "ratio", "distance")


@dataclass
class DriftSample:
    """Seeded subsample of each window (keeps Evidently fast)."""

    max_queries: int = 500
    max_products: int = 500
    seed: int = 0


@dataclass
class DriftEmbeddings:
    """Evidently ``EmbeddingsDrift`` on query and on product embeddings."""

    method: str = "model"  # one of EMBEDDING_METHODS
    params: dict = field(default_factory=lambda: {"threshold": 0.65, "bootstrap": False})  # the method's own parameters
    plot_sample: int = 100  # rows per side for Evidently's t-SNE plot (HTML only)


@dataclass
class DriftFeatures:
    """Evidently ``ValueDrift`` per feature column."""

    num_method: str = "ks"
    cat_method: str = "chi2_contingency"
    threshold: float = 0.001
    query_columns: list[str] = field(default_factory=lambda: ["query_text_length", "image_size", "brightness", "mean_red", "mean_green", "mean_blue"])
    product_columns: list[str] = field(default_factory=lambda: ["title_length", "category", "image_size", "brightness", "mean_red", "mean_green", "mean_blue"])


@dataclass
class DriftHealth:
    """Retrieval-health proxies, current vs reference window."""

    max_mean_top1_drop: float = 0.05
    max_low_confidence_increase: float = 0.10


@dataclass
class DriftConfig:
    """``configs/drift.yaml``: the same keys and defaults."""

    sample: DriftSample = field(default_factory=DriftSample)
    embeddings: DriftEmbeddings = field(default_factory=DriftEmbeddings)
    features: DriftFeatures = field(default_factory=DriftFeatures)
    health: DriftHealth = field(default_factory=DriftHealth)


def load_drift_config(name_or_path: str | os.PathLike = "drift", overrides: list[str] | tuple[str, ...] = ()) -> DriftConfig:
    """Preset name (``drift``) or YAML path, plus dotted ``section.key=value`` overrides."""
    cfg = load_typed(DriftConfig, name_or_path, overrides)
    if cfg.embeddings.method not in EMBEDDING_METHODS:
        raise ConfigError(f"drift config embeddings.method must be one of {list(EMBEDDING_METHODS)}")
    if not isinstance(cfg.embeddings.params or {}, dict):
        raise ConfigError("drift config embeddings.params: must be a mapping")
    for key in ("num_method", "cat_method"):
        method = getattr(cfg.features, key)
        if method not in P_VALUE_METHODS | DISTANCE_METHODS:
            raise ConfigError(f"drift config features.{key}: unknown method {method!r}")
    return cfg


def _two_sample_chi2(reference_data: pd.Series, current_data: pd.Series, feature_type, threshold: float) -> tuple[float, bool]:
    """(p-value, drifted): scipy ``chi2_contingency`` on the 2 x k table of category counts."""
    from scipy.stats import chi2_contingency

    ref, cur = reference_data.dropna().astype(str), current_data.dropna().astype(str)
    keys = sorted(set(ref) | set(cur))
    if len(keys) < 2 or ref.empty or cur.empty:
        return 1.0, False
    table = np.array([[int((ref == k).sum()) for k in keys], [int((cur == k).sum()) for k in keys]])
    p_value = float(chi2_contingency(table, correction=False).pvalue)
    return p_value, p_value < threshold


def register_two_sample_chi2() -> None:
    """Register Evidently stat test ``chi2_contingency``: a two-sample chi-square test of
    homogeneity (scipy ``chi2_contingency`` on the 2 x k table of counts).

    Evidently's own ``chisquare`` is a goodness-of-fit test that takes the reference's
    proportions as exact: with two samples of similar size that underestimates the variance
    of the difference about 2x, and on same-distribution windows it fired on the category mix
    in 4 of 20 runs at p < 0.001 (benchmarks/drift_false_alarm.py). This test does not.

    Evidently's documented way to add a drift method (``StatTest`` + ``register_stattest``,
    exported by ``evidently.legacy.calculations.stattests``; ``ValueDrift(method=...)`` takes
    only a registered name). Registering again replaces the entry under the same name.
    """
    from evidently import ColumnType
    from evidently.legacy.calculations.stattests import StatTest, register_stattest

    register_stattest(
        StatTest(name="chi2_contingency", display_name="two-sample chi-square (homogeneity) p_value",
                 allowed_feature_types=[ColumnType.Categorical]),
        default_impl=_two_sample_chi2,
    )


def _embedding_method(cfg: DriftEmbeddings):
    from evidently.metrics.embeddings import DistanceDriftMethod, MMDDriftMethod, ModelDriftMethod, RatioDriftMethod

    cls = {"model": ModelDriftMethod, "mmd": MMDDriftMethod, "ratio": RatioDriftMethod, "distance": DistanceDriftMethod}[cfg.method]
    try:
        return cls(**dict(cfg.params or {}))
    except Exception as err:  # pydantic validation of the method's parameters
        raise ConfigError(f"drift config embeddings.params: {err}") from err


@contextlib.contextmanager
def _plot_sample(rows: int):
    """Evidently draws its embedding plot with t-SNE on up to SAMPLE_CONSTANT rows per side.

    Evidently 0.7.23 has no option for it (``EmbeddingsDrift`` takes a name and a drift method
    only; the legacy metric reads this module constant), hence the patch: t-SNE on 500 rows per
    side (the windows' cap) took 6.7 s per report here, on 100 per side 0.6 s (docs/monitoring.md).
    Also pins OpenMP/BLAS to one thread meanwhile: sklearn's Barnes-Hut t-SNE on a busy
    machine took 50 s instead of 0.8 s for 142 rows with the default thread count.
    """
    import evidently.legacy.metrics.data_drift.embeddings_drift as module
    from threadpoolctl import threadpool_limits

    old = module.SAMPLE_CONSTANT
    module.SAMPLE_CONSTANT = int(rows)
    try:
        with threadpool_limits(1):
            yield
    finally:
        module.SAMPLE_CONSTANT = old


def _feature_check(name: str, column: str, kind: str, value: float, method: str, threshold: float) -> dict:
    p_value = method in P_VALUE_METHODS
    drifted = bool(value < threshold) if p_value else bool(value > threshold)
    rule = "p-value < threshold" if p_value else "distance > threshold"
    return {"name": f"{name}.{column}", "kind": "feature", "window": name, "column": column, "feature_type": kind,
            "method": method, "score": float(value), "threshold": float(threshold), "rule": rule, "drifted": drifted}


def _compare(name: str, ref: pd.DataFrame, cur: pd.DataFrame, columns: list[str], cfg: DriftConfig,
             html: Path | None, extra_numeric: tuple[str, ...] = ()) -> list[dict]:
    """Evidently on one window pair (queries or products): feature checks + embedding check."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift

    register_two_sample_chi2()
    f = cfg.features
    threshold = float(f.threshold)
    emb_cols = [c for c in ref.columns if c.startswith(EMB_PREFIX)]
    if [c for c in cur.columns if c.startswith(EMB_PREFIX)] != emb_cols:
        from vsearch.schema import DataError

        raise DataError(name, "reference and current embeddings have different dimensions (another model?)")
    categorical = [c for c in columns if not pd.api.types.is_numeric_dtype(ref[c])]
    numerical = [c for c in (*columns, *extra_numeric) if c not in categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical, embeddings={name: emb_cols})
    method_of = {c: f.cat_method if c in categorical else f.num_method for c in (*columns, *extra_numeric)}
    metrics = [ValueDrift(column=c, method=method_of[c], threshold=threshold) for c in (*columns, *extra_numeric)]
    emb_cfg = cfg.embeddings
    if html is not None:
        metrics.append(EmbeddingsDrift(embeddings_name=name, drift_method=_embedding_method(emb_cfg)))
    keep = [*columns, *extra_numeric, *emb_cols]
    report = Report(metrics)
    with _plot_sample(emb_cfg.plot_sample):
        snapshot = report.run(
            current_data=Dataset.from_pandas(cur[keep].reset_index(drop=True), data_definition=definition),
            reference_data=Dataset.from_pandas(ref[keep].reset_index(drop=True), data_definition=definition),
        )
    values = {m["config"].get("column"): m["value"] for m in snapshot.dict()["metrics"] if m["config"].get("column")}
    checks = [_feature_check(name, c, "categorical" if c in categorical else "numerical", values[c], method_of[c], threshold)
              for c in columns]
    # The decision: Evidently's drift method on the windows (deterministic; the report shows the same score).
    score, drifted, method_name = _embedding_method(emb_cfg)(cur[emb_cols].copy(), ref[emb_cols].copy())
    checks.append({"name": f"{name}.embeddings", "kind": "embedding", "window": name, "method": method_name,
                   "score": float(score), "threshold": (emb_cfg.params or {}).get("threshold"),
                   "rule": "score > threshold" if not (emb_cfg.params or {}).get("bootstrap") else "bootstrap test",
                   "drifted": bool(drifted), "rows": [len(ref), len(cur)]})
    if html is not None:
        snapshot.save_html(str(html))
    return checks


def _health(ref_meta: dict, ref_q: pd.DataFrame, cur_q: pd.DataFrame, cfg: DriftConfig) -> list[dict]:
    h = cfg.health
    threshold = float(ref_meta["low_confidence_threshold"])
    ref_mean, cur_mean = float(ref_q[HEALTH_COLUMN].mean()), float(cur_q[HEALTH_COLUMN].mean())
    ref_low, cur_low = float((ref_q[HEALTH_COLUMN] < threshold).mean()), float((cur_q[HEALTH_COLUMN] < threshold).mean())
    max_drop, max_rise = float(h.max_mean_top1_drop), float(h.max_low_confidence_increase)
    return [
        {"name": "health.mean_top1_similarity", "kind": "health", "reference": ref_mean, "current": cur_mean,
         "score": ref_mean - cur_mean, "threshold": max_drop, "rule": "drop > threshold", "drifted": ref_mean - cur_mean > max_drop},
        {"name": "health.low_confidence_share", "kind": "health", "reference": ref_low, "current": cur_low,
         "low_confidence_threshold": threshold, "score": cur_low - ref_low, "threshold": max_rise,
         "rule": "increase > threshold", "drifted": cur_low - ref_low > max_rise},
    ]


def compare_windows(ref: tuple[dict, pd.DataFrame, pd.DataFrame], cur: tuple[dict, pd.DataFrame, pd.DataFrame],
                    cfg: DriftConfig, html_dir: Path | None = None) -> dict:
    """All checks on two loaded snapshots (``load_snapshot`` tuples); ``html_dir`` None skips the HTML."""
    ref_meta, ref_q, ref_p = ref
    cur_meta, cur_q, cur_p = cur
    f = cfg.features
    q_cols = list(f.query_columns or DriftFeatures().query_columns)
    p_cols = list(f.product_columns or DriftFeatures().product_columns)
    checks = _compare("queries", ref_q, cur_q, q_cols, cfg, html_dir / REPORT_HTML["queries"] if html_dir else None,
                      extra_numeric=(HEALTH_COLUMN,))
    checks += _compare("products", ref_p, cur_p, p_cols, cfg, html_dir / REPORT_HTML["products"] if html_dir else None)
    checks += _health(ref_meta, ref_q, cur_q, cfg)
    drifted = [c["name"] for c in checks if c["drifted"]]
    return {
        "drift": bool(drifted),
        "drifted_checks": drifted,
        "summary": {kind: any(c["drifted"] for c in checks if c["kind"] == kind) for kind in ("embedding", "feature", "health")},
        "checks": checks,
        "reference": {k: ref_meta.get(k) for k in ("model_version", "data", "data_fingerprint", "window", "queries", "products")},
        "current": {k: cur_meta.get(k) for k in ("model_version", "data", "data_fingerprint", "window", "queries", "products")},
    }


def _is_data_dir(path: Path) -> bool:
    return (path / "catalog.parquet").is_file() and (path / "interactions.parquet").is_file()


def detect_drift(reference: str | os.PathLike, current: str | os.PathLike, out_dir: str | os.PathLike,
                 cfg: DriftConfig | None = None, *, model: str | os.PathLike | None = None,
                 since: str | None = None, until: str | None = None, html: bool = True,
                 model_uri: str | None = None, current_uri: str | None = None) -> dict:
    """Compare ``current`` with ``reference`` and publish drift.json (+ HTML) to ``out_dir``.

    Args:
        reference: a reference snapshot folder (``build_drift_reference``'s artifact); a model
            folder with ``drift_reference/`` inside, the older layout, is still read.
        current: a snapshot folder, or a data folder: then it is snapshotted here with
            ``model`` (default: the reference's model), the same way as the reference.
        since, until: window of the current data folder (event_timestamp, ISO).
        html: write the Evidently HTML reports (their t-SNE plots cost seconds).
    """
    cfg = cfg or load_drift_config()
    ref = load_snapshot(reference)
    current = Path(current)
    out = artifacts.check_out(out_dir, [reference, current, model], ours=(DRIFT_FILE,))
    with artifacts.staged(out) as staging:
        if _is_data_dir(current):
            # The model that embedded the reference: given, the reference's own model folder, or the one it records.
            own = Path(reference) if (Path(reference) / model_folder.CONFIG_FILE).is_file() else None
            model_dir = model or own or ref[0].get("model_dir")
            if model_dir is not None and not (Path(model_dir) / model_folder.CONFIG_FILE).is_file():
                from vsearch.schema import DataError

                raise DataError(model_dir, "the model that embeds the current window is not a vsearch model folder; pass --model")
            if model_dir is None:
                raise ConfigError("the current window is a data folder: name the model that embeds it with --model")
            s = cfg.sample
            build_snapshot(current, staging / "current_snapshot", model_dir=model_dir, record_model_dir=model_uri,
                           data_uri=current_uri, max_queries=int(s.max_queries),
                           max_products=int(s.max_products), seed=int(s.seed), since=since, until=until,
                           low_confidence_threshold=ref[0]["low_confidence_threshold"])
            cur = load_snapshot(staging / "current_snapshot")
        else:
            cur = load_snapshot(current)
        if ref[0].get("model_version") and cur[0].get("model_version") and ref[0]["model_version"] != cur[0]["model_version"]:
            from vsearch.schema import DataError

            raise DataError(current, "the windows were embedded by different models", detail=f"{ref[0]['model_version']} vs {cur[0]['model_version']}")
        result = compare_windows(ref, cur, cfg, staging if html else None)
        result["config"] = dataclasses.asdict(cfg)
        (staging / DRIFT_FILE).write_text(json.dumps(result, indent=2, default=_json_default))
        if html:
            (staging / SUMMARY_HTML).write_text(summary_html(result))
    return result


def summary_html(result: dict, reports: dict[str, str] | None = None) -> str:
    """The verdict and every check (red = drifted); self-contained (inline CSS, no scripts).

    Args:
        result: ``detect_drift``'s result.
        reports: how to name Evidently's reports: ``{"queries": ..., "products": ...}``. None
            (the report folder): links to the files beside the page. Otherwise plain text (the
            KFP UI cannot follow a relative link from one artifact to another).
    """

    rows = "".join(
        f'<tr class="{"drift" if c["drifted"] else "ok"}"><td>{escape(c["name"])}</td><td>{escape(c["kind"])}</td>'
        f'<td>{c["score"]:.4g}</td><td>{escape(str(c["rule"]))} {escape(str(c["threshold"]))}</td>'
        f'<td>{"DRIFT" if c["drifted"] else "ok"}</td></tr>'
        for c in result["checks"]
    )
    verdict = "DRIFT: " + ", ".join(result["drifted_checks"]) if result["drift"] else "No drift"
    ref, cur = result["reference"], result["current"]
    if reports is None:
        links = " &middot; ".join(f'<a href="{escape(f)}">{side}</a>' for side, f in REPORT_HTML.items())
    else:
        links = " &middot; ".join(f"{side}: {escape(reports[side])}" for side in REPORT_HTML)
    return (
        head("vsearch drift")
        + f'<h1>Drift: current vs reference window</h1><p class="verdict">{escape(verdict)}</p>'
        f"<p>reference: {escape(str(ref.get('data')))} (model {escape(str(ref.get('model_version')))}, "
        f"{ref.get('queries')} queries, {ref.get('products')} products)<br>current: {escape(str(cur.get('data')))} "
        f"({cur.get('queries')} queries, {cur.get('products')} products)</p>"
        f"<p>Evidently reports: {links}</p>"
        f'<table class="plain"><thead><tr><th>check</th><th>kind</th><th>score</th><th>rule</th><th>result</th></tr></thead><tbody>{rows}</tbody></table>'
        "</main></body></html>\n"
    )


def _json_default(value: Any):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_result(result: dict) -> str:
    lines = []
    for c in result["checks"]:
        lines.append(f"  [{'DRIFT' if c['drifted'] else 'ok   '}] {c['name']:<34} score {c['score']:.4g} ({c['rule']}, threshold {c['threshold']})")
    verdict = "DRIFT: " + ", ".join(result["drifted_checks"]) if result["drift"] else "no drift"
    return "\n".join(lines + [verdict])


def main(argv: list[str] | None = None) -> int:
    """``vsearch drift --reference DIR --current DIR --out DIR`` (exit 0 no drift, 3 drift), or
    ``vsearch drift snapshot --model DIR --data DIR --out DIR`` to snapshot a window."""
    argv = list(argv or [])
    if argv[:1] == ["snapshot"]:
        parser = argparse.ArgumentParser(prog="vsearch drift snapshot", description="Snapshot a window (data folder) under a model.")
        parser.add_argument("--model", required=True)
        parser.add_argument("--data", required=True)
        parser.add_argument("--out", required=True)
        parser.add_argument("--since")
        parser.add_argument("--until")
        parser.add_argument("--config", default="drift")
        args = parser.parse_args(argv[1:])
        s = load_drift_config(args.config).sample
        artifacts.check_out(args.out, [args.data, args.model], ours=("snapshot.json",))
        meta = build_snapshot(args.data, args.out, model_dir=args.model, max_queries=int(s.max_queries),
                              max_products=int(s.max_products), seed=int(s.seed), since=args.since, until=args.until)
        print(json.dumps(meta))
        return 0
    parser = argparse.ArgumentParser(prog="vsearch drift", description="Evidently drift report: exit 0 (no drift) or 3 (drift).")
    parser.add_argument("--reference", required=True, help="reference snapshot folder (build_drift_reference's output; "
                        "a model folder with drift_reference/, the older layout, is still read)")
    parser.add_argument("--current", required=True, help="snapshot folder, or a data folder (snapshotted with --model)")
    parser.add_argument("--out", required=True, help="folder for drift.json and the HTML reports (replaced atomically)")
    parser.add_argument("--model", help="model that embeds a current data folder (default: the reference's model)")
    parser.add_argument("--since", help="current window start (event_timestamp, ISO, UTC)")
    parser.add_argument("--until", help="current window end (exclusive)")
    parser.add_argument("--config", default="drift", help="preset name or YAML path (default: drift)")
    parser.add_argument("--no-html", action="store_true", help="skip the Evidently HTML (and its t-SNE plots)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. embeddings.params.threshold=0.7")
    args = parser.parse_args(argv)
    cfg = load_drift_config(args.config, args.overrides)
    result = detect_drift(args.reference, args.current, args.out, cfg, model=args.model, since=args.since, until=args.until,
                          html=not args.no_html)
    print(format_result(result))
    print(f"report: {Path(args.out) / DRIFT_FILE}")
    return EXIT_DRIFT if result["drift"] else 0
