"""recsight: LLM-assisted user-behavior analysis and recommendation."""

__version__ = "0.1.0"
