"""Pseudonymous ids: `ingest --pseudonymize` stores keyed hashes, stable across ingests; the
store refuses other keys and plain ids; every entry point takes the client's own ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recsight.cli.main import app
from recsight.data.generate import generate_shop
from recsight.data.pseudonyms import PSEUDONYM_KEY_ENV, key_fingerprint, pseudonym
from recsight.serving.app import ServiceConfig, create_app
from tests.privacy.helpers import files_holding, tables_holding

KEY = "correct horse battery staple"
WHO = "victim-raw-id-8842"
HEX = re.compile(r"^[0-9a-f]{32}$")


def _log(path: Path, users: list[str], items: list[str], day: int) -> Path:
    rows = ["user_id,item_id,timestamp,event_type,session_id"]
    for n, (u, i) in enumerate(zip(users, items, strict=True)):
        rows.append(f"{u},{i},2026-01-{day:02d}T10:{n % 60:02d}:00,view,{u}-s1")
    path.write_text("\n".join(rows) + "\n")
    return path


def cli(*args: str, key: str | None = KEY) -> object:
    env = {PSEUDONYM_KEY_ENV: key} if key is not None else {PSEUDONYM_KEY_ENV: ""}
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def shop(tmp_path):
    shop = generate_shop(tmp_path / "shop", n_users=60, n_items=30, n_days=8, seed=2)
    return shop.out_dir


def test_ingest_pseudonymized_stable_and_guarded(shop, tmp_path):
    db = str(tmp_path / "p.duckdb")
    res = cli("ingest", str(shop), "--db", db, "--pseudonymize", "--quiet")
    assert res.exit_code == 0, res.output
    extra = _log(tmp_path / "more.csv", [WHO, WHO, "u3"], ["i1", "i2", "i5"], 20)
    res = cli("ingest", str(extra), "--db", db, "--pseudonymize", "--quiet")
    assert res.exit_code == 0, res.output
    key = KEY.encode()
    con = duckdb.connect(db, read_only=True)
    ids = [r[0] for r in con.execute("SELECT user_id FROM user_map").fetchall()]
    n_u3 = con.execute("SELECT count(*) FROM events WHERE user_id = ?",
                       [pseudonym("u3", key)]).fetchone()[0]  # fmt: skip
    meta = dict(con.execute("SELECT * FROM meta").fetchall())
    sessions = [r[0] for r in con.execute("SELECT DISTINCT session_id FROM events").fetchall()]
    con.close()
    # every id is a pseudonym; the same id got the same pseudonym in both ingests
    assert len(ids) == 61 and all(HEX.match(u) for u in ids)
    assert pseudonym(WHO, key) in ids and pseudonym("u3", key) in ids
    assert n_u3 > 1  # u3's events of both files are one user
    assert meta["pseudonym_key_fingerprint"] == key_fingerprint(key)
    assert all(s is None or HEX.match(s) for s in sessions)
    assert files_holding([Path(db)], WHO) == [] and KEY.encode() not in Path(db).read_bytes()

    # refused: a plain ingest, a wrong key, a missing key; the store is left as it was
    size = Path(db).stat().st_size
    for args, key_used, message in [
        ((), KEY, "--pseudonymize"),
        (("--pseudonymize",), "another key", "not the key"),
        (("--pseudonymize",), None, PSEUDONYM_KEY_ENV),
    ]:
        res = cli("ingest", str(extra), "--db", db, *args, key=key_used)
        assert res.exit_code == 2 and message in res.output, res.output
    assert Path(db).stat().st_size == size
    # a new store is not even created without the key
    res = cli("ingest", str(extra), "--db", str(tmp_path / "n.duckdb"), "--pseudonymize",
              key=None)  # fmt: skip
    assert res.exit_code == 2 and not (tmp_path / "n.duckdb").exists()
    # a plain store does not take pseudonyms
    plain = str(tmp_path / "plain.duckdb")
    assert cli("ingest", str(extra), "--db", plain, "--quiet", key=None).exit_code == 0
    res = cli("ingest", str(shop), "--db", plain, "--pseudonymize")
    assert res.exit_code == 2 and "plain user ids" in res.output


def test_clients_use_their_own_ids(shop, tmp_path):
    db = str(tmp_path / "p.duckdb")
    extra = _log(tmp_path / "more.csv", [WHO] * 4, ["i1", "i2", "i3", "i4"], 21)
    for src in (shop, extra):
        assert cli("ingest", str(src), "--db", db, "--pseudonymize", "-q").exit_code == 0
    alias = pseudonym(WHO, KEY.encode())
    prof = cli("profile", WHO, "--db", db, "--json")
    assert prof.exit_code == 0, prof.output
    assert json.loads(prof.stdout)["n_events"] == 4 and WHO not in prof.stdout
    model = str(tmp_path / "knn")
    assert cli("train", "itemknn", "--db", db, "--out", model, "--quiet").exit_code == 0
    for extra_args in ((), ("--db", db)):
        rec = cli("recommend", "--model", model, "--user", WHO, "--json", *extra_args)
        assert rec.exit_code == 0, rec.output
        assert len(json.loads(rec.stdout)["recommendations"]) == 10
    wrong = cli("recommend", "--model", model, "--user", WHO, key="nope")
    assert wrong.exit_code == 2 and "not the key" in wrong.output
    export = tmp_path / "export"
    assert cli("export", "--db", db, "--out", str(export)).exit_code == 0
    assert files_holding([export], WHO) == [] and files_holding([export], alias)
    assert files_holding([Path(model)], alias)  # the model knows the pseudonym, not the id
    # the export says its ids are pseudonyms: read in place or ingested, they are not hashed
    # again, and the client's id still finds the user
    on_layout = cli("profile", WHO, "--events", str(export), "--json")
    assert on_layout.exit_code == 0 and json.loads(on_layout.stdout)["n_events"] == 4
    assert cli("profile", WHO, "--events", str(export), key=None).exit_code == 2
    copy = str(tmp_path / "copy.duckdb")
    assert cli("ingest", str(export), "--db", copy, "-q", key=None).exit_code == 0
    again = cli("profile", WHO, "--db", copy, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["n_events"] == 4
    plain = str(tmp_path / "plain.duckdb")
    assert cli("ingest", str(extra), "--db", plain, "-q", key=None).exit_code == 0
    mixed = cli("ingest", str(export), "--db", plain, key=None)
    assert mixed.exit_code == 2 and "plain" in mixed.output

    # forget takes the client's id and removes the pseudonym everywhere
    res = cli("forget", WHO, "--db", db, "--model", model, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["users"][0]["events"] == 4 and out["stale_exports"] == [str(export.resolve())]
    con = duckdb.connect(db, read_only=True)
    assert tables_holding(con, alias) == [] and tables_holding(con, WHO) == []
    con.close()
    assert files_holding([Path(db), Path(model)], alias) == []
    assert files_holding([Path(db), Path(model)], WHO) == []


def test_service_maps_ids(shop, tmp_path, monkeypatch):
    db = tmp_path / "p.duckdb"
    assert cli("ingest", str(shop), "--db", str(db), "--pseudonymize", "-q").exit_code == 0
    model = tmp_path / "knn"
    assert cli("train", "itemknn", "--db", str(db), "--out", str(model), "-q").exit_code == 0
    monkeypatch.delenv(PSEUDONYM_KEY_ENV, raising=False)
    res = CliRunner().invoke(app, ["serve", "--model", str(model), "--db", str(db)])
    assert res.exit_code == 2 and PSEUDONYM_KEY_ENV in res.output  # refused before start
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, KEY)
    auth = {"X-API-Key": "k"}
    with TestClient(create_app(ServiceConfig(model=model, db=db, api_key="k"))) as c:
        assert c.get("/users/u4/profile").json()["known"] is True
        events = [{"user_id": WHO, "item_id": i, "event_type": "view", "session_id": "s-" + WHO}
                  for i in ("i1", "i2")]  # fmt: skip
        assert c.post("/events", json=events, headers=auth).json()["stored"] == 2
        assert c.get(f"/recommendations/{WHO}").json()["source"] == "main"
        s = c.app.state.service
        s.exposures.flush()
        with s.write_lock:
            assert tables_holding(s.store.con, WHO) == []  # events, sessions, exposures
            alias = pseudonym(WHO, KEY.encode())
            assert "exposures.user_id" in tables_holding(s.store.con, alias)
        gone = c.delete(f"/users/{WHO}", headers=auth).json()
        assert gone["removed"]["events"] == 2 and gone["removed"]["exposures"] == 10
