"""DELETE /users/{id}: the running service erases a user from its store, cache and models."""

from __future__ import annotations

import shutil

from fastapi.testclient import TestClient

from recsight.models.registry import load_model
from recsight.serving.app import ServiceConfig, create_app
from tests.privacy.helpers import files_holding, tables_holding
from tests.serving.conftest import API_KEY, AUTH

WHO = "delete-me-X4Q2"


def test_delete_user_everywhere(shop_model, store_copy, tmp_path):
    _, base_model = shop_model
    model = tmp_path / "model"
    shutil.copytree(base_model, model)
    app = create_app(ServiceConfig(model=model, db=store_copy, api_key=API_KEY))
    with TestClient(app) as c:
        events = [{"user_id": WHO, "item_id": f"i{j}", "event_type": "purchase"} for j in (1, 2)]
        assert c.post("/events", json=events, headers=AUTH).json()["stored"] == 2
        warm = c.get(f"/recommendations/{WHO}?k=5").json()
        assert warm["source"] == "main"
        assert c.delete(f"/users/{WHO}").status_code == 401  # no key: refused
        assert c.delete(f"/users/{WHO}", headers={"X-API-Key": "wrong"}).status_code == 401
        r = c.delete(f"/users/{WHO}", headers=AUTH)
        assert r.status_code == 200
        body = r.json()
        # the served list of `warm` was logged as exposures: they go too
        assert body["removed"] == {"events": 2, "exposures": 5, "profile_rows": 0,
                                   "other_rows": 0}  # fmt: skip
        assert body["models"][0]["status"] == "unchanged"  # the model never trained on WHO
        # the next recommendation is cold start; an unknown user gets the same zeros
        cold = c.get(f"/recommendations/{WHO}?k=5").json()
        assert cold["source"] == "popular"
        assert c.get(f"/users/{WHO}/profile").json()["known"] is False
        unknown = c.delete("/users/never-was-here", headers=AUTH).json()
        assert unknown["removed"] == {"events": 0, "exposures": 0, "profile_rows": 0,
                                      "other_rows": 0}  # fmt: skip
        assert unknown.keys() == body.keys()
        # the cold-start list just served was logged: erasing again removes it too
        assert c.delete(f"/users/{WHO}", headers=AUTH).json()["removed"]["exposures"] == 5
        # a user the model trained on leaves the saved model and the loaded pipeline
        gone = c.delete("/users/u3", headers=AUTH).json()
        assert gone["removed"]["events"] > 0
        assert gone["models"][0]["users_removed"] == 1
        assert gone["models"][0]["status"] == "exact unlearning"
        health = c.get("/health").json()
        assert health["erasures_pending_retrain"] == 0
        assert "u3" not in app.state.service.pipeline.main.users_
        assert c.get("/api/dashboard").json()["erasures_pending_retrain"] == 0
        s = app.state.service
        s.exposures.flush()
        with s.write_lock:
            assert tables_holding(s.store.con, WHO) == []
    assert "u3" not in load_model(model).users_
    assert files_holding([store_copy], WHO) == []


def test_pending_retrain_on_health(shop_model, store_copy, tmp_path):
    from recsight.data.store import Store
    from recsight.models.registry import create_model

    with Store(store_copy, read_only=True) as s:
        data = s.interactions()
    model = tmp_path / "als"
    create_model("als", factors=4, iterations=1).fit(data).save(model)
    app = create_app(ServiceConfig(model=model, db=store_copy, api_key=API_KEY))
    with TestClient(app) as c:
        assert c.get("/health").json()["erasures_pending_retrain"] == 0
        body = c.delete("/users/u5", headers=AUTH).json()
        assert body["models"][0]["status"] == "trained on data that included erased users"
        assert body["erasures_pending_retrain"] == 1
        assert c.get("/health").json()["erasures_pending_retrain"] == 1
        assert c.get("/api/dashboard").json()["erasures_pending_retrain"] == 1


def test_exposure_buffer_drops_an_erased_users_rows():
    from datetime import datetime

    from recsight.serving.writes import EXPOSURE_COLUMNS, ExposureLog

    written = []
    log = ExposureLog(written.append)
    now = datetime(2026, 1, 2, 3, 4, 5)
    log.add("r1", "gone", ["i1", "i2"], "m", now)
    log.add("r2", "kept", ["i3", "i1"], "m", now)
    log.discard_user("gone")
    log.flush()
    log.flush()  # nothing buffered: nothing written
    assert len(written) == 1 and written[0].column_names == EXPOSURE_COLUMNS
    assert written[0].to_pylist() == [
        {
            "request_id": "r2",
            "user_id": "kept",
            "item_id": "i3",
            "position": 0,
            "model_version": "m",
            "ts": now,
        },
        {
            "request_id": "r2",
            "user_id": "kept",
            "item_id": "i1",
            "position": 1,
            "model_version": "m",
            "ts": now,
        },
    ]
