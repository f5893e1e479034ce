"""Data commands: generate, ingest, info, export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from recsight.cli.common import (
    DB_OPTION,
    EVENTS_OPTION,
    JSON_OPTION,
    QUIET_OPTION,
    console,
    handle_errors,
    open_data,
    parse_pairs,
    print_json,
)
from recsight.errors import InputError

if TYPE_CHECKING:
    from recsight.data.generate import ShopSummary
    from recsight.data.ingest import IngestReport
    from recsight.data.store import StoreInfo


def progress_bar(quiet: bool = False) -> Progress:
    """The Rich progress display the commands share (nothing under --quiet/--json)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    )


def print_ingest_report(report: IngestReport) -> None:
    """Rich rendering of an ingest report."""
    from recsight.data.ingest import DROP_REASONS

    table = Table(title=f"Ingest: {report.source} ({report.format})", show_header=True)
    table.add_column("")
    table.add_column("rows", justify="right")
    table.add_column("reason / example lines")
    table.add_row("read", f"{report.rows_read:,}", "")
    table.add_row(
        "kept",
        f"{report.kept:,}",
        f"{report.new_users:,} new users, {report.new_items:,} new items",
    )
    for reason, n in report.fixed.items():
        if reason != "rows":
            table.add_row("[yellow]fixed[/]", f"{n:,}", reason)
    for reason, n in report.dropped.items():
        lines = ", ".join(map(str, report.examples.get(reason, [])))
        why = DROP_REASONS.get(reason, reason)
        table.add_row(
            "[red]dropped[/]", f"{n:,}", f"{reason}: {why} ({report.example_unit}s {lines})"
        )
    for side in (report.items, report.users):
        if side is not None:
            extra = "; ".join(
                [f"{k}: {v}" for k, v in {**side.fixed, **side.dropped}.items()] + side.notes
            )
            table.add_row(
                Path(side.source).name,
                f"{side.kept:,}",
                f"{side.new:,} new, {side.updated:,} updated {extra}".strip(),
            )
    console.print(table)
    for note in report.notes:
        console.print(f"[dim]note:[/] {note}")
    console.print(f"[dim]{report.seconds:.2f} s, timestamps read in {report.timezone}[/]")


