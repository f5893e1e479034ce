"""The HTTP API: persistence before the ack, real-time updates, cold start, auth, errors."""

from __future__ import annotations

import json
import threading

import duckdb

from tests.serving.conftest import AUTH


def stored_events(db) -> int:
    return (
        duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM events").fetchone()[0]
    )


def test_health_shows_manifest(client):
    body = client.get("/health").json()
    m = body["manifest"]
    assert body["status"] == "ok" and m["model"] == "itemknn"
    assert m["model_version"].startswith("itemknn-") and m["n_items"] == 80
    assert len(m["id_index_version"]) == 12


def test_event_persisted_and_reflected_at_once(client, store_copy):
    before = client.get("/recommendations/u1?k=5").json()
    seen = {r["item_id"] for r in before["recommendations"]}
    target = next(iter(seen))
    r = client.post(
        "/events",
        json={"user_id": "u1", "item_id": target, "event_type": "purchase", "event_id": "evt-1"},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json()["stored"] == 1
    after = client.get("/recommendations/u1?k=5").json()
    # the purchased item is now seen, so it is excluded from the next list
    assert target not in {x["item_id"] for x in after["recommendations"]}
    # idempotent retry
    again = client.post(
        "/events",
        json={"user_id": "u1", "item_id": target, "event_type": "purchase", "event_id": "evt-1"},
        headers=AUTH,
    )
    assert again.json() == {
        "stored": 0,
        "duplicates": 1,
        "results": [{"status": "duplicate", "seq": None}],
    }


def test_batch_and_new_user_cold_start(client):
    cold = client.get("/recommendations/brand-new?k=5").json()
    assert cold["source"] == "popular" and len(cold["recommendations"]) == 5
    items = [r["item_id"] for r in cold["recommendations"][:2]]
    batch = {
        "events": [{"user_id": "brand-new", "item_id": i, "event_type": "view"} for i in items]
    }
    assert client.post("/events", json=batch, headers=AUTH).json()["stored"] == 2
    warm = client.get("/recommendations/brand-new?k=5&explain=true").json()
    assert warm["source"] == "main"
    recs = warm["recommendations"]
    assert not {r["item_id"] for r in recs} & set(items)
    # explanations name only items from the user's own history
    for r in recs:
        assert {e["item_id"] for e in r["evidence"]} <= set(items)
        assert r["explanation"]


def test_anonymous_history_and_similar_items(client):
    r = client.post("/recommendations", json={"history": ["i1", "i2"], "k": 3}).json()
    assert r["source"] == "main" and len(r["recommendations"]) == 3
    sim = client.get("/items/i1/similar?k=4").json()
    assert len(sim["similar"]) == 4 and "i1" not in {s["item_id"] for s in sim["similar"]}


def test_category_filter(client):
    cats = client.get("/recommendations/u2?k=20").json()["recommendations"]
    category = cats[0]["category"]
    only = client.get("/recommendations/u2", params={"k": 5, "category": category}).json()
    assert only["recommendations"] and all(
        r["category"] == category for r in only["recommendations"]
    )


def test_auth_required_for_writes(client):
    event = {"user_id": "u1", "item_id": "i1", "event_type": "view"}
    assert client.post("/events", json=event).status_code == 401
    assert client.post("/events", json=event, headers={"X-API-Key": "wrong"}).status_code == 401
    assert (
        client.post("/events", json=event, headers={"X-API-Key": "test-key-123"}).status_code == 200
    )
    assert client.post("/admin/snapshot").status_code == 401


def test_bad_input_is_4xx_never_500(client):
    cases = [
        ({"user_id": "u1", "event_type": "view"}, 422),  # missing item_id
        ({"user_id": "", "item_id": "i1", "event_type": "view"}, 422),
        ({"user_id": "u1", "item_id": "i1", "event_type": "buy", "value": -3}, 422),
        ({"user_id": "u1", "item_id": "i1", "event_type": "view", "extra": 1}, 422),
        ({"events": []}, 422),
        ("not json at all", 422),
    ]
    for body, status in cases:
        r = client.post("/events", json=body, headers=AUTH)
        assert r.status_code == status, (body, r.text)
        assert r.json()["detail"]
    assert client.get("/recommendations/u1?k=0").status_code == 422
    assert client.get("/items/nope/similar").status_code == 400
    big = {"events": [{"user_id": "u", "item_id": "i" * 200, "event_type": "view"}] * 6000}
    assert client.post("/events", json=big, headers=AUTH).status_code == 413
    # the same body streamed without a Content-Length (chunked) is capped as it is read
    payload = json.dumps(big).encode()
    chunks = (payload[i : i + 65536] for i in range(0, len(payload), 65536))
    r = client.post("/events", content=chunks, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "request body over" in r.json()["detail"]


def test_exposures_and_request_ids(client, store_copy):
    rec = client.get("/recommendations/u3?k=3").json()
    rid, item = rec["request_id"], rec["recommendations"][0]["item_id"]
    client.post(
        "/events",
        json={"user_id": "u3", "item_id": item, "event_type": "click", "request_id": rid},
        headers=AUTH,
    )
    data = client.get("/api/dashboard").json()
    # one user's lists are fewer than the minimum group size (5): suppressed, and said so
    assert data["live_ctr"] == [] and data["suppressed"]["live_ctr"] == 1
    for u in ("u4", "u5", "u6", "u7"):
        client.get(f"/recommendations/{u}?k=3")
    ctr = client.get("/api/dashboard").json()["live_ctr"][0]
    assert (
        ctr["clicks"] == 1
        and ctr["exposures"] >= 15
        and ctr["model_version"] == rec["model_version"]
    )


def test_metrics_prometheus_text(client):
    client.get("/recommendations/u1")
    text = client.get("/metrics").text
    assert (
        'recsight_requests_total{method="GET",route="/recommendations/{user_id}",status="200"}'
        in text
    )
    assert "recsight_request_seconds_bucket" in text and "recsight_events_ingested_total" in text


def test_profile_known_and_unknown(client):
    p = client.get("/users/u1/profile").json()
    assert p["known"] and p["n_events"] > 0 and p["summary"]
    assert client.get("/users/ghost/profile").json()["known"] is False


def test_snapshot_and_reload(client, shop_model, tmp_path):
    snap = client.post("/admin/snapshot", headers=AUTH).json()
    assert set(snap["files"]) == {"events", "items", "users"}
    before = client.get("/health").json()["manifest"]["model_version"]
    r = client.post("/admin/reload", json={"model": str(shop_model[1])}, headers=AUTH).json()
    assert r["previous"] == before and r["current"] == before


def test_concurrent_writers_and_readers(client, store_copy):
    errors: list[str] = []
    n_before = client.get("/api/dashboard").json()["info"]["n_events"]

    def writer(w: int) -> None:
        for j in range(20):
            r = client.post(
                "/events",
                json={
                    "user_id": f"cw{w}",
                    "item_id": f"i{j % 80}",
                    "event_type": "view",
                    "event_id": f"c{w}-{j}",
                },
                headers=AUTH,
            )
            if r.status_code != 200:
                errors.append(r.text)

    def reader() -> None:
        for _ in range(20):
            if client.get("/recommendations/u5?k=5").status_code != 200:
                errors.append("read failed")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert client.get("/api/dashboard").json()["info"]["n_events"] == n_before + 80


def test_free_text_interest_uses_the_text_model(text_pipeline, store_copy):
    from fastapi.testclient import TestClient

    from recsight.serving.app import ServiceConfig, create_app

    app = create_app(ServiceConfig(model=text_pipeline, db=store_copy))
    with TestClient(app) as c:
        health = c.get("/health").json()["manifest"]
        assert health["fallbacks"] == ["content"] and health["training_cutoff"].startswith("2026")
        r = c.post("/recommendations", json={"text": "cozy mystery novel paperback", "k": 5})
        body = r.json()
        assert r.status_code == 200 and body["source"] == "content"
        assert any(x["category"] == "Books" for x in body["recommendations"])
        # writes are refused when no API key is configured
        assert (
            c.post(
                "/events", json={"user_id": "u", "item_id": "i1", "event_type": "view"}
            ).status_code
            == 401
        )


def test_key_checked_before_the_body_is_parsed(client):
    """A caller without the key is refused (401) whatever the body: FastAPI parses the body
    before it solves dependencies, so an unparseable one used to answer 400/422."""
    bad = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    for method, path in [("POST", "/events"), ("POST", "/admin/reload")]:
        r = client.request(method, path, **bad)
        assert r.status_code == 401, (path, r.status_code, r.text)
        wrong = {**bad, "headers": {**bad["headers"], "X-API-Key": "wrong"}}
        assert client.request(method, path, **wrong).status_code == 401, path
        keyed = {**bad, "headers": {**bad["headers"], **AUTH}}
        assert client.request(method, path, **keyed).status_code == 422, path
    # a route without a key requirement still parses its body as before
    r = client.post("/recommendations", **bad)
    assert r.status_code == 422
