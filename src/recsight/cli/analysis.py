"""`recsight analyze` and `recsight profile`: the behavior report and one user's profile."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from recsight.cli.common import (
    DB_OPTION,
    ENGINE_OPTION,
    EVENTS_OPTION,
    JSON_OPTION,
    LLM_GGUF_OPTION,
    LLM_MODEL_OPTION,
    LLM_URL_OPTION,
    QUIET_OPTION,
    SPARK_CONF_OPTION,
    SPARK_MASTER_OPTION,
    console,
    err_console,
    handle_errors,
    open_data,
)
from recsight.cli.topics import auto_topics
from recsight.errors import InputError
from recsight.privacy import DEFAULT_MIN_GROUP_SIZE
from recsight.spark.session import check_engine

if TYPE_CHECKING:
    from recsight.analysis.profile import ProfileDescriber
    from recsight.analysis.segments import SegmentDescriber


@dataclass(frozen=True)
class LLMOptions:
    """Generative-LLM settings accepted by analyze/profile (`--llm-url/-model/-gguf`)."""

    url: str | None = None
    model: str | None = None
    gguf: str | None = None

    @property
    def requested(self) -> bool:
        return any((self.url, self.model, self.gguf))


def summary_writers(llm: LLMOptions) -> tuple[SegmentDescriber, ProfileDescriber]:
    """The functions that write segment and profile summaries: templates, or with an LLM
    configured, the templates reworded by it (text that fails the grounding check falls back
    to the template)."""
    if not llm.requested:
        from recsight.analysis import describe_segment, profile_summary

        return describe_segment, profile_summary
    from recsight.llm.generate import make_llm
    from recsight.llm.summaries import profile_describer, segment_describer

    backend = make_llm(llm.url, llm.model, llm.gguf)
    return segment_describer(backend), profile_describer(backend)


@contextlib.contextmanager
def _spark_source(events: str | None, master: str | None, conf: list[str] | None):
    """The analysis source of a layout on Spark, with the session around it."""
    if events is None:
        raise InputError("--engine spark reads a dataset layout: pass --events DIR or URL")
    from recsight.spark.analysis import spark_source
    from recsight.spark.session import parse_conf, spark_session

    with spark_session(master, parse_conf(conf)) as spark:
        yield spark_source(spark, events)


def _note(line: str | None, show: bool) -> None:
    if line and show:
        err_console.print(line)


def register(app: typer.Typer) -> None:
    """Add the `analyze` and `profile` commands to `app`."""

    @app.command("analyze")
    @handle_errors
    def analyze_cmd(
        out: Path = typer.Option(..., "--out", help="folder for report.html and report.json"),
        db: Path = DB_OPTION,
        events: str | None = typer.Option(
            None,
            "--events",
            help="Dataset layout folder (`recsight export`/`generate` output) instead of --db; "
            "on Spark also a URL such as s3a://bucket/shop.",
        ),
        engine: str = ENGINE_OPTION,
        spark_master: str | None = SPARK_MASTER_OPTION,
        spark_conf: list[str] | None = SPARK_CONF_OPTION,
        sections: list[str] = typer.Option(
            None, "--sections", help="sections to compute (comma-separated or repeated)"
        ),
        funnel: str = typer.Option(
            None, "--funnel", help="ordered funnel stages, e.g. view,cart,purchase"
        ),
        session_gap: float = typer.Option(
            30.0, "--session-gap", help="inactivity gap in minutes that ends a session"
        ),
        dp_epsilon: float | None = typer.Option(
            None,
            "--dp-epsilon",
            help="add user-level differentially private counts (events by type and day, "
            "funnel) with this total epsilon",
        ),
        dp_user_events: int = typer.Option(
            100, "--dp-user-events", help="events counted per user at most, for --dp-epsilon"
        ),
        min_group_size: int = typer.Option(
            DEFAULT_MIN_GROUP_SIZE,
            "--min-group-size",
            min=1,
            help="suppress (or merge into 'other') every row describing fewer distinct users "
            "(1: off)",
        ),
        show_examples: bool = typer.Option(
            False, "--show-examples", help="keep rows about single users (bots, example events)"
        ),
        as_json: bool = JSON_OPTION,
        quiet: bool = QUIET_OPTION,
        llm_url: str | None = LLM_URL_OPTION,
        llm_model: str | None = LLM_MODEL_OPTION,
        llm_gguf: str | None = LLM_GGUF_OPTION,
    ) -> None:
        """Write the behavior report (report.html, report.json) for the store or a layout."""
        from recsight.analysis import analyze, from_store, write_report
        from recsight.analysis.groups import GroupPolicy
        from recsight.analysis.report import TITLES, parse_sections

        llm = LLMOptions(llm_url, llm_model, llm_gguf)
        seg_writer, _ = summary_writers(llm)
        options: dict = {
            "segments": {"describe": seg_writer},
            "sessions": {"gap_minutes": session_gap},
        }
        if funnel:
            options["funnel"] = {"stages": [s.strip() for s in funnel.split(",") if s.strip()]}
        if dp_epsilon is not None:
            sections = [*parse_sections(sections or None), "private_counts"]
            options["dp_counts"] = {"epsilon": dp_epsilon, "max_events_per_user": dp_user_events}
        show = not (quiet or as_json)
        with contextlib.ExitStack() as stack:
            if check_engine(engine, "analyze"):
                src = stack.enter_context(_spark_source(events, spark_master, spark_conf))
            else:
                if events is None:  # a catalog with text but no categories gets topics first
                    namer = None
                    if llm.requested:
                        from recsight.llm.generate import make_llm

                        namer = make_llm(llm.url, llm.model, llm.gguf)
                    _note(auto_topics(db, show, namer), show)
                store = stack.enter_context(open_data(db, None if events is None else Path(events)))
                src = from_store(store)
            src.privacy = GroupPolicy(min_group_size, show_examples)
            status = err_console.status("analyzing") if show else contextlib.nullcontext()
            with status as st:
                report = analyze(
                    src,
                    sections or None,
                    progress=lambda name: st and st.update(f"analyzing: {TITLES[name]}"),
                    options=options,
                )
            paths = write_report(report, out)
        if as_json:
            sys.stdout.write(report.model_dump_json(indent=1) + "\n")
            return
        if quiet:
            return
        table = Table(title=f"Behavior report: {report.source}")
        table.add_column("section")
        table.add_column("s", justify="right")
        table.add_column("takeaways / status")
        for name, st in report.sections.items():
            notes = [c.takeaway for c in report.charts if c.section == name]
            if st.status != "ok":
                notes = [f"[yellow]not available[/yellow]: {st.reason}"]
            elif st.reason:
                notes.append(f"[dim]{st.reason}[/dim]")
            table.add_row(TITLES[name], f"{st.seconds:.2f}", "\n".join(notes) or "-")
        console.print(table)
        if report.privacy is not None and report.privacy.min_group_size > 1:
            console.print(
                f"minimum group size {report.privacy.min_group_size}: "
                f"{report.privacy.suppressed_rows:,} rows suppressed or merged into 'other'"
            )
        console.print(f"wrote {paths['html']} and {paths['json']}")

    @app.command("profile")
    @handle_errors
    def profile_cmd(
        user_id: str = typer.Argument(..., help="external user id"),
        db: Path = DB_OPTION,
        events: Path | None = EVENTS_OPTION,
        top: int = typer.Option(10, "--top", help="categories, items and recent events shown"),
        as_json: bool = JSON_OPTION,
        quiet: bool = QUIET_OPTION,
        llm_url: str | None = LLM_URL_OPTION,
        llm_model: str | None = LLM_MODEL_OPTION,
        llm_gguf: str | None = LLM_GGUF_OPTION,
    ) -> None:
        """Print one user's profile: activity, interests, diversity, drift, items."""
        from recsight.analysis import from_store, user_profile
        from recsight.analysis.profile import interest_summary
        from recsight.data.pseudonyms import UserIds

        llm = LLMOptions(llm_url, llm_model, llm_gguf)
        _, writer = summary_writers(llm)
        persona = interest_summary
        if llm.requested:
            from recsight.llm.generate import make_llm
            from recsight.llm.summaries import interest_describer

            persona = interest_describer(make_llm(llm.url, llm.model, llm.gguf))
        with open_data(db, events) as store:
            stored = UserIds.for_store(store)(user_id)  # a pseudonym in a pseudonymized store
            p = user_profile(
                from_store(store), stored, top_k=top, describe=writer, describe_interests=persona
            )
        if as_json:
            sys.stdout.write(p.model_dump_json(indent=1) + "\n")
            return
        if quiet:
            return
        console.print(f"[bold]{p.summary}[/bold]")
        console.print(p.interest_summary)
        facts = Table(show_header=False)
        for k, v in [
            ("events", ", ".join(f"{t} {n:,}" for t, n in p.event_types.items())),
            ("first / last seen", f"{p.first_seen} / {p.last_seen}"),
            ("active days", p.active_days),
            ("entropy (normalized)", p.normalized_entropy),
            ("interest drift", p.drift),
            ("mean rating", p.mean_rating),
        ]:
            facts.add_row(k, "-" if v is None else str(v))
        console.print(facts)
        what = "topic (from item text)" if p.basis == "topic" else "category"
        cats = Table(what, "share", title="Interests (time-decayed)")
        for c in p.top_categories:
            cats.add_row(c.category, f"{c.share:.1%}")
        console.print(cats)
        items = Table("item", "title", "category", "weight", title="Top items")
        for it in p.top_items:
            items.add_row(it.item_id, it.title or "", it.category or "", f"{it.weight:.3f}")
        console.print(items)
