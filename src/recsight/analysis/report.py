"""The behavior report: run the sections, collect typed results into `AnalysisReport`, and write
``report.json`` (with ``report.schema.json``, its JSON Schema) and a self-contained
``report.html`` (Plotly inlined, opens offline).

Schema of report.json: `AnalysisReport` (see README.md in this package). Each section field is
null when the section was not requested or is not available for this log; `sections` says
which, why, and how long each took.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import plotly.io as pio
import plotly.offline
from pydantic import BaseModel

from recsight.analysis.activity import Activity, activity
from recsight.analysis.charts import ChartInfo, build_charts
from recsight.analysis.funnel import (
    CTR,
    Funnel,
    RecommendationCTR,
    ctr,
    funnel,
    recommendation_ctr,
)
from recsight.analysis.groups import GroupPrivacy
from recsight.analysis.groups import summary as group_summary
from recsight.analysis.interests import Interests, interests
from recsight.analysis.overview import Overview, overview
from recsight.analysis.popularity import Popularity, popularity
from recsight.analysis.private_counts import DPCounts, dp_counts
from recsight.analysis.quality import DataQuality, data_quality
from recsight.analysis.ratings import Ratings, ratings
from recsight.analysis.retention import Retention, retention
from recsight.analysis.segments import Segments, segments
from recsight.analysis.sessions import Sessions, sessions
from recsight.analysis.source import AnalysisSource, NotAvailable
from recsight.errors import InputError, NeedsTimestampsError

SCHEMA_VERSION = "1"

#: Report sections in order: name -> {report field: function computing it}.
SECTIONS: dict[str, dict[str, Callable[[AnalysisSource], BaseModel]]] = {
    "overview": {"overview": overview},
    "quality": {"quality": data_quality},
    "activity": {"activity": activity},
    "popularity": {"popularity": popularity},
    "funnel": {"funnel": funnel, "ctr": ctr, "recommendation_ctr": recommendation_ctr},
    "sessions": {"sessions": sessions},
    "retention": {"retention": retention},
    "interests": {"interests": interests},
    "segments": {"segments": segments},
    "ratings": {"ratings": ratings},
    "private_counts": {"dp_counts": dp_counts},
}

#: Sections computed only when named (``recsight analyze --dp-epsilon`` names this one).
OPT_IN = ("private_counts",)

TITLES = {
    "overview": "Overview",
    "quality": "Data quality",
    "activity": "Activity over time",
    "popularity": "Popularity and long tail",
    "funnel": "Funnels and CTR",
    "sessions": "Sessions",
    "retention": "Retention",
    "interests": "Interests",
    "segments": "Segments",
    "ratings": "Ratings",
    "private_counts": "Differentially private counts",
}


class SectionStatus(BaseModel):
    status: Literal["ok", "not_available"]
    reason: str | None = None  # why (parts of) the section are not available
    seconds: float


class AnalysisReport(BaseModel):
    """Everything in report.json; every figure the HTML report shows comes from here."""

    schema_version: str = SCHEMA_VERSION
    source: str
    generated_at: str  # ISO-8601 UTC
    timezone: str
    sections: dict[str, SectionStatus]  # requested sections, in report order
    overview: Overview | None = None
    quality: DataQuality | None = None
    activity: Activity | None = None
    popularity: Popularity | None = None
    funnel: Funnel | None = None
    ctr: CTR | None = None
    recommendation_ctr: RecommendationCTR | None = None  # when the service served lists
    sessions: Sessions | None = None
    retention: Retention | None = None
    interests: Interests | None = None
    segments: Segments | None = None
    ratings: Ratings | None = None
    dp_counts: DPCounts | None = None  # user-level DP tables (`recsight.analysis.private_counts`)
    # the minimum group size applied and the rows it suppressed (`recsight.analysis.groups`)
    privacy: GroupPrivacy | None = None
    charts: list[ChartInfo] = []  # each chart's id, title and one-line takeaway


def parse_sections(spec: str | list[str] | None) -> list[str]:
    """Section names from "a,b" or a list (None: all but the opt-in ones), validated, in
    report order."""
    if spec is None:
        return [n for n in SECTIONS if n not in OPT_IN]
    names = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in s.split(",")]
    names = [n.strip().lower() for n in names if n.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if bad:
        raise InputError(f"--sections: unknown {bad}; expected some of {', '.join(SECTIONS)}")
    return [n for n in SECTIONS if n in names]


def analyze(
    src: AnalysisSource,
    sections: str | list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> AnalysisReport:
    """Run the chosen sections (default: all). A section that does not apply to this log
    (no timestamps, no ratings, ...) is recorded as not available instead of failing.

    `options` passes keyword arguments to a report field's function, e.g.
    ``{"funnel": {"stages": ["view", "purchase"]}, "sessions": {"gap_minutes": 10},
    "segments": {"describe": my_describer}}``.
    """
    options = options or {}
    unknown = set(options) - {f for fields in SECTIONS.values() for f in fields}
    if unknown:
        raise InputError(f"analysis options for unknown report fields {sorted(unknown)}")
    names = parse_sections(sections)
    report = AnalysisReport(
        source=src.name,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        timezone=src.timezone,
        sections={},
    )
    # intermediates that several queries read are stored once, and dropped at the end
    with src.scope():
        for name in names:
            if progress:
                progress(name)
            t0 = time.perf_counter()
            reasons = []
            for field, fn in SECTIONS[name].items():
                try:
                    setattr(report, field, fn(src, **options.get(field, {})))
                except (NotAvailable, NeedsTimestampsError) as exc:
                    reasons.append(f"{field}: {exc}")
            ok = any(getattr(report, f) is not None for f in SECTIONS[name])
            report.sections[name] = SectionStatus(
                status="ok" if ok else "not_available",
                reason="; ".join(reasons) or None,
                seconds=round(time.perf_counter() - t0, 3),
            )
    report.privacy = group_summary(src.privacy)
    report.charts = [info for info, _ in build_charts(report)]
    return report


def report_schema() -> dict:
    """The JSON Schema of report.json."""
    schema = AnalysisReport.model_json_schema()
    schema["$id"] = f"https://recsight.dev/schemas/analysis-report-{SCHEMA_VERSION}.json"
    return schema


def write_report(report: AnalysisReport, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.schema.json and report.html into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "report.json",
        "schema": out / "report.schema.json",
        "html": out / "report.html",
    }
    paths["json"].write_text(report.model_dump_json(indent=1), encoding="utf-8")
    paths["schema"].write_text(json.dumps(report_schema(), indent=1), encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths


# -- HTML ----------------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>recsight behavior report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em;
       color: #222; }}
nav ol {{ columns: 2; }}
.takeaway {{ font-weight: 600; margin: 0.2em 0 0.6em; }}
.na {{ color: #a60; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }}
.chart {{ margin-bottom: 1.5em; }}
</style>
<script type="text/javascript">{plotlyjs}</script>
</head><body>
<h1>Behavior report</h1>
<p>Source: <code>{source}</code> · generated {generated} · local time zone {tz}</p>
<p id="privacy">{privacy}</p>
<nav><h2>Contents</h2><ol>{toc}</ol></nav>
{body}
</body></html>
"""


