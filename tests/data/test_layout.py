"""The canonical Parquet layout: streamed writing, export from a store, reading in place."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from recsight.analysis import from_store, funnel, overview
from recsight.cli.analysis import register as register_analysis
from recsight.cli.data import register as register_data
from recsight.data import layout
from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.layout import LayoutWriter, export_store, open_store, read_manifest
from recsight.data.store import Store
from recsight.errors import InputError


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A small generated shop in a store (Berlin declared) and its exported layout."""
    folder = tmp_path_factory.mktemp("layout")
    generate_shop(folder / "gen", n_users=150, n_items=60, n_days=10, seed=3)
    db = folder / "shop.duckdb"
    with Store(db) as store:
        ingest(store, folder / "gen", tz="Europe/Berlin")
        export_store(store, folder / "lay")
    return db, folder / "lay"


def _batch(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event_type", "value"])


def test_writer_partitions_by_utc_date_keeps_seq_and_vocabulary(tmp_path):
    t = pd.Timestamp
    first = _batch(
        [
            ("u1", "a", t("2026-03-02 23:30"), "pv", None),  # naive: read as UTC
            ("u2", "b", t("2026-03-01 10:00"), "buy", 2.0),
            ("u1", "b", None, "click", None),
        ]
    )
    # 00:30 in Berlin on the 3rd is still the 2nd in UTC
    second = _batch([("u3", "a", t("2026-03-03 00:30", tz="Europe/Berlin"), "view", None)])
    second["timestamp"] = second["timestamp"].astype("datetime64[ms, Europe/Berlin]")
    with LayoutWriter(tmp_path / "d", timezone="Europe/Berlin", row_group_rows=1) as w:
        w.write(first)
        w.write(second)
        w.write_items(pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["x", "y", "y"]}))
    m = read_manifest(tmp_path / "d")
    assert (m.n_events, m.n_users, m.n_items) == (4, 3, 2)
    assert (m.n_catalog_items, m.n_catalog_users) == (3, 0)
    assert m.event_types == {"view": 2, "click": 1, "purchase": 1}
    assert (m.time_min, m.time_max) == ("2026-03-01T10:00:00Z", "2026-03-02T23:30:00Z")
    assert m.timezone == "Europe/Berlin"
    by_part = {}
    for p in (tmp_path / "d/events").glob("*/*.parquet"):
        by_part.setdefault(p.parent.name, []).extend(pq.read_table(p)["seq"].to_pylist())
    assert {k: sorted(v) for k, v in by_part.items()} == {
        "event_date=2026-03-01": [1],
        "event_date=2026-03-02": [0, 3],
        "event_date=__HIVE_DEFAULT_PARTITION__": [2],
    }
    with open_store(tmp_path / "d") as s:
        ev = s.events_frame()
        assert ev.seq.tolist() == [0, 1, 2, 3]
        assert ev.event_type.tolist() == ["view", "purchase", "click", "view"]
        assert ev.raw_event_type.tolist() == ["pv", "buy", "click", "view"]
        assert ev.timestamp[3] == pd.Timestamp("2026-03-02 23:30")  # naive UTC, like the store
        assert pd.isna(ev.timestamp[2])
        # ids in order of first appearance, then catalog-only ids
        assert s.user_index().ids.tolist() == ["u1", "u2", "u3"]
        assert s.item_index().ids.tolist() == ["a", "b", "c"]
        assert s.timezone == "Europe/Berlin"


def test_writer_bounds_open_files_and_buffers(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    days = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 9 * 86400, n), "s")
    frame = _batch(
        {
            "user_id": [f"u{i % 17}" for i in range(n)],
            "item_id": [f"i{i % 23}" for i in range(n)],
            "timestamp": days,
            "event_type": "view",
            "value": None,
        }
    )
    with LayoutWriter(tmp_path / "d", row_group_rows=20, max_open=2, max_buffered_rows=50) as w:
        for lo in range(0, n, 100):
            w.write(frame.iloc[lo : lo + 100])
    files = list((tmp_path / "d/events").glob("*/*.parquet"))
    assert len({f.parent for f in files}) == 9 and len(files) > 9  # dates reopened in new parts
    with open_store(tmp_path / "d") as s:
        ev = s.events_frame()
    assert ev.seq.tolist() == list(range(n))
    assert ev.user_id.tolist() == frame.user_id.tolist()
    assert (ev.timestamp.to_numpy() == frame.timestamp.to_numpy()).all()


