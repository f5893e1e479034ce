"""The `recsight` application: registers each area's commands on one Typer app."""

from __future__ import annotations

import typer

from recsight.cli import analysis, data, demo, evaluate, models, privacy, serve, topics

app = typer.Typer(
    name="recsight",
    help="LLM-assisted user-behavior analysis and recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# the order of the contract table: data, analysis, models, evaluation, serving, privacy, the
# main job
for module in (data, analysis, topics, models, evaluate, serve, privacy, demo):
    module.register(app)


def run() -> None:
    """Console-script entry point."""
    app()
