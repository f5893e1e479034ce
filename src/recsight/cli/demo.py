"""`recsight demo`: the main job, end to end, on a shop log it generates itself.

generate -> ingest -> behavior report -> train and evaluate a handful of models into a
leaderboard -> build the serving pipeline -> a few users' recommendations with explanations
-> how to start the service.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import typer
from rich.table import Table

from recsight.cli.common import QUIET_OPTION, console, handle_errors
from recsight.cli.data import (
    print_info,
    print_ingest_report,
    progress_bar,
    run_generate,
    run_ingest,
)

#: The demo's models: classic, neural, text-aware, plus popularity as the floor.
DEMO_MODELS: list[dict] = [
    {"name": "popular"},
    {"name": "itemknn"},
    {"name": "ease", "params": {"reg": 250.0}},
    {"name": "als"},
    {"name": "sasrec", "params": {"epochs": 8}},
    {"name": "content"},
    {"name": "hybrid"},
]


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def demo(
        out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's files."),
        users: int = typer.Option(3000, "--users", min=50, help="Users in the generated shop."),
        items: int = typer.Option(800, "--items", min=50, help="Items in the generated shop."),
        days: int = typer.Option(60, "--days", min=7, help="Days the log spans."),
        seed: int = typer.Option(7, "--seed", help="Random seed."),
        quiet: bool = QUIET_OPTION,
    ) -> None:
        """Run the main job end to end on a generated shop log."""
        run_demo(out, users, items, days, seed, quiet)


def run_demo(out: Path, users: int, items: int, days: int, seed: int, quiet: bool = False) -> dict:
    """The main job; returns paths and figures (used by the test of the demo)."""
    from recsight.analysis import analyze, from_store, write_report
    from recsight.analysis.groups import GroupPolicy
    from recsight.data.store import Store
    from recsight.evaluation.experiment import ExperimentRunner, parse_experiment
    from recsight.evaluation.leaderboard import rich_tables, write_html, write_json
    from recsight.models.manifest import write_manifest
    from recsight.models.registry import available_models, create_model
    from recsight.privacy import DEFAULT_MIN_GROUP_SIZE
    from recsight.serving.pipeline import Pipeline

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    shop, db = out / "shop", out / "recsight.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)

    console.rule("1. Generate a shop log")
    summary = run_generate(shop, users, items, days, seed)
    console.print(
        f"{summary.n_events:,} events of {summary.n_users:,} users on "
        f"{summary.n_items:,} items -> {shop}"
    )

    console.rule("2. Ingest it into the store")
    report = run_ingest(db, shop, quiet=quiet)
    print_ingest_report(report)
    with Store(db, read_only=True) as store:
        print_info(store.info())

    console.rule("3. Behavior report")
    with progress_bar() as bar, Store(db, read_only=True) as store:
        task = bar.add_task("analyzing", total=None)
        src = from_store(store)
        src.privacy = GroupPolicy(DEFAULT_MIN_GROUP_SIZE)  # as `recsight analyze` does
        analysis = analyze(src, progress=lambda s: bar.update(task, description=f"analyzing {s}"))
        files = write_report(analysis, out / "report")
    takeaways = [c.takeaway for c in analysis.charts if c.takeaway]
    for line in takeaways[:6]:
        console.print(f"  • {line}")
    console.print(f"report: {files['html']} (JSON twin: {files['json']})")

    console.rule("4. Train and evaluate models (full ranking, each user's last 20% held out)")
    models = available_models()
    wanted = [m for m in DEMO_MODELS if m["name"] in models]
    cfg = parse_experiment(
        {
            "name": "demo-shop",
            "task": "ranking",
            # absolute: an experiment's relative paths are read from its own folder (`out`)
            "dataset": {"db": str(db.resolve())},
            "split": "user_random:0.8",
            "models": wanted,
            "ks": [10, 20],
            "metrics": ["recall", "ndcg", "hr", "coverage", "novelty"],
            "bootstrap": 200,
            "seed": seed,
        },
        source="demo",
    )
    with progress_bar() as bar:
        task = bar.add_task("starting", total=None)
        board = ExperimentRunner(cfg, out, progress=lambda m: bar.update(task, description=m)).run()
    lb_json = write_json(board, out / "leaderboard.json")
    write_html(board, out / "leaderboard.html")
    for table in rich_tables(board):
        console.print(table)
    best = board.best.get("ndcg@10") or wanted[0]["name"]
    console.print(f"best by NDCG@10: [bold]{best}[/]  ({lb_json})")

    console.rule("5. Build the serving pipeline")
    best_cfg = next((m for m in wanted if m.get("label", m["name"]) == best), wanted[0])
    pipeline_dir = out / "pipeline"
    shutil.rmtree(pipeline_dir, ignore_errors=True)
    with Store(db, read_only=True) as store:
        data = store.interactions()
        items_frame = store.items_frame()
    with progress_bar() as bar:
        task = bar.add_task(f"fitting {best_cfg['name']} on all events", total=None)
        create_model(best_cfg["name"], **best_cfg.get("params", {})).fit(data).save(
            pipeline_dir / "main"
        )
        fallbacks = []
        if "content" in models and best_cfg["name"] != "content":
            bar.update(task, description="fitting the content fallback (new items, text queries)")
            create_model("content").fit(data).save(pipeline_dir / "content")
            fallbacks.append("content")
    cutoff = None
    if data.has_timestamps:
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(data.timestamp.max())))
    write_manifest(
        pipeline_dir,
        "main",
        fallbacks,
        training_cutoff=cutoff,
        config={"model": best_cfg, "leaderboard": str(lb_json)},
    )
    shutil.copy(lb_json, pipeline_dir / "leaderboard.json")
    pipeline = Pipeline.load(pipeline_dir, items_frame)
    console.print(f"pipeline {pipeline.version} -> {pipeline_dir}")

    console.rule("6. Recommendations with explanations")
    from recsight.serving.history import HistoryCache

    with Store(db, read_only=True) as store:
        cache = HistoryCache(lambda user, n: store.recent_events(user, n))
        sample = [
            r[0]
            for r in store.con.execute(
                "SELECT user_id FROM events GROUP BY 1 HAVING count(*) BETWEEN 20 AND 80 "
                "ORDER BY user_id LIMIT 3"
            ).fetchall()
        ]
        histories = {user: cache.get(user) for user in sample}
    shown = {}
    for user in sample:
        history = histories[user]
        recs = pipeline.recommend(history, k=5, explain=True)
        table = Table(
            title=f"user {user} ({len(history.items)} recent events; answered by {recs.source})"
        )
        table.add_column("#", justify="right")
        table.add_column("item")
        table.add_column("why")
        for pos, r in enumerate(recs.items, 1):
            table.add_row(str(pos), r.title or r.item_id, r.explanation or "")
        console.print(table)
        shown[user] = [r.item_id for r in recs.items]

    console.rule("Next: serve it")
    console.print(
        f"  export RECSIGHT_API_KEY=change-me\n"
        f"  recsight serve --model {pipeline_dir} --db {db} --port 8000\n"
        "  then open http://127.0.0.1:8000/ (dashboard) and http://127.0.0.1:8000/docs (API)"
    )
    seconds = time.perf_counter() - started
    console.print(f"[dim]demo finished in {seconds:.0f} s[/]")
    result = {
        "db": str(db),
        "report": str(files["html"]),
        "leaderboard": str(lb_json),
        "pipeline": str(pipeline_dir),
        "best": best,
        "recommendations": shown,
        "seconds": round(seconds, 1),
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    return result
