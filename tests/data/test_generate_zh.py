"""`recsight generate --titles zh`: Chinese item texts, the same shop otherwise."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsight.data.generate import _CATEGORIES, generate_shop
from recsight.data.generate_zh import ZH_WORDS, words


def test_every_category_has_chinese_words():
    assert set(ZH_WORDS) == {c.name for c in _CATEGORIES}
    for c in _CATEGORIES:
        w = words(c.name)
        assert len(w) == (5 if c.name_words else 3) and all(w)
        assert all(re.fullmatch(r"[\u4e00-\u9fff]+", x) for part in w for x in part), c.name


def test_chinese_titles_change_only_the_texts(tmp_path):
    en = generate_shop(tmp_path / "en", n_users=40, n_items=60, n_days=10, seed=2)
    zh = generate_shop(tmp_path / "zh", n_users=40, n_items=60, n_days=10, seed=2, titles="zh")
    for name in ("events", "users"):
        assert pq.read_table(en.files[name]).equals(pq.read_table(zh.files[name]))
    a, b = pd.read_parquet(en.files["items"]), pd.read_parquet(zh.files["items"])
    pd.testing.assert_frame_equal(a.drop(columns=["title", "description"]),
                                  b.drop(columns=["title", "description"]))  # fmt: skip
    assert b.title.str.fullmatch(r"[\u4e00-\u9fff《》]+").all()
    # the noun in a Chinese title is one of its category's nouns
    for title, cat in zip(b.title, b.category, strict=True):
        assert any(n in title for n in words(cat)[2]), (title, cat)
    with pytest.raises(ValueError, match="titles"):
        generate_shop(tmp_path / "x", n_users=5, n_items=5, titles="fr")
