"""`python -m recsight` runs the command line."""

from recsight.cli.main import run

run()
