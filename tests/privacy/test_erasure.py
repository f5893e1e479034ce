"""The right to erasure: `recsight forget` removes a user from the store, its file's bytes and
every saved model; earlier exports are listed; a store a service owns is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from recsight.cli.main import app
from recsight.data.generate import generate_shop
from recsight.data.histories import META_KEY, snapshot_root, write_history_snapshot
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.models.registry import create_model, load_model
from tests.privacy.helpers import files_holding, tables_holding

WHO = "erase-me-Q7Z9K"
MODELS = {
    "ease": {"reg": 50.0, "keep_inverse": True},
    "itemknn": {"neighbors": 10},
    "popular": {},
    "userknn": {"neighbors": 5},
    "als": {"factors": 4, "iterations": 2},
}


def build_store(root: Path) -> Path:
    """A generated shop plus WHO with events, a profile row and served exposures."""
    shop = generate_shop(root / "shop", n_users=80, n_items=40, n_days=10, seed=11)
    db = root / "s.duckdb"
    with Store(db) as s:
        ingest(s, shop.out_dir)
        items = [f"i{j}" for j in (1, 2, 3, 5, 8, 13)]
        s.append_events(
            [
                {
                    "user_id": WHO,
                    "item_id": i,
                    "event_type": "purchase",
                    "event_id": f"{WHO}-{n}",
                    "session_id": f"{WHO}-s",
                }
                for n, i in enumerate(items)
            ]  # fmt: skip
        )
        s.con.execute("INSERT INTO users (user_id, user_idx) SELECT ?, user_idx FROM user_map "
                      "WHERE user_id = ?", [WHO, WHO])  # fmt: skip
        s.con.execute(
            "CREATE TABLE exposures (request_id VARCHAR, user_id VARCHAR, item_id VARCHAR, "
            "position INTEGER, model_version VARCHAR, ts TIMESTAMP)"
        )
        s.con.execute("INSERT INTO exposures VALUES ('r1', ?, 'i4', 0, 'm', now()), "
                      "('r2', 'u1', 'i4', 0, 'm', now())", [WHO])  # fmt: skip
        s.cluster_by_user()  # the service's by-user copy of the events
        write_history_snapshot(s)  # and its memory-mapped histories
        s.con.execute("CHECKPOINT")
    return db


@pytest.fixture
def world(tmp_path):
    db = build_store(tmp_path)
    with Store(db, read_only=True) as s:
        data = s.interactions()
    folders = []
    for name, params in MODELS.items():
        create_model(name, **params).fit(data).save(tmp_path / "models" / name)
        folders.append(tmp_path / "models" / name)
    runner = CliRunner()
    before = runner.invoke(app, ["export", "--db", str(db), "--out", str(tmp_path / "early")])
    assert before.exit_code == 0, before.output
    return db, folders, tmp_path


def test_forget_leaves_no_trace(world):
    db, folders, root = world
    # the search can find the id where it is: the store file, the export, every model folder
    assert files_holding([db], WHO) and files_holding([root / "early"], WHO)
    assert files_holding([snapshot_root(db)], WHO)
    assert all(files_holding([f], WHO) for f in folders)
    with Store(db, read_only=True) as s:
        before = s.interactions()
    args = ["forget", WHO, "--db", str(db), "--json"]
    for f in folders:
        args += ["--model", str(f)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["users"] == [
        {
            "user_id": WHO,
            "events": 6,
            "exposures": 1,
            "profile_rows": 1,
            "other_rows": 0,
            "id_mapped": True,
        }  # fmt: skip
    ]
    assert out["stale_exports"] == [str((root / "early").resolve())]
    status = {Path(m["path"]).name: m["status"] for m in out["models"]}
    assert status == {
        "ease": "exact unlearning",
        "itemknn": "exact unlearning",
        "popular": "exact unlearning",
        "userknn": "exact unlearning",
        "als": "trained on data that included erased users",
    }
    # nothing left: no table, no byte of the store file, no model file, no later export
    with Store(db, read_only=True) as s:
        assert tables_holding(s.con, WHO) == []
        assert s.meta(META_KEY) is None  # the snapshot is withdrawn, its files deleted
        log = s.con.execute("SELECT user_hash, events, exposures FROM erasure_log").fetchall()
        # the by-user copy lost the same rows and follows the renumbered users
        a, b = "SELECT user_idx, seq FROM event_log_by_user", "SELECT user_idx, seq FROM event_log"
        diff = f"SELECT count(*) FROM (({a} EXCEPT {b}) UNION ALL ({b} EXCEPT {a}))"
        assert s.con.execute(diff).fetchone()[0] == 0
        after = s.interactions()
    assert len(log) == 1 and log[0][1:] == (6, 1) and len(log[0][0]) == 64
    assert files_holding([db, db.with_name(db.name + ".wal")], WHO) == []
    assert not snapshot_root(db).exists()
    assert files_holding(folders, WHO) == []
    late = CliRunner().invoke(app, ["export", "--db", str(db), "--out", str(root / "late")])
    assert late.exit_code == 0 and files_holding([root / "late"], WHO) == []
    # the rest of the store is intact and its ids contiguous
    assert after.n_users == before.n_users - 1 and len(after) == len(before) - 6
    assert list(after.users.ids) == [u for u in before.users.ids if u != WHO]
    manifest = json.loads((folders[-1] / "manifest.json").read_text())
    assert manifest["erasures"]["pending_retrain"] == 1
    # --retrain refits what could not unlearn and clears the pending count
    res = CliRunner().invoke(app, ["forget", WHO, "--db", str(db), "--retrain",
                                   "--model", str(folders[-1]), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["users"][0]["events"] == 0
    manifest = json.loads((folders[-1] / "manifest.json").read_text())
    assert manifest["erasures"]["pending_retrain"] == 0
    assert load_model(folders[-1]).user_factors_.shape[0] == after.n_users


def test_forget_unknown_user_zeros(world):
    db, _, _ = world
    res = CliRunner().invoke(app, ["forget", "nobody-here", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    user = json.loads(res.stdout)["users"][0]
    assert (user["events"], user["exposures"], user["profile_rows"], user["id_mapped"]) == (
        0, 0, 0, False)  # fmt: skip
    con = duckdb.connect(str(db), read_only=True)
    (entry,) = con.execute("SELECT user_hash, erased_at FROM erasure_log").fetchall()
    assert "nobody" not in entry[0] and isinstance(entry[1], datetime)
    con.close()


def test_forget_refused_while_the_store_is_held(world):
    db, _, _ = world
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True); "
         "time.sleep(60)", str(db)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ok"
        res = CliRunner().invoke(app, ["forget", WHO, "--db", str(db)])
    finally:
        holder.kill()
        holder.wait()
    assert res.exit_code == 2
    assert "DELETE /users/" in res.output and "recsight serve" in res.output
    time.sleep(0.1)
    with Store(db, read_only=True) as s:  # nothing was erased
        assert s.con.execute("SELECT count(*) FROM user_map WHERE user_id = ?",
                             [WHO]).fetchone()[0] == 1  # fmt: skip
