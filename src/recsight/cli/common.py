"""Helpers shared by the CLI modules: consoles, error handling, option parsing."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from recsight.errors import InputError, RecsightError
from recsight.extras import missing_extra

if TYPE_CHECKING:
    from recsight.data.store import Store

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

DB_OPTION = typer.Option(Path("recsight.duckdb"), "--db", help="Store (DuckDB file).")
JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON only.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")
EVENTS_OPTION = typer.Option(
    None,
    "--events",
    help="Read a dataset layout folder (`recsight export`/`generate` output) instead of --db.",
)
# execution engine (`recsight.spark.session`): the embedded default, or an Apache Spark cluster
ENGINE_OPTION = typer.Option(
    "local", "--engine", help="local (DuckDB + PyTorch on this machine) or spark."
)
SPARK_MASTER_OPTION = typer.Option(
    None,
    "--spark-master",
    envvar="SPARK_MASTER",
    help="Spark master URL: local[*] (default), spark://HOST:7077, sc://HOST:15002 (Spark "
    "Connect), yarn, k8s://...",
)
SPARK_CONF_OPTION = typer.Option(
    None,
    "--spark-conf",
    help="Spark setting key=value (repeatable), e.g. spark.executor.memory=4g.",
)
# generative-LLM options (analyze, profile, recommend --explain, serve): an LLM only rewords
# grounded template text, and text that names anything outside the evidence is rejected
LLM_URL_OPTION = typer.Option(None, "--llm-url", help="OpenAI-compatible chat endpoint.")
LLM_MODEL_OPTION = typer.Option(None, "--llm-model", help="Model name at --llm-url.")
LLM_GGUF_OPTION = typer.Option(None, "--llm-gguf", help="Local GGUF model file.")

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn a `RecsightError` into one clear line on stderr and its exit code (no traceback);
    a missing optional dependency becomes the line naming the extra that installs it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return fn(*args, **kwargs)
            except ModuleNotFoundError as exc:
                missing = missing_extra(exc, f"`recsight {fn.__name__.removesuffix('_cmd')}`")
                if missing is None:
                    raise
                raise missing from None
        except RecsightError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def open_data(db: Path, events: Path | None) -> Store:
    """The data a command reads: the layout at `events` (read in place through DuckDB) when
    given, else the store at `db`, both read-only."""
    from recsight.data.store import Store

    if events is not None:
        from recsight.data.layout import open_store

        return open_store(events)
    return Store(db, read_only=True)


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """`["a=b", "c=d"]` -> `{"a": "b", "c": "d"}`, with a clear error for a malformed pair."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"{option} {pair!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """`--param key=value`: values parsed as JSON when they parse (2, 1e-3, true, [1,2]),
    else kept as strings."""
    params: dict[str, Any] = {}
    for key, value in parse_pairs(pairs, "--param").items():
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def print_json(obj: Any) -> None:
    """Print JSON to stdout without Rich markup or wrapping."""
    typer.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))