def test_export_reads_back_like_the_store(shop):
    db, lay = shop
    with Store(db, read_only=True) as st, open_store(lay) as ls:
        a, b = st.info(), ls.info()
        assert {**a.to_dict(), "db": ""} == {**b.to_dict(), "db": ""}
        x, y = st.interactions(), ls.interactions()
        for f in ("user_idx", "item_idx", "value", "event_type", "seq", "timestamp"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
        assert x.users == y.users and x.items == y.items and x.event_types == y.event_types
        pd.testing.assert_frame_equal(x.item_features, y.item_features, check_dtype=False)
        s1, s2 = from_store(st), from_store(ls)
        assert s2.timezone == "Europe/Berlin"
        assert overview(s1) == overview(s2)
        assert funnel(s1) == funnel(s2)


def test_ingest_reads_the_layout_back(shop, tmp_path):
    db, lay = shop
    with Store(tmp_path / "copy.duckdb") as c:
        r = ingest(c, lay)
        copied = c.events_frame()
    with Store(db, read_only=True) as st:
        orig = st.events_frame()
    assert r.kept == len(orig) and not r.dropped
    pd.testing.assert_frame_equal(orig, copied)


def test_bad_layouts_are_named(tmp_path):
    with pytest.raises(InputError, match="no such dataset folder"):
        open_store(tmp_path / "missing")
    (tmp_path / "half/events").mkdir(parents=True)
    with pytest.raises(InputError, match="not finished writing"):
        open_store(tmp_path / "half")
    with LayoutWriter(tmp_path / "new") as w:
        w.write(_batch([("u", "i", pd.Timestamp("2026-01-01"), "view", None)]))
    m = json.loads((tmp_path / "new/manifest.json").read_text())
    (tmp_path / "new/manifest.json").write_text(json.dumps({**m, "schema_version": "99"}))
    with pytest.raises(InputError, match="layout version 99 is newer"):
        open_store(tmp_path / "new")
    with pytest.raises(InputError, match="already holds a dataset layout"):
        LayoutWriter(tmp_path / "new")
    w = LayoutWriter(tmp_path / "x")
    with pytest.raises(InputError, match="required column 'item_id' is missing"):
        w.write(pd.DataFrame({"user_id": ["u"], "event_type": ["view"]}))
    with pytest.raises(InputError, match="column 'user_id' has 1 null"):
        w.write(pd.DataFrame({"user_id": [None], "item_id": ["i"], "event_type": ["view"]}))


def test_an_unfinished_write_leaves_no_manifest(tmp_path):
    with pytest.raises(RuntimeError), LayoutWriter(tmp_path / "d") as w:
        w.write(_batch([("u", "i", pd.Timestamp("2026-01-01"), "view", None)]))
        raise RuntimeError("interrupted")
    assert not (tmp_path / "d" / layout.MANIFEST).exists()


def test_cli_export_then_analyze_and_info_on_events(shop, tmp_path):
    db, _ = shop
    app = typer.Typer()
    register_data(app)
    register_analysis(app)
    runner = CliRunner()
    res = runner.invoke(app, ["export", "--db", str(db), "--out", str(tmp_path / "l"), "--json"])
    assert res.exit_code == 0, res.output
    n = json.loads(res.output)["n_events"]
    res = runner.invoke(app, ["info", "--events", str(tmp_path / "l"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_events"] == n
    res = runner.invoke(
        app,
        ["analyze", "--events", str(tmp_path / "l"), "--out", str(tmp_path / "r")]
        + ["--sections", "overview", "-q"],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r/report.json").read_text())
    assert rep["overview"]["n_events"] == n
    res = runner.invoke(app, ["info", "--events", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such dataset folder" in res.output


def test_a_log_without_timestamps_round_trips(tmp_path):
    src = tmp_path / "pairs.csv"
    src.write_text("user_id,item_id\nu1,a\nu1,b\nu2,a\n")
    with Store(tmp_path / "a.duckdb") as store:
        ingest(store, src)
        export_store(store, tmp_path / "lay")
    assert read_manifest(tmp_path / "lay").time_min is None
    with Store(tmp_path / "b.duckdb") as store:
        report = ingest(store, tmp_path / "lay")
        assert report.kept == 3 and not report.dropped  # was: all dropped, missing_timestamp
        assert store.con.execute("SELECT count(*) FROM events").fetchone()[0] == 3
