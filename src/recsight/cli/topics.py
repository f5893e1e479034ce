"""`recsight topics`: topics from item text, stored as derived item attributes; and the step
that `analyze` and `train` run first, building them when the catalog has text but no
categories (or refreshing them when its texts changed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from recsight.cli.common import (
    DB_OPTION,
    JSON_OPTION,
    LLM_GGUF_OPTION,
    LLM_MODEL_OPTION,
    LLM_URL_OPTION,
    QUIET_OPTION,
    console,
    err_console,
    handle_errors,
    print_json,
)
from recsight.errors import InputError


def parse_k(text: str) -> int | str:
    """`--k`: ``auto`` or a positive number of topics."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise InputError(f"--k {text!r}: expected 'auto' or a positive number of topics")
    return k


def auto_topics(db: Path, show: bool, llm: Any = None) -> str | None:
    """Before `analyze`/`train` on a store: build topics when its catalog has item text but
    no categories and none are stored (or the texts changed since), with the parameters they
    were last built with (and `llm`, the command's configured generative model, renaming
    them under the grounding rule). Returns a one-line note of what happened, None when
    nothing was needed. A store held by another process, or a missing encoder package, only
    skips it."""
    if not db.is_file():
        return None
    from recsight.data.store import Store, StoreBusyError
    from recsight.llm.topics import build_topics, stored_params, topics_status

    try:
        with Store(db, read_only=True) as store:
            status = topics_status(store)
            params = stored_params(store)
    except InputError:
        return None  # the command itself reports an unreadable store
    if status not in ("missing", "stale"):
        return None
    status_line = err_console.status("building topics from item text") if show else None
    try:
        if status_line is not None:
            status_line.start()
        with Store(db) as store:
            rep = build_topics(store, **params, llm=llm)
    except StoreBusyError:
        return "topics: the store is in use by another process; not built (run recsight topics)"
    except InputError as exc:
        return f"topics: not built ({exc})"
    finally:
        if status_line is not None:
            status_line.stop()
    what = "rebuilt (item texts changed)" if status == "stale" else "built"
    return f"topics {what}: {rep.k} topics from the text of {rep.n_with_text:,} items ({rep.model})"


def register(app: typer.Typer) -> None:
    """Add the `topics` command to `app`."""

    @app.command("topics")
    @handle_errors
    def topics_cmd(
        db: Path = DB_OPTION,
        k: str = typer.Option(
            "auto",
            "--k",
            help="Number of topics, or auto: the best silhouette (cosine) over 4..50.",
        ),
        levels: int = typer.Option(
            1, "--levels", min=1, max=2, help="2 adds a coarser level that groups the topics."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the samples and k-means."),
        encoder: str | None = typer.Option(
            None, "--encoder", help="Text encoder (default: the project's default, 'use')."
        ),
        force: bool = typer.Option(
            False, "--force", help="Rebuild even when the stored topics are current."
        ),
        as_json: bool = JSON_OPTION,
        quiet: bool = QUIET_OPTION,
        llm_url: str | None = LLM_URL_OPTION,
        llm_model: str | None = LLM_MODEL_OPTION,
        llm_gguf: str | None = LLM_GGUF_OPTION,
    ) -> None:
        """Topics from item text: embed, cluster, name by distinctive words (an LLM may
        reword a name only with words from the topic's items); stored in the store and used
        wherever categories are when the catalog has none."""
        from recsight.data.store import Store
        from recsight.llm.encoders import make_encoder
        from recsight.llm.generate import make_llm
        from recsight.llm.topics import build_topics

        k_value = parse_k(k)
        show = not (quiet or as_json)
        asked = any((llm_url, llm_model, llm_gguf))
        llm = make_llm(llm_url, llm_model, llm_gguf) if asked else None
        enc = make_encoder(encoder) if encoder else None
        if not db.is_file():
            raise InputError(f"{db}: no such store; create it with `recsight ingest`")
        with Store(db) as store:
            rep = build_topics(
                store, k=k_value, levels=levels, seed=seed, encoder=enc, llm=llm, force=force,
                progress=show, on_step=(lambda s: err_console.print(s)) if show else None,
            )  # fmt: skip
        if as_json:
            print_json(rep.to_dict())
            return
        if quiet:
            return
        state = "built" if rep.rebuilt else "current (unchanged texts; --force rebuilds)"
        console.print(
            f"{rep.k} topics over {rep.n_with_text:,} of {rep.n_items:,} items, {state}; "
            f"encoder {rep.model}; k: {rep.criterion}"
        )
        for level in sorted({t.level for t in rep.topics}):
            title = "Topics" if level == 1 else "Topic groups (level 2)"
            table = Table("#", "name", "items", "named by", title=title)
            for t in rep.topics:
                if t.level == level:
                    by = t.backend if t.rejected is None else f"{t.backend} ({t.rejected})"
                    table.add_row(str(t.topic), t.label, f"{t.size:,}", by)
            console.print(table)
        sys.stdout.flush()
