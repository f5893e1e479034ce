"""Topic quality against categories the model does not see, and the time to build topics.

Datasets (item text only; the categories are used for scoring, never for fitting):

- ``ml100k``: MovieLens 100K, titles only ("Toy Story (1995)"), against the 19 genres. Movies
  have several genres; NMI and ARI are scored against the *first listed* genre (the reader's
  `category`), and ``purity`` is multi-label: the share of items whose topic's most common
  genre (counted over all genres of the topic's items) is one of the item's own genres.
- ``shop``: a generated shop (`recsight generate`, 2,000 items, 30 categories), titles and
  descriptions, its category column removed, against the true categories.
- ``shop_zh``: the same shop with Chinese titles and descriptions (``--titles zh``).

Methods: the default multilingual encoder (``use``), MiniLM (``minilm``), and a baseline
without any language model (``tfidf``: TF-IDF over the same tokens the topic names use, 2-4
character n-grams for Chinese, reduced to 256 dimensions by truncated SVD), and the chance
level (``random``: unit noise vectors, so topics unrelated to the text). All of them go
through the same `TopicModel` (k-means, seeded), so the embedding is the only difference, with
k chosen by the silhouette (``auto``) and with k set to the true number of categories
(``true k``), which separates the embedding's quality from the choice of k.

Timing: `build_topics` on a store of a generated shop of ``--time-items`` items (default
100,000) with the default encoder, embedding cache empty: total, of which encoding. The
machine is shared: times are upper bounds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_topics.py [--only ml100k,shop,...]
        [--methods use,minilm,tfidf,random] [--time-items 100000] [--no-time]

Writes benchmarks/results/topics.json (each finished cell is kept, so a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # noqa: E402

from recsight.data.generate import generate_shop  # noqa: E402
from recsight.data.readers import read_movielens_100k  # noqa: E402
from recsight.datasets import data_dir  # noqa: E402
from recsight.llm.encoders import EmbeddingCache, encode_texts, item_texts, make_encoder  # noqa: E402
from recsight.llm.topics import TopicModel, tokenize  # noqa: E402

OUT = Path(__file__).parent / "results" / "topics.json"
SEED = 0
console = Console()


def load_ml100k() -> tuple[list[str], list[str], list[list[str]]]:
    """(titles, first genre, all genres) of ML-100K's 1,682 movies."""
    root = data_dir()
    if root is None or not (root / "ml-100k" / "u.item").is_file():
        raise SystemExit("ML-100K not found: set RECSIGHT_DATA_DIR (../shared/data)")
    items = read_movielens_100k(root / "ml-100k" / "u.data").items
    genres = [list(g) for g in items.tags]
    return items.title.astype(str).tolist(), items.category.astype(str).tolist(), genres


def load_shop(titles: str, n_items: int = 2000) -> tuple[list[str], list[str], list[list[str]]]:
    """(texts without the category, true category, [category]) of a generated shop."""
    with tempfile.TemporaryDirectory() as tmp:
        shop = generate_shop(tmp, n_users=50, n_items=n_items, n_days=5, seed=SEED, titles=titles)
        items = pd.read_parquet(shop.files["items"])
    texts = item_texts(items.drop(columns=["category"]))
    cats = items.category.astype(str).tolist()
    return texts, cats, [[c] for c in cats]


def tfidf_vectors(texts: list[str], dim: int = 256) -> np.ndarray:
    """TF-IDF over `tokenize`'s terms, truncated SVD to `dim`, rows L2-normalised."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer(analyzer=tokenize, sublinear_tf=True).fit_transform(texts)
    dim = min(dim, x.shape[1] - 1)
    z = TruncatedSVD(dim, random_state=SEED).fit_transform(x)
    n = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.where(n > 0, n, 1)).astype(np.float32)


def embed(method: str, texts: list[str], cache: EmbeddingCache) -> np.ndarray:
    if method == "tfidf":
        return tfidf_vectors(texts)
    if method == "random":  # the chance level: k-means over noise, through the same model
        z = np.random.default_rng(SEED).standard_normal((len(texts), 64))
        return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
    return encode_texts(make_encoder(method), texts, cache, progress=True)


def purity(topics: np.ndarray, genres: list[list[str]]) -> float:
    """Share of items whose topic's most common genre is one of their own genres."""
    best: dict[int, str] = {}
    for t in np.unique(topics):
        counts: dict[str, int] = {}
        for i in np.flatnonzero(topics == t):
            for g in genres[i]:
                counts[g] = counts.get(g, 0) + 1
        best[int(t)] = min(counts, key=lambda g: (-counts[g], g)) if counts else ""
    return float(np.mean([best[int(t)] in g for t, g in zip(topics, genres, strict=True)]))


