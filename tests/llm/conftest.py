"""Fixtures for the LLM tests: a local OpenAI-compatible HTTP server and tiny catalogs."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from recsight.data.dataset import IdIndex, Interactions


class OpenAIStub:
    """A real HTTP server on 127.0.0.1 speaking /v1/embeddings and /v1/chat/completions.

    Embeddings come from `vectors` (text -> list) or, for other texts, a hashed
    bag of words; chat answers come from `reply(messages) -> str`."""

    def __init__(self) -> None:
        self.vectors: dict[str, list[float]] = {}
        self.dim = 8
        self.reply: Callable[[list[dict[str, str]]], str] = lambda m: "ok"
        self.requests: list[tuple[str, dict, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append((self.path, body, dict(self.headers)))
                if self.path == "/v1/embeddings":
                    data = [
                        {"object": "embedding", "index": i, "embedding": stub.embed(t)}
                        for i, t in enumerate(body["input"])
                    ]
                    out = {"object": "list", "data": data, "model": body["model"]}
                elif self.path == "/v1/chat/completions":
                    text = stub.reply(body["messages"])
                    out = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                "content": text}}]}  # fmt: skip
                else:
                    self.send_error(404)
                    return
                raw = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def embed(self, text: str) -> list[float]:
        if text in self.vectors:
            return self.vectors[text]
        v = np.zeros(self.dim)
        for word in text.lower().split():
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return v.tolist()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    s = OpenAIStub()
    yield s
    s.close()


def make_interactions(
    events: list[tuple[str, str, float]],
    items: pd.DataFrame,
    users: list[str],
) -> Interactions:
    """Interactions from (user, item, timestamp-in-days) view events over `items`' catalog."""
    item_index = IdIndex(items["item_id"].astype(str))
    user_index = IdIndex(users)
    n = len(events)
    feats = items.copy()
    feats["item_idx"] = np.arange(len(items))
    return Interactions(
        user_idx=user_index.index_of([e[0] for e in events]).astype(np.int32),
        item_idx=item_index.index_of([e[1] for e in events]).astype(np.int32),
        value=np.full(n, np.nan, np.float32),
        event_type=np.zeros(n, np.int8),
        event_types=("view",),
        seq=np.arange(n, dtype=np.int64),
        users=user_index,
        items=item_index,
        timestamp=np.array([e[2] * 86400.0 for e in events]),
        item_features=feats.set_index("item_idx"),
    )
