"""User-behavior analysis: typed report sections computed in the database with Ibis.

Start from a store: ``src = from_store(store)``, then ``analyze(src)`` for the full report
(``write_report`` writes report.html/report.json) or call one section, e.g. ``funnel(src)``.
``user_profile(src, user_id)`` is one user's profile, cheap enough to serve per request.
"""

from recsight.analysis.activity import Activity, activity
from recsight.analysis.funnel import CTR, Funnel, ctr, funnel, wilson_interval
from recsight.analysis.interests import Interests, category_profiles, interests
from recsight.analysis.overview import Overview, overview
from recsight.analysis.popularity import Popularity, gini, popularity, top_share
from recsight.analysis.profile import UserProfile, profile_summary, user_profile
from recsight.analysis.quality import DataQuality, data_quality, suspected_bots
from recsight.analysis.ratings import Ratings, ratings
from recsight.analysis.report import (
    SECTIONS,
    AnalysisReport,
    analyze,
    render_html,
    report_schema,
    write_report,
)
from recsight.analysis.retention import Retention, retention
from recsight.analysis.segments import Segments, describe_segment, segments
from recsight.analysis.sessions import Sessions, sessionized, sessions
from recsight.analysis.source import AnalysisSource, NotAvailable, from_store

__all__ = [
    "CTR",
    "SECTIONS",
    "Activity",
    "AnalysisReport",
    "AnalysisSource",
    "DataQuality",
    "Funnel",
    "Interests",
    "NotAvailable",
    "Overview",
    "Popularity",
    "Ratings",
    "Retention",
    "Segments",
    "Sessions",
    "UserProfile",
    "activity",
    "analyze",
    "category_profiles",
    "ctr",
    "data_quality",
    "describe_segment",
    "from_store",
    "funnel",
    "gini",
    "interests",
    "overview",
    "popularity",
    "profile_summary",
    "ratings",
    "render_html",
    "report_schema",
    "retention",
    "segments",
    "sessionized",
    "sessions",
    "suspected_bots",
    "top_share",
    "user_profile",
    "wilson_interval",
    "write_report",
]