def score(topics: np.ndarray, truth: list[str], genres: list[list[str]]) -> dict[str, float]:
    return {
        "nmi": round(float(normalized_mutual_info_score(truth, topics)), 4),
        "ari": round(float(adjusted_rand_score(truth, topics)), 4),
        "purity": round(purity(topics, genres), 4),
    }


def run_cell(name: str, method: str, data, cache: EmbeddingCache) -> dict:
    texts, truth, genres = data
    t0 = time.perf_counter()
    x = embed(method, texts, cache)
    t_embed = time.perf_counter() - t0
    n_true = len(set(truth))
    out: dict = {"n_items": len(texts), "n_categories": n_true, "embed_s": round(t_embed, 1)}
    for label, k in (("auto", "auto"), ("true_k", n_true)):
        t0 = time.perf_counter()
        m = TopicModel(k=k, seed=SEED).fit(x, texts)
        out[label] = {
            "k": m.k_,
            **score(m.labels_, truth, genres),
            "fit_s": round(time.perf_counter() - t0, 1),
            "examples": [t.label for t in m.topics_[:5]],
        }
        if k == "auto":
            out[label]["silhouette"] = {str(a): b for a, b in m.silhouette_.items()}
    return out


def time_build(n_items: int) -> dict:
    """`build_topics` on a fresh store of a generated shop of `n_items` items (no cache)."""
    from recsight.data.ingest import ingest
    from recsight.data.store import Store
    from recsight.llm import topics as topics_mod

    with tempfile.TemporaryDirectory() as tmp:
        shop = generate_shop(Path(tmp) / "shop", n_users=2000, n_items=n_items, n_days=10, seed=1)
        items = pd.read_parquet(shop.files["items"]).drop(columns=["category"])
        items.to_parquet(Path(tmp) / "items.parquet")
        with Store(Path(tmp) / "s.duckdb") as store:
            ingest(store, shop.files["events"], items=Path(tmp) / "items.parquet")
            steps: dict[str, float] = {}
            last = [time.perf_counter(), ""]

            def on_step(s: str) -> None:
                now = time.perf_counter()
                if last[1]:
                    steps[last[1]] = round(now - last[0], 1)
                last[:] = [now, s.split(" ")[0]]

            t0 = time.perf_counter()
            rep = topics_mod.build_topics(store, on_step=on_step, progress=True)
            total = time.perf_counter() - t0
            steps[last[1]] = round(time.perf_counter() - last[0], 1)
    return {
        "n_items": n_items,
        "k": rep.k,
        "total_s": round(total, 1),
        "steps_s": steps,
        "encoder": rep.model,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="ml100k,shop,shop_zh")
    ap.add_argument("--methods", default="use,minilm,tfidf,random")
    ap.add_argument("--time-items", type=int, default=100_000)
    ap.add_argument("--no-time", action="store_true")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "bench_topics.duckdb"))
    args = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores (shared), 1 thread"
    results.setdefault("cells", {})
    loaders = {
        "ml100k": load_ml100k,
        "shop": lambda: load_shop("en"),
        "shop_zh": lambda: load_shop("zh"),
    }
    cache = EmbeddingCache(args.cache)
    for name in args.only.split(","):
        data = loaders[name]()
        for method in args.methods.split(","):
            key = f"{name}/{method}"
            if key in results["cells"]:
                continue
            console.print(f"[bold]{key}[/bold]")
            results["cells"][key] = run_cell(name, method, data, cache)
            OUT.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    if not args.no_time and "build_time" not in results:
        console.print(f"[bold]build_topics on {args.time_items:,} items[/bold]")
        results["build_time"] = time_build(args.time_items)
        OUT.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")

    table = Table(title="Topics vs known categories (NMI / ARI / purity)")
    for col in ("data", "method", "k auto", "NMI", "ARI", "purity", "true k: NMI", "ARI", "pur."):
        table.add_column(col)
    for key, c in results["cells"].items():
        data, method = key.split("/")
        a, t = c["auto"], c["true_k"]
        table.add_row(data, method, str(a["k"]), f"{a['nmi']:.3f}", f"{a['ari']:.3f}",
                      f"{a['purity']:.3f}", f"{t['nmi']:.3f}", f"{t['ari']:.3f}",
                      f"{t['purity']:.3f}")  # fmt: skip
    console.print(table)
    if "build_time" in results:
        console.print(results["build_time"])


if __name__ == "__main__":
    main()