def _table(rows: list[tuple[str, object]] | list[dict]) -> str:
    if not rows:
        return ""
    if isinstance(rows[0], dict):
        cols = list(rows[0])
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
            for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def _facts(r: AnalysisReport, section: str) -> str:
    """Tables of the figures that are not charts."""
    if section == "overview" and r.overview:
        o = r.overview
        return _table([
            ("events", o.n_events), ("users", o.n_users), ("items", o.n_items),
            ("catalog items", o.n_catalog_items), ("first event", o.time_min),
            ("last event", o.time_max), ("span (days)", o.span_days), ("sparsity", o.sparsity),
            ("events per user (median / p90)",
             f"{o.events_per_user.q['p50']:g} / {o.events_per_user.q['p90']:g}"),
            ("events per item (median / p90)",
             f"{o.events_per_item.q['p50']:g} / {o.events_per_item.q['p90']:g}"),
        ])  # fmt: skip
    if section == "quality" and r.quality:
        q = r.quality
        rows = [
            ("duplicate rows", q.duplicates.count),
            ("items not in catalog", q.items_not_in_catalog),
        ]
        rows += [(f"missing {k}", v) for k, v in q.missing.items() if v]
        rows += [(k.replace("_", " "), v.count) for k, v in q.out_of_range.items()]
        rows += [(f"timestamps: {k.replace('_', ' ')}", v.count) for k, v in q.timestamps.items()]
        bots = "n/a (no timestamps)" if q.bots is None else len(q.bots)
        rows.append(("suspected bots", bots))
        out = _table(rows)
        if q.bots:
            out += f"<p>Suspected bots ({html.escape(q.bot_rule)}):</p>"
            out += _table([b.model_dump() for b in q.bots[:10]])
        for k, v in q.timestamps.items():
            if v.examples:
                out += f"<p>Examples, {html.escape(k)}:</p>" + _table(v.examples)
        return out
    if section == "funnel" and r.funnel:
        out = _table([s.model_dump() for s in r.funnel.stages])
        if r.funnel.side_branch:
            out += _table([r.funnel.side_branch.model_dump()])
        if r.ctr:
            out += "<p>Top items by CTR lower bound:</p>" + _table(
                [x.model_dump() for x in r.ctr.top_items[:10]]
            )
        return out
    if section == "interests" and r.interests and r.interests.associations:
        return "<p>Most associated item pairs (lift over recent items):</p>" + _table(
            [p.model_dump() for p in r.interests.associations[:10]]
        )
    if section == "private_counts" and r.dp_counts:
        d = r.dp_counts
        totals: dict[str, int] = {}
        for c in d.events_by_type_day:  # sums of noisy cells: post-processing, no extra cost
            totals[c.event_type] = totals.get(c.event_type, 0) + c.count
        return (
            f"<p>{html.escape(d.statement)}</p>"
            + _table([s.model_dump() for s in d.funnel])
            + "<p>Events by type over all days (sums of the noisy daily counts):</p>"
            + _table(list(totals.items()))
        )
    if section == "segments" and r.segments:
        return (
            "<ul>"
            + "".join(f"<li>{html.escape(s.description)}</li>" for s in r.segments.segments)
            + "</ul>"
        )
    return ""


