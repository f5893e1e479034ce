"""A catalog with text but no categories: interests, drift, profiles, segments, the dashboard,
category filters and explanations work on its topics, and say so."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from topic_stores import BagOfWordsEncoder, shop_without_categories

from recsight.analysis import NotAvailable, from_store, interests, segments, user_profile
from recsight.analysis.interests import category_counts
from recsight.data.store import Store
from recsight.llm.topics import build_topics
from recsight.models.registry import create_model
from recsight.serving.app import ServiceConfig, create_app
from recsight.serving.pipeline import History, Pipeline


@pytest.fixture(scope="module")
def topic_store(tmp_path_factory):
    """(store path, topic name per item id): the shop without categories, topics built."""
    db, _ = shop_without_categories(tmp_path_factory.mktemp("topics"), n_users=200)
    with Store(db) as store:
        src = from_store(store)
        assert src.interest_basis is None  # before topics: nothing to group interests by
        with pytest.raises(NotAvailable, match="topics from item text"):
            interests(src)
        build_topics(store, k=8, encoder=BagOfWordsEncoder())
        items = store.items_frame()
    return db, dict(zip(items.item_id, items.topic, strict=True))


def test_interests_drift_and_segments_use_topics(topic_store):
    db, topic_of = topic_store
    names = set(topic_of.values())
    with Store(db, read_only=True) as store:
        src = from_store(store)
        assert src.interest_basis == "topic"
        i = interests(src)
        assert i.basis == "topic" and i.n_categories == 8
        assert i.top_categories and {c.category for c in i.top_categories} <= names
        assert abs(sum(c.share for c in i.top_categories) - 1) < 1e-5  # all 8 shown
        assert i.drift_users > 0 and i.drift is not None
        assert set(i.transition_categories) - {"(other)"} <= names
        assert i.top_topics is None  # topics are the categories here, not beside them
        s = segments(src)
        assert s.basis == "topic"
        assert all(seg.top_categories and set(seg.top_categories) <= names for seg in s.segments)
        counts = category_counts(src)
        assert counts.basis == "topic" and {r.category for r in counts.rows} == names


def test_profile_and_persona_use_topics(topic_store):
    db, topic_of = topic_store
    with Store(db, read_only=True) as store:
        events = store.events_frame()
        uid = events.user_id.value_counts().index[0]
        p = user_profile(from_store(store), uid)
    mine = events[events.user_id == uid]
    assert p.basis == "topic"
    assert {c.category for c in p.top_categories} == {topic_of[i] for i in mine.item_id}
    top = p.top_categories[0]
    assert p.interest_summary.startswith(
        f"Interested mostly in the topics {top.category} ({top.share:.0%}) and "
    )
    assert p.drift is not None and p.early_top in topic_of.values()
    assert "before the end of the log" in p.interest_summary or "until the end" in (
        p.interest_summary
    )


def test_dashboard_filters_and_explanations_use_topics(topic_store, tmp_path):
    db, topic_of = topic_store
    with Store(db, read_only=True) as store:
        data = store.interactions()
        items = store.items_frame()
    create_model("itemknn").fit(data).save(tmp_path / "model")
    pipe = Pipeline.load(tmp_path / "model", items)
    events = store_events(db)
    user = events.user_id.value_counts().index[0]
    seen = events[events.user_id == user].item_id.tolist()
    label = topic_of[seen[-1]]
    n = len(seen)
    history = History(user_id=str(user), items=seen, types=["view"] * n, values=[None] * n)
    recs = pipe.recommend(history, k=5, category=label, explain=True)
    assert recs.items and all(topic_of[r.item_id] == label for r in recs.items)
    assert all(r.category == label for r in recs.items)
    # the explanation names the shared topic when the evidence shares it
    shared = [r for r in recs.items if any(topic_of[e["item_id"]] == label for e in r.evidence)]
    assert shared and all(f"(also {label})" in r.explanation for r in shared)

    live = tmp_path / "live.duckdb"
    live.write_bytes(db.read_bytes())
    app = create_app(ServiceConfig(model=tmp_path / "model", db=live, api_key="k"))
    with TestClient(app) as client:
        dash = client.get("/api/dashboard").json()
        assert dash["categories"]["basis"] == "topic"
        assert dash["categories"]["rows"] and all(
            r["category"] in topic_of.values() for r in dash["categories"]["rows"]
        )
        got = client.get(f"/recommendations/{user}", params={"k": 3, "category": label}).json()
        assert all(topic_of[r["item_id"]] == label for r in got["recommendations"])


def store_events(db):
    with Store(db, read_only=True) as store:
        return store.events_frame()
