"""`POST /events` applies the contract file ingest applies (`recsight.data.validation`), and
a validation error names the wrong field once."""

from __future__ import annotations

from tests.serving.conftest import AUTH

OK = {"user_id": "new-user", "item_id": "i1", "event_type": "view"}


def stored(client, sql: str) -> list[tuple]:
    """Rows of `sql` on the running service's own store."""
    return client.app.state.service.read(lambda s: s.con.execute(sql).fetchall())


def post(client, body):
    return client.post("/events", json=body, headers=AUTH)


def test_a_body_error_names_the_wrong_field_once(client):
    """Regression: the error listed every branch of the body's union ("EventIn.user_id:
    Field required; ... list[EventIn]: Input should be a valid list")."""
    cases = [
        ({"user_id": "u1", "event_type": "view"}, "item_id: Field required"),
        ({"events": [OK, {**OK, "value": "x"}]}, "events.1.value: Input should be a valid number"),
        ([OK, {"user_id": "u1", "event_type": "view"}], "1.item_id: Field required"),
        ({**OK, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ]
    for body, want in cases:
        r = post(client, body)
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [r.json()["detail"]]
        assert r.json()["detail"].startswith(want), r.json()["detail"]


def test_out_of_scale_ratings_and_future_timestamps_are_refused_naming_the_field(client):
    """Regression: a rating of 1e308 and a timestamp in the year 2999 were stored without a
    word, while file ingest drops both (the shop's store has the rating scale 1 to 5)."""
    r = post(client, {**OK, "event_type": "rating", "value": 1e308})
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "value: is a rating of 1e+308, outside the store's rating scale 1 to 5"
    )
    r = post(client, {"events": [OK, {**OK, "timestamp": "2999-01-01T00:00:00Z"}]})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("events.1.timestamp: is in the future: 2999-01-01")
    r = post(client, [OK, {**OK, "value": "inf"}])
    assert r.status_code == 422 and r.json()["detail"].startswith("1.value: must be a finite")
    assert post(client, {**OK, "event_type": "rate", "value": 4.5}).status_code == 200
    rows = stored(
        client, "SELECT event_type, value FROM events WHERE user_id = 'new-user' AND item_id = 'i1'"
    )
    assert rows == [("rating", 4.5)]  # nothing of the refused requests was stored


def test_unknown_event_types_are_kept_with_their_raw_type(client):
    ts = "2024-05-01T12:00:00+02:00"
    assert post(client, {**OK, "event_type": "Share-Link", "timestamp": ts}).status_code == 200
    assert post(client, {**OK, "event_type": "PV", "timestamp": 1714557600000}).status_code == 200
    rows = stored(
        client,
        'SELECT event_type, raw_event_type, CAST("timestamp" AS VARCHAR) FROM events '
        "WHERE user_id = 'new-user' ORDER BY seq",
    )
    assert rows == [
        ("share-link", "Share-Link", "2024-05-01 10:00:00"),
        ("view", "PV", "2024-05-01 10:00:00"),
    ]


def test_an_out_of_range_unix_timestamp_is_a_422_not_a_500(client):
    """Regression: a numeric timestamp past what datetime holds (1e20, 1e300) raised
    OverflowError/OSError inside the body's validator: a 500."""
    for ts in (1e300, 1e20, -1e20):
        r = post(client, {**OK, "timestamp": ts})
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("timestamp: Value error, not unix seconds")
