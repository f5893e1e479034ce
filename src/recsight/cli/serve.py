"""`recsight serve`: the HTTP service."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from recsight.cli.common import (
    DB_OPTION,
    ENGINE_OPTION,
    LLM_GGUF_OPTION,
    LLM_MODEL_OPTION,
    LLM_URL_OPTION,
    console,
    handle_errors,
)
from recsight.errors import InputError
from recsight.spark.session import check_engine

#: the interpreter's thread switch interval in the service's process (CPython: 5 ms)
SWITCH_INTERVAL_S = 0.001


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def serve(
        model: Path = typer.Option(..., "--model", help="Trained model or pipeline folder."),
        db: Path = DB_OPTION,
        port: int = typer.Option(8000, "--port", help="TCP port."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
        snapshot_dir: Path | None = typer.Option(
            None, "--snapshot-dir", help="Where POST /admin/snapshot writes Parquet files."
        ),
        leaderboard: Path | None = typer.Option(
            None, "--leaderboard", help="leaderboard.json shown on the dashboard."
        ),
        history_users: int = typer.Option(
            100_000,
            "--history-users",
            min=1,
            help="Users whose recent histories stay in memory (read from the store on first "
            "request; the least recently served are evicted).",
        ),
        min_group_size: int = typer.Option(
            5, "--min-group-size", min=1, help="Dashboard rows of fewer users are hidden."
        ),
        show_examples: bool = typer.Option(
            False, "--show-examples", help="List sample users on the dashboard."
        ),
        torch_threads: int = typer.Option(
            1,
            "--torch-threads",
            min=1,
            help="Torch intra-op threads for neural models, set once at start-up.",
        ),
        batch_window_ms: float = typer.Option(
            0.0,
            "--batch-window-ms",
            min=0.0,
            help="How long a recommendation request waits for concurrent ones to share its "
            "model pass (0: no wait; requests that arrive during a pass share the next).",
        ),
        llm_url: str | None = LLM_URL_OPTION,
        llm_model: str | None = LLM_MODEL_OPTION,
        llm_gguf: str | None = LLM_GGUF_OPTION,
        engine: str = ENGINE_OPTION,
    ) -> None:
        """Serve recommendations over HTTP, ingest events in real time, show a dashboard."""
        check_engine(engine, "serve", spark_ok=False)  # a service answers from one machine
        import uvicorn

        from recsight.serving.app import create_app
        from recsight.serving.service import API_KEY_ENV, config_from_env

        if not db.exists():
            raise InputError(f"{db}: no such store; create it with `recsight ingest`")
        from recsight.data.pseudonyms import UserIds
        from recsight.data.store import Store

        with Store(db, read_only=True) as store:
            UserIds.for_store(store)  # a pseudonymized store needs its key: say so before start
        config = config_from_env(
            model,
            db,
            snapshot_dir=snapshot_dir,
            leaderboard=leaderboard,
            history_users=history_users,
            min_group_size=min_group_size,
            show_examples=show_examples,
            torch_threads=torch_threads,
            batch_window_ms=batch_window_ms,
        )
        if llm_url or llm_gguf:
            from recsight.llm.generate import make_llm

            config.llm = make_llm(url=llm_url, model=llm_model, gguf=llm_gguf)
        if not config.api_key:
            console.print(
                f"[yellow]{API_KEY_ENV} is not set: POST /events and /admin/* are "
                "refused until it is[/]"
            )
        console.print(f"dashboard: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
        # The event loop and the micro-batch thread share the GIL, and each hand-off (a
        # torch pass, a socket write) can wait out the switch interval when the other thread
        # is busy: CPython's 5 ms made SASRec's p99 at 200 req/s 400-540 ms on a loaded
        # 2-core machine, 1 ms made it 31-33 ms (BENCHMARKS.md, Serving)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
