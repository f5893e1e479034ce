"""LLM-assistance figures: encoder throughput, cold-item recommendation, a Chinese retrieval check.

- Throughput: items/s of each packaged encoder on the ML-1M movie texts, one thread, no cache.
- Cold items: 20% of the items that have events are held out entirely (training sees none of
  their events) plus a random 20% of the other (user, item) pairs; Recall@20 / NDCG@20, full
  ranking, excluding training items, under three protocols: ``cold`` (rank only the held-out
  items: recommending new items), ``mixed`` (rank the whole catalog against all held-out
  events) and ``warm`` (whole catalog against the warm held-out pairs).
- Chinese check: Chinese genre queries against the English ML-100K catalog; precision@10 of
  items carrying the queried genre.

Writes benchmarks/results/llm.json.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_llm.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from recsight.data.dataset import Interactions  # noqa: E402
from recsight.data.generate import generate_shop  # noqa: E402
from recsight.data.ingest import ingest  # noqa: E402
from recsight.data.store import Store  # noqa: E402
from recsight.datasets import data_dir  # noqa: E402
from recsight.evaluation.protocol import evaluate_ranking  # noqa: E402
from recsight.llm.coldstart import CandidateScorer, HybridRecommender, cold_item_split  # noqa: E402
from recsight.llm.content import ContentRecommender  # noqa: E402
from recsight.llm.encoders import item_texts, make_encoder  # noqa: E402
from recsight.models.popular import MostPopular  # noqa: E402

torch.set_num_threads(1)
OUT = Path(__file__).parent / "results" / "llm.json"
METRICS = ("recall@20", "ndcg@20")

CHINESE_QUERIES = [
    ("恐怖片，吓人的鬼怪故事", "Horror"),
    ("浪漫的爱情电影", "Romance"),
    ("给小孩子看的动画片", "Animation"),
    ("战争片，士兵和战场", "War"),
    ("科幻电影，外星人和太空", "Sci-Fi"),
    ("西部片，牛仔", "Western"),
    ("音乐歌舞片", "Musical"),
    ("纪录片", "Documentary"),
    ("犯罪电影，黑帮和警察", "Crime"),
    ("搞笑的喜剧", "Comedy"),
    ("悬疑推理片，侦探", "Mystery"),
    ("惊悚片", "Thriller"),
    ("动作片，打斗和爆炸", "Action"),
    ("奇幻电影，魔法", "Fantasy"),
    ("儿童电影，适合全家观看", "Children's"),
]


def load_store(path: Path, source: Path) -> Interactions:
    with Store(path) as s:
        if not s.count("events"):
            ingest(s, source)
        return s.interactions()


def concat(a: Interactions, b: Interactions) -> Interactions:
    ts = None if a.timestamp is None else np.r_[a.timestamp, b.timestamp]
    return replace(
        a,
        user_idx=np.r_[a.user_idx, b.user_idx],
        item_idx=np.r_[a.item_idx, b.item_idx],
        value=np.r_[a.value, b.value],
        event_type=np.r_[a.event_type, b.event_type],
        seq=np.r_[a.seq, b.seq],
        timestamp=ts,
    )


def throughput(data: Interactions, encoders: list[str]) -> dict[str, dict[str, float]]:
    texts = item_texts(data.item_features)
    out = {}
    for name in encoders:
        t0 = time.perf_counter()
        enc = make_encoder(name)
        enc.encode(texts[:8])
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(0, len(texts), 256):
            enc.encode(texts[s : s + 256])
        sec = time.perf_counter() - t0
        out[name] = {
            "items": len(texts),
            "seconds": round(sec, 2),
            "items_per_s": round(len(texts) / sec, 1),
            "load_s": round(load, 2),
        }
    return out


def cold_start(data: Interactions, encoders: list[str], cache_db: str) -> dict:
    sp = cold_item_split(data, cold_share=0.2, warm_test_share=0.2, seed=42)
    mixed = concat(sp.test_cold, sp.test_warm)
    models = {"popular": MostPopular()}
    for enc in encoders:
        models[f"content[{enc}]"] = ContentRecommender(encoder=enc, cache_db=cache_db)
        models[f"hybrid[{enc}]"] = HybridRecommender(encoder=enc, cache_db=cache_db)
    rows = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(sp.train)
        fit_s = time.perf_counter() - t0
        res = {"fit_s": round(fit_s, 2)}
        for proto, scorer, test in (
            ("cold", CandidateScorer(model, sp.cold_items), sp.test_cold),
            ("mixed", model, mixed),
            ("warm", model, sp.test_warm),
        ):
            r = evaluate_ranking(scorer, sp.train, test, ks=(20,), metrics=["recall", "ndcg"])
            res[proto] = {
                "recall@20": round(r.summary["recall@20"], 4),
                "ndcg@20": round(r.summary["ndcg@20"], 4),
                "users": int(len(r.users)),
            }
        rows[name] = res
    return {"split": sp.report, "models": rows}


def chinese_check(data: Interactions, encoders: list[str]) -> dict[str, float]:
    tags = data.item_features["tags"].reindex(range(data.n_items))
    genres = [set(t) if isinstance(t, (list, np.ndarray)) else set() for t in tags]
    texts = item_texts(data.item_features.reindex(range(data.n_items)))
    out = {}
    for name in encoders:
        enc = make_encoder(name)
        items = np.concatenate([enc.encode(texts[s : s + 256]) for s in range(0, len(texts), 256)])
        q = enc.encode([c for c, _ in CHINESE_QUERIES])
        top = np.argsort(-(q @ items.T), axis=1)[:, :10]
        hits = [
            np.mean([g in genres[i] for i in row])
            for row, (_, g) in zip(top, CHINESE_QUERIES, strict=True)
        ]
        out[name] = round(float(np.mean(hits)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["use", "minilm"])
    ap.add_argument("--shop-users", type=int, default=5000)
    ap.add_argument("--shop-items", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=None, help="folder for the stores (temp)")
    args = ap.parse_args()
    root = data_dir()
    if root is None:
        raise SystemExit("shared data folder not found: set RECSIGHT_DATA_DIR")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_llm_"))
    work.mkdir(parents=True, exist_ok=True)
    console = Console()
    result: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": 1,
        },  # fmt: skip
        "encoders": args.encoders,
    }
    ml100k = load_store(work / "ml100k.duckdb", root / "ml-100k")
    ml1m = load_store(work / "ml1m.duckdb", root / "ml-1m" / "ratings_users_0001-2999.dat")
    shop_dir = work / "shop"
    if not (shop_dir / "events.parquet").exists():
        generate_shop(shop_dir, n_users=args.shop_users, n_items=args.shop_items, seed=0)
    shop = load_store(work / "shop.duckdb", shop_dir)

    result["throughput"] = throughput(ml1m, args.encoders)
    console.print("throughput", result["throughput"])
    result["chinese_genre_precision@10"] = chinese_check(ml100k, args.encoders)
    console.print("chinese check", result["chinese_genre_precision@10"])
    result["cold_start"] = {}
    shop_name = f"shop ({args.shop_users} users, {args.shop_items} items)"
    for name, data in (("ML-100K", ml100k), ("ML-1M (users 1-2,999)", ml1m), (shop_name, shop)):
        res = cold_start(data, args.encoders, str(work / "cache.duckdb"))
        result["cold_start"][name] = res
        table = Table(title=f"{name}: cold-item split {res['split']}")
        for col in ("model", "fit s", "cold R@20", "cold N@20", "mixed R@20", "mixed N@20",
                    "warm R@20", "warm N@20"):  # fmt: skip
            table.add_column(col)
        for model, r in res["models"].items():
            cells = [f"{r[p][m]:.4f}" for p in ("cold", "mixed", "warm") for m in METRICS]
            table.add_row(escape(model), f"{r['fit_s']:.1f}", *cells)
        console.print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    previous.update(result)
    OUT.write_text(json.dumps(previous, indent=2) + "\n")
    console.print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