def _privacy_line(p: GroupPrivacy | None) -> str:
    if p is None or p.min_group_size <= 1:
        return "No minimum group size: figures may describe single users."
    line = (
        f"Minimum group size {p.min_group_size}: {p.suppressed_rows:,} rows describing fewer "
        f'users were suppressed or merged into "other"'
    )
    if p.suppressed_by_place:
        line += " (" + ", ".join(f"{k} {v:,}" for k, v in p.suppressed_by_place.items()) + ")"
    return line + ("; examples of single users shown on request." if p.show_examples else ".")


def render_html(report: AnalysisReport) -> str:
    """One self-contained HTML page: contents, per-section figures, charts with takeaways."""
    charts = build_charts(report)
    toc, body = [], []
    for name, status in report.sections.items():
        title = TITLES[name]
        toc.append(f'<li><a href="#{name}">{title}</a></li>')
        parts = [f'<section id="{name}"><h2>{title}</h2>']
        if status.reason:
            parts.append(f'<p class="na">Not available: {html.escape(status.reason)}</p>')
        parts.append(_facts(report, name))
        for info, fig in charts:
            if info.section != name:
                continue
            div = pio.to_html(
                fig, include_plotlyjs=False, full_html=False, div_id=f"chart-{info.id}",
                config={"displaylogo": False, "responsive": True},
            )  # fmt: skip
            parts.append(
                f'<div class="chart" data-chart="{info.id}"><p class="takeaway">'
                f"{html.escape(info.takeaway)}</p>{div}</div>"
            )
        parts.append("</section>")
        body.append("\n".join(parts))
    return _PAGE.format(
        plotlyjs=plotly.offline.get_plotlyjs(),
        source=html.escape(report.source),
        generated=html.escape(report.generated_at),
        tz=html.escape(report.timezone),
        privacy=html.escape(_privacy_line(report.privacy)),
        toc="".join(toc),
        body="\n".join(body),
    )
