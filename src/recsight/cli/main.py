"""The `recsight` application: registers each area's commands on one Typer app."""

from __future__ import annotations

import typer

from recsight.cli import data, demo, serve

app = typer.Typer(
    name="recsight",
    help="LLM-assisted user-behavior analysis and recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (data, serve, demo):
    module.register(app)


def run() -> None:
    """Console-script entry point."""
    app()
