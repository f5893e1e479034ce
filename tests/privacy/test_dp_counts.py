"""User-level DP counts for the report: the per-user bound, the noise scale, the report."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from recsight.analysis import from_store
from recsight.analysis.funnel import funnel
from recsight.analysis.private_counts import capped_type_day_counts, dp_counts, funnel_stage_users
from recsight.cli.analysis import register
from recsight.errors import InputError
from tests.analysis.analysis_stores import build_store

DAY = 86_400


def _events(heavy: bool) -> list[tuple]:
    """Three light users over two days, plus (optionally) a heavy user with 40 views on day
    0 and 5 purchases on day 1."""
    ev = []
    for u in range(3):
        ev += [(f"u{u}", "a", 10 + u, "view", 1), (f"u{u}", "b", 20 + u, "view", 1)]
        ev += [(f"u{u}", "b", DAY + 30 + u, "purchase", 1)]
    if heavy:
        ev += [("hv", f"i{k}", 100 + k, "view", 1) for k in range(40)]
        ev += [("hv", "a", DAY + 100 + k, "purchase", 1) for k in range(5)]
    return ev


def _cells(df) -> dict[tuple[str, str], int]:
    return {(str(d)[:10], t): int(n) for d, t, n in zip(df.day, df.event_type, df.n, strict=True)}


def test_each_user_moves_the_type_day_table_by_at_most_the_cap(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        build_store(tmp_path / "a", _events(True)) as with_heavy,
        build_store(tmp_path / "b", _events(False)) as without,
    ):
        a = _cells(capped_type_day_counts(from_store(with_heavy), 10))
        b = _cells(capped_type_day_counts(from_store(without), 10))
    assert b == {("2024-01-01", "view"): 6, ("2024-01-02", "purchase"): 3}
    # the heavy user's first 10 events by time are all views of day 0
    assert a == {("2024-01-01", "view"): 16, ("2024-01-02", "purchase"): 3}
    l1 = sum(abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b))
    assert l1 == 10


def test_funnel_counts_are_the_funnel_sections_counts(tmp_path):
    with build_store(tmp_path, _events(True)) as store:
        src = from_store(store)
        assert (
            funnel_stage_users(src, ["view", "purchase"])
            == [s.users for s in funnel(src).stages]
            == [4, 4]
        )


def test_laplace_noise_has_the_stated_scale(tmp_path):
    # 60 users x 4 views a day for 5 days, and a purchase a day: cells far from 0
    ev = [
        (f"u{u}", f"i{k}", d * DAY + 60 * k + u, "view", 1)
        for u in range(60)
        for d in range(5)
        for k in range(4)
    ]
    ev += [(f"u{u}", "i0", d * DAY + 600 + u, "purchase", 1) for u in range(60) for d in range(5)]
    with build_store(tmp_path, ev) as store:
        src = from_store(store)
        exact = _cells(capped_type_day_counts(src, 25))
        errors, funnel_errors = [], []
        for seed in range(40):
            r = dp_counts(src, epsilon=1.0, max_events_per_user=25, seed=seed)
            errors += [c.count - exact[(c.day, c.event_type)] for c in r.events_by_type_day]
            funnel_errors.append(r.funnel[0].users - 60)
    assert r.budget == {"events_by_type_day": 0.5, "funnel": 0.5}
    assert r.noise_scale == {"events_by_type_day": 50.0, "funnel": 4.0}
    assert len(r.events_by_type_day) == 5 * 2  # the whole grid, every cell released
    # Laplace(b): mean |noise| = b; 400 draws put the sample mean within ~15%
    assert np.mean(np.abs(errors)) == pytest.approx(50.0, rel=0.15)
    assert abs(np.mean(errors)) < 10
    assert np.mean(np.abs(funnel_errors)) == pytest.approx(4.0, rel=0.35)
    assert "0.5" in r.statement and "capped at 25" in r.statement


def test_bad_settings_are_refused(tmp_path):
    with build_store(tmp_path, _events(False)) as store:
        src = from_store(store)
        with pytest.raises(InputError, match="--dp-epsilon"):
            dp_counts(src, epsilon=0)
        with pytest.raises(InputError, match="--dp-user-events"):
            dp_counts(src, epsilon=1, max_events_per_user=0)
        with pytest.raises(InputError, match="summing to 1"):
            dp_counts(src, epsilon=1, split={"events_by_type_day": 0.7, "funnel": 0.7})


def test_analyze_dp_epsilon_adds_the_private_section(tmp_path):
    (tmp_path / "s").mkdir()
    build_store(tmp_path / "s", _events(True)).close()
    db = str(tmp_path / "s" / "t.duckdb")
    app = typer.Typer()
    register(app)
    args = ["analyze", "--db", db, "--sections", "overview", "--json"]
    plain = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r0")])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["dp_counts"] is None
    out = tmp_path / "r1"
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--dp-epsilon", "2",
                                   "--dp-user-events", "10"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert list(report["sections"]) == ["overview", "private_counts"]
    d = report["dp_counts"]
    assert d["epsilon"] == 2 and sum(d["budget"].values()) == pytest.approx(2)
    assert d["max_events_per_user"] == 10 and d["unit"] == "user"
    assert [s["stage"] for s in d["funnel"]] == ["view", "purchase"]
    assert html.escape(d["statement"]) in (out / "report.html").read_text()
    bad = CliRunner().invoke(app, [*args, "--out", str(out), "--dp-epsilon", "-1"])
    assert bad.exit_code == 2 and "--dp-epsilon" in bad.output