def print_info(info: StoreInfo) -> None:
    """Rich rendering of a store summary."""
    table = Table(title=f"Store {info.db}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("events", f"{info.n_events:,}")
    table.add_row("users with events", f"{info.n_users:,}")
    table.add_row("items with events", f"{info.n_items:,}")
    table.add_row("catalog items / users", f"{info.n_catalog_items:,} / {info.n_catalog_users:,}")
    table.add_row("event types", ", ".join(f"{k} {v:,}" for k, v in info.event_types.items()))
    table.add_row("raw types", ", ".join(f"{k} {v:,}" for k, v in info.raw_event_types.items()))
    tr = info.time_range
    table.add_row("time range", f"{tr['min']} .. {tr['max']}" if tr["min"] else "no timestamps")
    table.add_row("sparsity", "-" if info.sparsity is None else f"{info.sparsity:.4%}")
    if info.rating_histogram:
        table.add_row("ratings", ", ".join(f"{k}: {v:,}" for k, v in info.rating_histogram.items()))
    table.add_row("time zone", info.timezone)
    console.print(table)


def run_generate(
    out: Path, users: int, items: int, days: int, seed: int, quiet: bool = False, **options: Any
) -> ShopSummary:
    """Generate a synthetic shop log into `out` with a progress display; `options` are
    `recsight.data.generate.generate_shop`'s (layout, titles)."""
    from recsight.data.generate import generate_shop

    with progress_bar(quiet) as progress:
        task = progress.add_task("generating shop", total=users)
        return generate_shop(
            out,
            n_users=users,
            n_items=items,
            n_days=days,
            seed=seed,
            progress=lambda n: progress.update(task, completed=n),
            **options,
        )


def run_ingest(
    db: Path, events: Path, *, quiet: bool = False, pseudonymize: bool = False, **options: Any
) -> IngestReport:
    """Ingest with a progress display; a failed ingest leaves no new store file behind.
    `pseudonymize` stores user ids as keyed hashes (key from RECSIGHT_PSEUDONYM_KEY);
    `options` are `recsight.data.ingest.ingest`'s (items, users, fmt, mapping, tz, dedupe,
    fill_rating, rating_scale)."""
    from recsight.data.ingest import ingest
    from recsight.data.pseudonyms import pseudonym_key
    from recsight.data.store import Store

    key = pseudonym_key(required=True) if pseudonymize else None
    existed = db.exists()
    steps = ["reading", "checking", "writing"]
    try:
        with progress_bar(quiet) as progress, Store(db) as store:
            task = progress.add_task(f"ingest {events}", total=len(steps))

            def step(name: str) -> None:
                progress.update(task, completed=steps.index(name), description=f"{name} {events}")

            report = ingest(store, events, progress=step, pseudonym_key=key, **options)
            progress.update(task, completed=len(steps))
    except BaseException:
        if not existed:
            for leftover in (db, db.with_name(db.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
    return report


def _parse_scale(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--rating-scale {text!r}: expected MIN,MAX such as 1,5") from None
    if lo >= hi:
        raise InputError(f"--rating-scale {text!r}: MIN must be below MAX")
    return lo, hi


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def generate(
        out: Path = typer.Option(..., "--out", help="Folder to write events/items/users to."),
        users: int = typer.Option(2000, "--users", min=1, help="Number of users."),
        items: int = typer.Option(500, "--items", min=1, help="Number of items."),
        days: int = typer.Option(60, "--days", min=1, help="Days the log spans."),
        seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same data)."),
        layout: bool = typer.Option(
            False,
            "--layout",
            help="Write the canonical dataset layout (events/event_date=.../, manifest) that "
            "--events DIR, Spark and ingest read; streamed, so 100M events fit in memory.",
        ),
        titles: str = typer.Option(
            "en", "--titles", help="Language of item titles and descriptions: en or zh."
        ),
        json_out: bool = JSON_OPTION,
        quiet: bool = QUIET_OPTION,
    ) -> None:
        """Generate a synthetic shop log (events.parquet, items, users)."""
        if titles not in ("en", "zh"):
            raise InputError(f"--titles {titles!r}: expected en or zh")
        summary = run_generate(
            out, users, items, days, seed, quiet=quiet or json_out, layout=layout, titles=titles
        )
        if json_out:
            print_json(summary.__dict__)
        elif not quiet:
            console.print(
                f"wrote {summary.n_events:,} events of {summary.n_users:,} users on "
                f"{summary.n_items:,} items to {out}: "
                + ", ".join(f"{k} {v:,}" for k, v in summary.event_counts.items())
            )

    @app.command("ingest")
    @handle_errors
    def ingest_cmd(
        events: Path = typer.Argument(..., help="Events file or folder."),
        items: Path | None = typer.Option(None, "--items", help="Items file (csv/parquet/jsonl)."),
        users: Path | None = typer.Option(None, "--users", help="Users file."),
        fmt: str | None = typer.Option(
            None,
            "--format",
            help="movielens-100k, movielens-1m, taobao, csv, parquet, jsonl "
            "(detected when omitted).",
        ),
        maps: list[str] | None = typer.Option(
            None, "--map", help="Column mapping canonical=source, e.g. user_id=visitorid."
        ),
        tz: str | None = typer.Option(
            None, "--tz", help="Time zone of naive timestamps (default UTC; Taobao: Asia/Shanghai)."
        ),
        dedupe: str = typer.Option("exact", "--dedupe", help="exact or none."),
        fill_rating: str = typer.Option(
            "none", "--fill-rating", help="none, item-mean, user-mean or global-mean."
        ),
        rating_scale: str | None = typer.Option(
            None, "--rating-scale", help="MIN,MAX of valid ratings (MovieLens: 1,5)."
        ),
        pseudonymize: bool = typer.Option(
            False,
            "--pseudonymize",
            help="Store user (and session) ids as HMAC-SHA256 pseudonyms keyed by "
            "RECSIGHT_PSEUDONYM_KEY; the mapping is never stored.",
        ),
        db: Path = DB_OPTION,
        json_out: bool = JSON_OPTION,
        quiet: bool = QUIET_OPTION,
    ) -> None:
        """Ingest a behavior log into the store and report rows kept, fixed and dropped."""
        report = run_ingest(
            db,
            events,
            quiet=quiet or json_out,
            pseudonymize=pseudonymize,
            items=items,
            users=users,
            fmt=fmt,
            mapping=parse_pairs(maps, "--map"),
            tz=tz,
            dedupe=dedupe,
            fill_rating=fill_rating,
            rating_scale=_parse_scale(rating_scale),
        )
        if json_out:
            print_json(report.to_dict())
        elif not quiet:
            print_ingest_report(report)

    @app.command()
    @handle_errors
    def info(
        db: Path = DB_OPTION, events: Path | None = EVENTS_OPTION, json_out: bool = JSON_OPTION
    ) -> None:
        """Summarise the store (or a layout): counts, sparsity, time range, event types, ratings."""
        with open_data(db, events) as store:
            summary = store.info()
        if json_out:
            print_json(summary.to_dict())
        else:
            print_info(summary)

    @app.command()
    @handle_errors
    def export(
        out: Path = typer.Option(..., "--out", help="Folder for the dataset layout."),
        db: Path = DB_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Export the store to the Parquet dataset layout (events/event_date=.../, items,
        users, manifest.json) that `--events DIR`, Spark and `recsight ingest DIR` read."""
        from recsight.data.layout import export_store
        from recsight.data.store import Store

        with Store(db, read_only=True) as store:
            manifest = export_store(store, out)
        if json_out:
            print_json(manifest.to_dict())
        else:
            console.print(
                f"wrote {manifest.n_events:,} events of {manifest.n_users:,} users on "
                f"{manifest.n_items:,} items to {out} (events/, items.parquet, users.parquet, "
                "manifest.json)"
            )
