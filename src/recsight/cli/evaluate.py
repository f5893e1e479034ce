"""`recsight evaluate EXPERIMENT.yaml`: train, tune and evaluate models, print a leaderboard."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from recsight.cli.common import JSON_OPTION, QUIET_OPTION, console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    """Add the `evaluate` command to `app`."""

    @app.command("evaluate")
    @handle_errors
    def evaluate(
        experiment: Path = typer.Argument(..., help="Experiment YAML (dataset, split, models)."),
        out: Path | None = typer.Option(
            None,
            "--out",
            help="Output folder (default: the YAML's `output` or out/experiments/NAME).",
        ),
        memory_budget: str | None = typer.Option(
            None,
            "--memory-budget",
            help="Memory for scoring chunks of users, e.g. 4GB (default: the YAML's "
            "memory_budget, else a quarter of RAM or half of the memory available when "
            "evaluation starts, whichever is less).",
        ),
        max_test_users: int | None = typer.Option(
            None,
            "--max-test-users",
            min=1,
            help="Evaluate a seeded sample of this many test users (stated in the output).",
        ),
        as_json: bool = JSON_OPTION,
        quiet: bool = QUIET_OPTION,
    ) -> None:
        """Train, tune and evaluate an experiment's models; print and write a leaderboard.

        Hyperparameters are tuned on a validation split carved from train; the leaderboard
        has 95% bootstrap CIs and significance marks, and is written as leaderboard.json and
        leaderboard.html."""
        from recsight.evaluation.experiment import run_experiment
        from recsight.evaluation.leaderboard import rich_tables

        show = not (as_json or quiet)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not show,
        ) as bar:
            task = bar.add_task("starting", total=None)
            overrides = {
                k: v
                for k, v in {
                    "memory_budget": memory_budget,
                    "max_test_users": max_test_users,
                }.items()
                if v is not None
            }
            board, files = run_experiment(
                experiment,
                out=out,
                progress=lambda msg: bar.update(task, description=msg),
                overrides=overrides,
                quiet=not show,
            )
        if as_json:
            print_json({**board.to_dict(), "files": {k: str(v) for k, v in files.items()}})
            return
        if quiet:
            return
        for table in rich_tables(board):
            console.print(table)
        console.print(f"wrote {files['json']} and {files['html']}")
