"""`recsight demo`: the main job on a shop log it generates itself."""

from __future__ import annotations

from pathlib import Path

import typer

from recsight.cli.common import QUIET_OPTION, console, handle_errors
from recsight.cli.data import print_info, print_ingest_report, run_ingest
from recsight.data.generate import generate_shop
from recsight.data.store import Store


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def demo(
        out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's files."),
        users: int = typer.Option(3000, "--users", min=10, help="Users in the generated shop."),
        items: int = typer.Option(800, "--items", min=10, help="Items in the generated shop."),
        days: int = typer.Option(60, "--days", min=1, help="Days the log spans."),
        seed: int = typer.Option(7, "--seed", help="Random seed."),
        quiet: bool = QUIET_OPTION,
    ) -> None:
        """Run the main job end to end on a generated shop log."""
        out.mkdir(parents=True, exist_ok=True)
        shop, db = out / "shop", out / "recsight.duckdb"
        for stale in (db, db.with_name(db.name + ".wal")):
            stale.unlink(missing_ok=True)
        console.rule("1. Generate a shop log")
        with console.status("generating"):
            summary = generate_shop(shop, n_users=users, n_items=items, n_days=days, seed=seed)
        console.print(
            f"{summary.n_events:,} events, {summary.n_users:,} users, "
            f"{summary.n_items:,} items -> {shop}"
        )
        console.rule("2. Ingest it into the store")
        report = run_ingest(db, shop, quiet=quiet)
        print_ingest_report(report)
        console.rule("3. Dataset summary")
        with Store(db, read_only=True) as store:
            print_info(store.info())
        console.print(f"\nNext: [bold]recsight info --db {db}[/]")
