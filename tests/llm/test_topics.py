"""Topics from item text: tokenisation, clustering, c-TF-IDF names, grounding, storage."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from topic_stores import BagOfWordsEncoder, shop_without_categories

from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.errors import InputError
from recsight.llm.generate import OpenAIChatLLM
from recsight.llm.topics import (
    TopicModel,
    build_topics,
    check_label,
    class_tfidf,
    reword_labels,
    tokenize,
    topic_words,
    topics_status,
)


def grouped_embeddings(groups: list[int], seed: int = 0) -> np.ndarray:
    """Unit vectors around one random centre per group (well separated, seeded)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(groups) + 1, 32))
    x = centres[groups] + 0.15 * rng.standard_normal((len(groups), 32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


ZH = {
    0: ["声浪无线蓝牙耳机", "极光蓝牙耳机 降噪", "声浪蓝牙耳机 运动款", "星河蓝牙耳机 长续航"],
    1: ["厨神不粘锅 炒锅", "铜叶不粘锅 煎锅", "厨神不粘锅 汤锅", "家宴不粘锅 平底"],
    2: ["峰形瑜伽垫 防滑", "活力瑜伽垫 加厚", "峰形瑜伽垫 折叠", "轻盈瑜伽垫 环保"],
}


def _zh_texts() -> tuple[list[str], list[int]]:
    texts = [t for g in ZH.values() for t in g]
    groups = [g for g, ts in ZH.items() for _ in ts]
    return texts, groups


def _words(texts: list[str]) -> set[str]:
    return {w for t in texts for w in re.findall(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", t.casefold())}


def test_tokenize_english_words_and_chinese_ngrams():
    assert tokenize("The Toy Story (1995) of a Dog-Walker's day") == [
        "toy",
        "story",
        "dog-walker's",
        "day",
    ]
    # ideograph runs give their 2..4-grams, Latin words stay words
    assert tokenize("蓝牙耳机 USB") == [
        "蓝牙", "牙耳", "耳机", "蓝牙耳", "牙耳机", "蓝牙耳机", "usb",
    ]  # fmt: skip
    assert tokenize("书") == ["书"]


def test_class_tfidf_matches_the_formula_by_hand():
    texts = ["apple apple pear", "apple", "kiwi"]
    scores, vocab, present = class_tfidf(texts, np.array([0, 0, 1]), 2)
    assert vocab == ["apple", "kiwi", "pear"]
    # topic 0: apple 3/4, pear 1/4; topic 1: kiwi 1/1; A = (4 + 1) / 2; f = 3, 1, 1
    a = 2.5
    expected = [[0.75 * np.log1p(a / 3), 0, 0.25 * np.log1p(a / 1)], [0, np.log1p(a / 1), 0]]
    np.testing.assert_allclose(scores.toarray(), expected)
    np.testing.assert_array_equal(present.toarray(), [[2, 0, 1], [0, 1, 0]])


def test_topics_are_deterministic_for_a_seed():
    texts, groups = _zh_texts()
    texts = texts * 5  # 60 items, enough for the k grid
    emb = grouped_embeddings(groups * 5, seed=1) + 0.05 * np.random.default_rng(2).standard_normal(
        (60, 32)
    ).astype(np.float32)
    a = TopicModel(k="auto", seed=7, levels=2).fit(emb, texts)
    b = TopicModel(k="auto", seed=7, levels=2).fit(emb, texts)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert [t.label for t in a.topics_] == [t.label for t in b.topics_]
    assert a.silhouette_ == b.silhouette_
    # numbering by size: topic 0 is the largest
    sizes = np.bincount(a.labels_)
    assert list(sizes) == sorted(sizes, reverse=True)


def test_auto_k_finds_well_separated_groups():
    groups = [g for g in range(6) for _ in range(20)]
    texts = [f"word{g} item{i}" for i, g in enumerate(groups)]
    m = TopicModel(k="auto", seed=0).fit(grouped_embeddings(groups), texts)
    assert m.k_ == 6 and max(m.silhouette_, key=m.silhouette_.get) == 6
    # the clustering recovers the groups exactly (up to numbering)
    pairs = set(zip(groups, m.labels_.tolist(), strict=True))
    assert len(pairs) == 6


def test_chinese_texts_get_chinese_labels_from_their_own_items():
    texts, groups = _zh_texts()
    m = TopicModel(k=3, seed=0).fit(grouped_embeddings(groups), texts)
    names = {}
    for t in m.topics_:
        own = [texts[i] for i in np.flatnonzero(m.labels_ == t.topic)]
        assert re.fullmatch(r"[\u4e00-\u9fff]+( / [\u4e00-\u9fff]+)*", t.label), t.label
        assert all(any(w in x for x in own) for w in t.label.split(" / "))
        names[t.label.split(" / ")[0]] = t.topic
    # each topic is named first by its shared product phrase, not by a fragment of it
    assert set(names) == {"蓝牙耳机", "不粘锅", "瑜伽垫"}


def test_chinese_names_are_words_not_fragments_of_one():
    texts = ["派对岛生日气球，派对岛出品", "派对岛节日横幅，派对岛出品", "欢庆创意彩带，欢庆出品",
             "派对岛生日蜡烛，派对岛出品", "厨神不粘锅，厨神出品", "厨神铸铁锅，厨神出品",
             "铜叶不粘锅，铜叶出品"] + ["家宴炒锅，家宴出品"] * 3  # fmt: skip
    # "对岛" and "岛生" occur as often as "派对岛" but are pieces of it and its neighbours;
    # "出品" is in every item (filler) and "岛出品" a brand's tail plus the filler; a term
    # needs two of the topic's items ("节日", "铸铁" have one)
    words = topic_words(texts, np.array([0] * 4 + [1] * 6), 2)
    assert words == [["派对岛", "生日"], ["家宴", "厨神", "炒锅"]]


def test_items_without_text_get_no_topic():
    texts = ["red apple", "", "green apple", "   ", "blue kiwi", "yellow kiwi"]
    emb = grouped_embeddings([0, 0, 0, 1, 1, 1])
    m = TopicModel(k=2, seed=0).fit(emb, texts)
    assert m.labels_[1] == m.labels_[3] == -1
    assert sorted(t.label for t in m.topics_) == ["apple", "kiwi"]
    with pytest.raises(InputError, match="no item has any text"):
        TopicModel(k=2).fit(emb[:2], ["", " "])
    with pytest.raises(InputError, match="--k"):
        TopicModel(k=0).fit(emb, texts)


def test_check_label_rejects_words_not_in_the_items():
    texts = ["Voltix Wireless Earbuds", "Sonara Wireless Speaker", "声浪蓝牙耳机"]
    assert check_label("wireless / earbuds", texts) is None
    assert check_label("Wireless Speaker", texts) is None  # case is ignored
    assert check_label("蓝牙耳机", texts) is None
    assert "headphones" in check_label("Wireless Headphones", texts)
    assert "无线耳机" in check_label("无线耳机", texts)  # characters present, phrase is not
    assert check_label("  ", texts) == "empty label"


def test_llm_names_are_kept_only_when_grounded(stub):
    texts, groups = _zh_texts()
    texts = [t.replace("瑜伽垫", "Yoga Mat") for t in texts]
    m = TopicModel(k=3, seed=0).fit(grouped_embeddings(groups), texts)
    template = {t.topic: t.label for t in m.topics_}
    by_topic = {t.topic: t for t in m.topics_}
    mat = next(t.topic for t in m.topics_ if "yoga" in t.label)

    def reply(messages):
        facts = messages[1]["content"]
        if "yoga" in facts:
            return "Yoga Mat"  # grounded: both words occur in the topic's items
        return "Premium Kitchen Gear"  # invented

    stub.reply = reply
    reword_labels(m, texts, OpenAIChatLLM(stub.url, "m"))
    assert by_topic[mat].label == "Yoga Mat" and by_topic[mat].backend == "openai:m"
    for c, t in by_topic.items():
        if c != mat:
            assert t.label == template[c] and t.backend == "template"
            assert "premium" in t.rejected


@pytest.fixture
def shop_store(tmp_path):
    db, truth = shop_without_categories(tmp_path)
    with Store(db) as store:
        yield store, truth


def test_build_topics_stores_item_attributes_and_knows_when_stale(shop_store):
    store, truth = shop_store
    assert topics_status(store) == "missing"
    rep = build_topics(store, k=8, encoder=BagOfWordsEncoder(), levels=2)
    assert rep.rebuilt and rep.k == 8 and rep.model == "test-bow"
    assert topics_status(store) == "current"
    rows = store.con.execute("SELECT * FROM item_topics WHERE level = 1").df()
    assert len(rows) == 120 and set(rows.model) == {"test-bow"}
    items = store.items_frame()
    # a catalog without categories gets its topics as categories, named as stored
    assert items.attrs["category_source"] == "topic"
    assert items.category.notna().all() and (items.category == items.topic).all()
    assert items.topic_group.notna().all()
    # every name uses only words of its own items' texts
    from recsight.llm.encoders import item_texts

    texts = dict(zip(items.item_id, item_texts(store.items_frame(topics=False)), strict=True))
    for label, group in items.groupby("topic"):
        own = [texts[i] for i in group.item_id]
        assert check_label(label, own) is None
        assert set(label.split(" / ")) <= _words(own)
    # the stored copy is reused; a changed text makes it stale
    assert not build_topics(store, k=8, encoder=BagOfWordsEncoder(), levels=2).rebuilt
    store.con.execute("UPDATE items SET title = 'Brand New Thing' WHERE item_id = 'i0'")
    assert topics_status(store) == "stale"
    assert build_topics(store, k=8, encoder=BagOfWordsEncoder(), levels=2).rebuilt
    # topics agree with the hidden categories far beyond chance
    from sklearn.metrics import normalized_mutual_info_score

    items = store.items_frame()
    assert normalized_mutual_info_score(truth[items.item_id], items.topic) > 0.6


def test_categories_are_never_replaced_by_topics(tmp_path):
    generate_shop(tmp_path / "shop", n_users=60, n_items=60, n_days=10, seed=4)
    with Store(tmp_path / "s.duckdb") as store:
        shop = tmp_path / "shop"
        ingest(store, shop / "events.parquet", items=shop / "items.parquet")
        assert topics_status(store) == "categories"
        build_topics(store, k=5, encoder=BagOfWordsEncoder())
        items = store.items_frame()
        real = pd.read_parquet(shop / "items.parquet").set_index("item_id").category
        assert items.attrs["category_source"] == "category"
        assert (items.category.to_numpy() == real[items.item_id].to_numpy()).all()
        assert items.topic.notna().all()  # offered beside them
